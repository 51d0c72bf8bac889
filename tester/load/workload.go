package load

import (
	"fmt"
	"math"

	"github.com/glockd/glockd/client"
)

// Workloads returns the names of the workloads Run accepts.
func Workloads() []string { return []string{"cycle", "contend", "shared", "inspect"} }

// worker is one connection's stream of operations. A batch queues its
// commands on a pipeline and returns the checks of their replies, each
// yielding "" or what is wrong. Checks run in order, so a check may rely on
// state left by the one before.
type worker struct {
	workload string
	c        *client.Client
	own      string   // cycle: this connection's own lock
	names    []string // contend, shared, inspect: the names to cycle over
	conns    int      // shared: the most holders there can be
	seq      int      // ops made so far

	// contend: the names of the last batch of g and whether each was
	// granted, to release in the next batch.
	tried []string
	got   []bool

	acquired, busy int64 // contend: outcomes of g
	granted        bool  // a lock was granted in the last batch
}

// reset starts over on a new connection, which holds no lock: the next
// op of cycle and shared takes one, and contend forgets its gets.
func (w *worker) reset() {
	w.seq -= w.seq % 2
	w.tried, w.got = w.tried[:0], w.got[:0]
}

// maxBatch is the most ops one batch of w may hold: a contend batch tries
// distinct names, so that a release is about one get only.
func (w *worker) maxBatch() int {
	if w.workload == "contend" {
		return len(w.names)
	}
	return math.MaxInt
}

func (w *worker) batch(p *client.Pipeline, n int, checks []func() string) []func() string {
	if w.workload == "contend" {
		return w.contend(p, n, checks)
	}
	for range n {
		checks = append(checks, w.op(p))
	}
	return checks
}

// contend alternates batches: g on hot names, then r on the same names,
// which must succeed exactly where the g did. The release waits for the
// next batch because the server may run a whole batch at once, and a g
// released in the same batch would never meet another connection's.
func (w *worker) contend(p *client.Pipeline, n int, checks []func() string) []func() string {
	if len(w.tried) == 0 {
		for range n {
			name := w.names[w.seq%len(w.names)]
			w.seq++
			j := len(w.tried)
			w.tried = append(w.tried, name)
			w.got = append(w.got, false)
			r := p.Get(name)
			checks = append(checks, func() string {
				got, err := r.Result()
				if err != nil {
					return err.Error()
				}
				w.got[j] = got
				if got {
					w.acquired++
					w.granted = true
				} else {
					w.busy++
				}
				return ""
			})
		}
		return checks
	}
	// Release as many of the tried names as the batch holds, oldest first.
	for range min(n, len(w.tried)) {
		name, got := w.tried[0], w.got[0]
		w.tried, w.got = w.tried[1:], w.got[1:]
		r := p.Release(name)
		checks = append(checks, func() string {
			released, err := r.Result()
			if err != nil {
				return err.Error()
			}
			if released != got {
				return fmt.Sprintf("r %s: released %v after a g that was granted %v", name, released, got)
			}
			return ""
		})
	}
	return checks
}

func (w *worker) op(p *client.Pipeline) (check func() string) {
	s := w.seq
	w.seq++
	switch w.workload {
	case "cycle":
		// The connection's own lock: every g and r must succeed.
		if s%2 == 0 {
			check := wantVal("g "+w.own, p.Get(w.own), true)
			return func() string {
				why := check()
				w.granted = w.granted || why == ""
				return why
			}
		}
		return wantVal("r "+w.own, p.Release(w.own), true)
	case "shared":
		name := w.names[(s/2)%len(w.names)]
		if s%2 == 0 {
			r := p.SharedGet(name)
			return func() string {
				n, err := r.Result()
				if err != nil {
					return err.Error()
				}
				if n < 1 || n > w.conns {
					return fmt.Sprintf("sg %s: %d holders with %d connections", name, n, w.conns)
				}
				w.granted = true
				return ""
			}
		}
		return wantVal("sr "+name, p.SharedRelease(name), true)
	default: // inspect: the even names are held by the set-up connection
		k := s % len(w.names)
		return wantVal("i "+w.names[k], p.Inspect(w.names[k]), k%2 == 0)
	}
}
func wantVal[V comparable](cmd string, r *client.Reply[V], want V) func() string {
	return func() string {
		got, err := r.Result()
		if err != nil {
			return err.Error()
		}
		if got != want {
			return fmt.Sprintf("%s: got %v, want %v", cmd, got, want)
		}
		return ""
	}
}
