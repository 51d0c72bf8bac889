package main

import (
	"bufio"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHandover queues 10,000 connections on one hot lock and measures
// each hand-over: from the holder's write of "r hot" to the next waiter
// reading its "1 Lock Get Success". The holder re-queues at once, so the
// queue stays 10,000 long. Meanwhile a probe connection takes and releases
// another lock, to show that the manager stays responsive. The daemon runs
// as a child process: 10,000 connections with both ends in one process would
// need more file descriptors than a test may have.
//
//	go test -run '^$' -bench Handover -benchtime 20000x .
func BenchmarkHandover(b *testing.B) {
	const conns = 10000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < conns+100 {
		b.Skipf("need %d file descriptors, have %d (%v)", conns+100, lim.Cur, err)
	}
	port := freePort(b)
	startDaemon(b, "-bind", "127.0.0.1", "-port", strconv.Itoa(port), "-ws", "0")
	addr := "127.0.0.1:" + strconv.Itoa(port)
	dialRetry(b, "tcp", addr)
	granted := make(chan int, conns)
	queued := make(chan struct{}, conns)
	clients := make([]net.Conn, conns)
	for i := range clients {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		clients[i] = nc
		go func() {
			r := bufio.NewReader(nc)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				switch {
				case line == "1 Lock Get Success: hot\n":
					granted <- i
				case strings.HasSuffix(line, " Shared Lock Get Success: ready\n"):
					queued <- struct{}{}
				}
			}
		}()
		// One write, so one batch: the reply to sg comes once the gw after
		// it is queued.
		cmd := "sg ready\ngw -1 hot\n"
		if i == 0 {
			cmd = "g hot\n"
		}
		if _, err := nc.Write([]byte(cmd)); err != nil {
			b.Fatal(err)
		}
	}
	holder := <-granted
	for range conns - 1 {
		<-queued
	}

	probeDone := make(chan []time.Duration)
	stopProbe := make(chan struct{})
	go probe(b, addr, stopProbe, probeDone)

	handovers := make([]time.Duration, 0, b.N)
	release := []byte("r hot\ngw -1 hot\n")
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := clients[holder].Write(release); err != nil {
			b.Fatal(err)
		}
		holder = <-granted
		handovers = append(handovers, time.Since(start))
	}
	b.StopTimer()
	close(stopProbe)
	probes := <-probeDone
	reportPercentiles(b, "handover", handovers)
	reportPercentiles(b, "probe", probes)
}

// probe times g/r round trips on its own lock until stop is closed.
func probe(b *testing.B, addr string, stop chan struct{}, done chan<- []time.Duration) {
	var rtts []time.Duration
	defer func() { done <- rtts }()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Error(err)
		return
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	for {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		nc.Write([]byte("g probe\nr probe\n"))
		r.ReadString('\n')
		if _, err := r.ReadString('\n'); err != nil {
			b.Error(err)
			return
		}
		rtts = append(rtts, time.Since(start))
	}
}

func reportPercentiles(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds())
	}
	b.ReportMetric(at(0.50), name+"-p50-µs")
	b.ReportMetric(at(0.99), name+"-p99-µs")
	b.ReportMetric(at(0.999), name+"-p99.9-µs")
}
