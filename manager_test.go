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

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/tokens"
)

// Benchmarks of the hot paths: the stream transport's parse of a batch, the
// manager and a loopback round trip (the parser alone: internal/proto). Run
// with
//
//	go test -run '^$' -bench . -benchmem .
//
// Allocations are the point as much as time: parsing and a get/release of a
// held name allocate nothing; a first acquisition allocates only the name.

// benchBatch parses lines into a batch for the manager benchmarks.
func benchBatch(lines ...string) *batch {
	bt := &batch{}
	var scratch []byte
	for _, l := range lines {
		var cmd proto.Command
		cmd, scratch = proto.Parse([]byte(l), scratch)
		bt.cmds = append(bt.cmds, cmd)
	}
	return bt
}

// runBenchBatch runs bt in the manager without its goroutine, as handle does.
func runBenchBatch(m *manager, c *connState, bt *batch) {
	bt.next, bt.out, bt.ends = 0, bt.out[:0], bt.ends[:0]
	m.runBatch(c, bt)
	<-c.done
}

// BenchmarkManager runs batches through runBatch, without the channel round
// trip: the manager's own cost per command.
func BenchmarkManager(b *testing.B) {
	for _, tc := range []struct {
		name   string
		setup  []string // run once first, by the same connection
		lines  []string
		others []string // run once first, by another connection
		etcd   bool     // as the leader of an -etcd group (fence.go)
	}{
		{"g+r", nil, []string{"g k1", "r k1"}, nil, false},
		{"g+r-etcd", nil, []string{"g k1", "r k1"}, nil, true},
		{"g-held", []string{"g k1"}, []string{"g k1"}, nil, false},
		{"i", []string{"g k1"}, []string{"i k1"}, nil, false},
		{"t", []string{"g k1"}, []string{"t k1"}, nil, false},
		{"sg+sr", nil, []string{"sg s", "sr s"}, nil, false},
		{"sg+sr-held", nil, []string{"sg s", "sr s"}, []string{"sg s"}, false}, // s held by another connection
		{"g-busy", nil, []string{"g other"}, nil, false},                       // held by another connection
		{"ping", nil, []string{"ping"}, nil, false},
		{"q", nil, []string{"q"}, nil, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m := newManager(Config{}.withDefaults())
			if tc.etcd {
				benchLeader(m)
			}
			c := newConnState("127.0.0.1:1", "tcp")
			other := newConnState("127.0.0.1:2", "tcp")
			runBenchBatch(m, other, benchBatch(append([]string{"g other"}, tc.others...)...))
			if tc.setup != nil {
				runBenchBatch(m, c, benchBatch(tc.setup...))
			}
			bt := benchBatch(tc.lines...)
			runBenchBatch(m, c, bt) // warm: buffers reach their size
			b.ReportAllocs()
			for b.Loop() {
				runBenchBatch(m, c, bt)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(tc.lines)), "ns/cmd")
		})
	}
	for _, etcd := range []bool{false, true} {
		name := "pipeline64"
		if etcd {
			name += "-etcd"
		}
		b.Run(name, func(b *testing.B) { benchPipeline64(b, etcd) })
	}
}

// benchPipeline64 is 32 g and their r in one batch.
func benchPipeline64(b *testing.B, etcd bool) {
	m := newManager(Config{}.withDefaults())
	if etcd {
		benchLeader(m)
	}
	c := newConnState("127.0.0.1:1", "tcp")
	var lines []string
	for i := range 32 {
		lines = append(lines, "g k"+strconv.Itoa(i), "r k"+strconv.Itoa(i))
	}
	bt := benchBatch(lines...)
	runBenchBatch(m, c, bt)
	b.ReportAllocs()
	for b.Loop() {
		runBenchBatch(m, c, bt)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(lines)), "ns/cmd")
}

// benchLeader makes m run as the leader of an -etcd group, in a term that
// lasts an hour, with tokens enough for any benchmark.
func benchLeader(m *manager) {
	l := ha.NewLeadership()
	l.Publish(ha.NewTerm(l, tokens.Block{Start: 1 << 40, End: tokens.Max}, time.Now().Add(time.Hour)))
	m.leader = &leadership{node: l}
	m.mayServe()
}

// BenchmarkExecute is a batch's round trip to the manager goroutine and back,
// from several connections at once (b.RunParallel), as the connection loop
// does it: one get and one release per iteration.
func BenchmarkExecute(b *testing.B) {
	m := newManager(Config{}.withDefaults())
	go m.run()
	defer func() {
		m.send(request{kind: requestStop})
		<-m.stopped
	}()
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := strconv.FormatInt(seq.Add(1), 10)
		c := newConnState("127.0.0.1:"+id, "tcp")
		get, release := benchBatch("g k"+id), benchBatch("r k"+id)
		for pb.Next() {
			for _, bt := range []*batch{get, release} {
				bt.next, bt.out, bt.ends = 0, bt.out[:0], bt.ends[:0]
				m.execute(c, bt)
				if bt.out[0] != '1' {
					b.Errorf("reply %q", bt.out)
					return
				}
			}
		}
	})
}

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

var benchPar = 50

var benchLocks = flag.Int("orphan-locks", 100000, "BenchmarkOrphan: locks taken before the disconnect")

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

// BenchmarkMayGrant is the deadline check made before each grant with
// -etcd (fence.go): a read of the monotonic clock and a comparison.
func BenchmarkMayGrant(b *testing.B) {
	m := newManager(Config{}.withDefaults())
	benchLeader(m)
	for b.Loop() {
		if !m.mayGrant() {
			b.Fatal("the term ended")
		}
	}
}
