package main

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/tokens"
)

// Benchmarks of the manager: batches run through runBatch (BenchmarkManager)
// and the round trip to the manager goroutine (BenchmarkExecute). The
// loopback ones are in e2e_bench_test.go, the deadline check's in
// fence_test.go, the parser's in internal/proto. Run with
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
