package suite

import (
	"errors"
	"fmt"

	"github.com/glockd/glockd/client"
)

// expectations pairs pipelined replies with what they must be, in order.
type expectations []func() error

func expectVal[V comparable](e *expectations, cmd string, r *client.Reply[V], want V) {
	*e = append(*e, func() error {
		got, err := r.Result()
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		if got != want {
			return fmt.Errorf("%s: got %#v, want %#v", cmd, got, want)
		}
		return nil
	})
}

// first returns the first unmet expectation, naming its place.
func (e expectations) first() error {
	for i, f := range e {
		if err := f(); err != nil {
			return fmt.Errorf("reply %d of %d: %w", i+1, len(e), err)
		}
	}
	return nil
}

// checkPipeline10000 sends 10,000 commands in one write and checks every
// reply, in order.
func checkPipeline10000(t *checkRun) {
	a := t.dial("A")
	p := a.c.Pipeline()
	var want expectations
	for i := range 2000 {
		x := t.name(fmt.Sprint(i))
		expectVal(&want, "g "+x, p.Get(x), true)
		expectVal(&want, "i "+x, p.Inspect(x), true)
		expectVal(&want, "r "+x, p.Release(x), true)
		expectVal(&want, "sg "+x, p.SharedGet(x), 1)
		expectVal(&want, "sr "+x, p.SharedRelease(x), true)
	}
	err := p.Exec(t.ctx)
	if first := want.first(); first != nil {
		t.Fatalf("%v (the exchange: %v)", first, err)
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
}

// checkPipelineMixed pipelines commands with one-line, multi-line and no
// replies, which a line-protocol client must fence, in one write.
func checkPipelineMixed(t *checkRun) {
	a := t.dial("A")
	conn := a.connName()
	n, s := t.name("x"), t.name("s")
	p := a.c.Pipeline()
	var want expectations
	expectVal(&want, "g", p.Get(n), true)
	d := p.Debug(n)
	unknown := p.DoLines("xx")
	q := p.Stats()
	expectVal(&want, "sg", p.SharedGet(s), 1)
	sd := p.SharedDebug(s)
	expectVal(&want, "me", p.Me(), client.Identity{Conn: conn, Name: conn})
	expectVal(&want, "i", p.Inspect(n), true)
	expectVal(&want, "r", p.Release(n), true)
	expectVal(&want, "si", p.SharedInspect(s), 1)
	err := p.Exec(t.ctx)
	if first := want.first(); first != nil {
		t.Fatalf("%v (the exchange: %v)", first, err)
	}
	if lines := unknown.Val(); unknown.Err() != nil || len(lines) != 0 {
		t.Fatalf("xx: got %q, %v; want no reply", lines, unknown.Err())
	}
	if stats, err := q.Result(); err != nil || stats["command_q"] < 1 {
		t.Fatalf("q: got %v, %v", stats, err)
	}
	checkDebugReply(t, "d "+n, d, []client.LockOwner{{Lock: n, Owner: conn}})
	checkDebugReply(t, "sd "+s, sd, []client.LockOwner{{Lock: s, Owner: conn}})
	if err != nil && !errors.Is(err, client.ErrDisabled) {
		t.Fatalf("%v", err)
	}
}

// checkDebugReply checks a pipelined d or sd, or its "0 disabled".
func checkDebugReply(t *checkRun, cmd string, r *client.Reply[[]client.LockOwner], want []client.LockOwner) {
	got, err := r.Result()
	if !t.opts.Dump {
		if !errors.Is(err, client.ErrDisabled) {
			t.Fatalf("%s: got %+v, %v; want \"0 disabled\"", cmd, got, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	equalSlices(t, cmd, got, want)
}
