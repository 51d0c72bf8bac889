package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks over loopback sockets: an in-process server and TCP clients.

var benchPar = 50 // BenchmarkLoopbackParallel's clients

var benchLocks = flag.Int("orphan-locks", 100000, "BenchmarkOrphan: locks taken before the disconnect")

// benchServer starts a server with only the TCP transport.
func benchServer(b *testing.B) *Server {
	b.Helper()
	srv, err := NewServer(Config{TCPAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return srv
}

// BenchmarkLoopback is a TCP client and an in-process server on loopback:
// one connection writes depth commands, reads their replies, and again. At
// depth 1 it alternates "g l0" and "r l0"; deeper, each write takes depth/2
// locks and releases them. ns/op is per command; the client allocates
// nothing per command, so allocs/op is the server's.
func BenchmarkLoopback(b *testing.B) {
	for _, depth := range []int{1, 64} {
		b.Run("pipeline"+strconv.Itoa(depth), func(b *testing.B) {
			srv := benchServer(b)
			nc, err := net.Dial("tcp", srv.TCPAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			var get, release []byte
			for i := range max(depth/2, 1) {
				get = fmt.Appendf(get, "g l%d\n", i)
				release = fmt.Appendf(release, "r l%d\n", i)
			}
			if depth > 1 {
				get = append(get, release...)
				release = get
			}
			perTrip := bytes.Count(get, []byte{'\n'})
			rbuf := make([]byte, 64<<10)
			roundTrip := func(cmds []byte) {
				if _, err := nc.Write(cmds); err != nil {
					b.Fatal(err)
				}
				for want := perTrip; want > 0; {
					n, err := nc.Read(rbuf)
					if err != nil {
						b.Fatal(err)
					}
					if bytes.Contains(rbuf[:n], []byte("\n0")) || rbuf[0] != '1' {
						b.Fatalf("reply %q", rbuf[:n])
					}
					want -= bytes.Count(rbuf[:n], []byte{'\n'})
				}
			}
			roundTrip(get)
			roundTrip(release)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += perTrip {
				roundTrip(get)
				get, release = release, get
			}
		})
	}
}

// BenchmarkLoopbackParallel is BenchmarkLoopback at pipeline 1 with 50
// connections, as lockbench's cycle workload runs it.
func BenchmarkLoopbackParallel(b *testing.B) {
	srv := benchServer(b)
	addr := srv.TCPAddr().String()
	b.SetParallelism(max(1, benchPar/runtime.GOMAXPROCS(0)))
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer nc.Close()
		name := "k" + strconv.FormatInt(seq.Add(1), 10)
		get, release := []byte("g "+name+"\n"), []byte("r "+name+"\n")
		rbuf := make([]byte, 256)
		for pb.Next() {
			if _, err := nc.Write(get); err != nil {
				b.Error(err)
				return
			}
			if _, err := io.ReadAtLeast(nc, rbuf, 1); err != nil || rbuf[0] != '1' {
				b.Error("reply", err)
				return
			}
			get, release = release, get
		}
	})
}

// BenchmarkOrphan takes locks on one connection (pipeline 64), then closes
// it and times the release (release-ms), while another connection's
// round trips show that the manager keeps serving others (probe-p99-µs,
// probe-max-µs). An op is the whole: acquisition, release and probing.
//
//	go test -run '^$' -bench Orphan -benchtime 1x -orphan-locks 1000000 .
func BenchmarkOrphan(b *testing.B) {
	srv := benchServer(b)
	addr := srv.TCPAddr().String()
	for range b.N {
		holder, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		var cmds []byte
		rbuf := make([]byte, 64<<10)
		for i := 0; i < *benchLocks; {
			cmds = cmds[:0]
			for j := 0; j < 64 && i < *benchLocks; j, i = j+1, i+1 {
				cmds = fmt.Appendf(cmds, "g o%d\n", i)
			}
			if _, err := holder.Write(cmds); err != nil {
				b.Fatal(err)
			}
			for want := bytes.Count(cmds, []byte{'\n'}); want > 0; {
				n, err := holder.Read(rbuf)
				if err != nil {
					b.Fatal(err)
				}
				want -= bytes.Count(rbuf[:n], []byte{'\n'})
			}
		}
		probe, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		var rtts []time.Duration
		start := time.Now()
		holder.Close()
		for {
			t0 := time.Now()
			if _, err := probe.Write([]byte("g probe\nr probe\ni o0\n")); err != nil {
				b.Fatal(err)
			}
			var got []byte
			for bytes.Count(got, []byte{'\n'}) < 3 {
				n, err := probe.Read(rbuf)
				if err != nil {
					b.Fatal(err)
				}
				got = append(got, rbuf[:n]...)
			}
			rtts = append(rtts, time.Since(t0))
			if bytes.HasSuffix(got, []byte("0 Lock Not Locked: o0\n")) {
				break // o0 was taken first, so it is released last
			}
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/1e3, "release-ms")
		probe.Close()
		slices.Sort(rtts)
		at := func(q float64) float64 {
			return float64(rtts[min(len(rtts)-1, int(q*float64(len(rtts))))].Microseconds())
		}
		b.ReportMetric(at(0.99), "probe-p99-µs")
		b.ReportMetric(float64(rtts[len(rtts)-1].Microseconds()), "probe-max-µs")
	}
}
