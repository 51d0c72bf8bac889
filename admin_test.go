package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// expectClosed checks that the server has closed a test client's connection.
func expectClosed(t *testing.T, c *client) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var err error
	if c.ws != nil {
		var msg string
		for err == nil {
			err = websocket.Message.Receive(c.ws, &msg)
		}
	} else {
		_, err = io.Copy(io.Discard, c.r)
		if err == nil {
			err = io.EOF
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: connection still open", c.name)
	}
}

func TestKillWithAdminFlag(t *testing.T) {
	var logs logBuffer
	srv := startServer(t, func(c *Config) {
		c.Security.Admin = true
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	admin := dial(t, srv, "unix")
	victim := dial(t, srv, "tcp")
	victim.expect("g v1", "1 Lock Get Success: v1\n")
	victim.expect("g v2", "1 Lock Get Success: v2\n")
	victim.expect("sg shared", "1 Shared Lock Get Success: shared\n")
	bystander := dial(t, srv, "tcp")
	bystander.expect("g b1", "1 Lock Get Success: b1\n")
	bystander.expect("sg shared", "2 Shared Lock Get Success: shared\n")
	bystander.send("gw -1 v1\n") // answered when v1 is orphaned
	other := dial(t, srv, "websocket")
	other.expect("g w1", "1 Lock Get Success: w1\n")

	orphans, sharedOrphans := admin.stat("orphans"), admin.stat("shared_orphans")
	admin.expect("kill "+victim.name, "1 ok\n")
	expectClosed(t, victim)
	// The waiter behind v1 gets it, as from any disconnect.
	if got := bystander.line(); got != "1 Lock Get Success: v1\n" {
		t.Fatalf("waiter: %q", got)
	}
	bystander.expect("d", "b1: "+bystander.name+"\nv1: "+bystander.name+"\nw1: "+other.name+"\n")
	bystander.expect("si shared", "1 Shared Lock Is Locked: shared\n")
	if o, so := admin.stat("orphans"), admin.stat("shared_orphans"); o != orphans+2 || so != sharedOrphans+1 {
		t.Errorf("orphans %d→%d, shared %d→%d; want +2 and +1", orphans, o, sharedOrphans, so)
	}

	admin.expect("kill-holder w1", "1 ok\n")
	expectClosed(t, other)
	eventually(t, "w1 orphaned", func() bool { return admin.do("i w1") == "0 Lock Not Locked: w1\n" })
	admin.expect("kill nope", "0 No Such Connection: nope\n")
	admin.expect("kill "+victim.name, "0 No Such Connection: "+victim.name+"\n")
	admin.expect("kill-holder free", "0 Lock Not Locked: free\n")
	for _, tr := range []string{"tcp", "websocket"} {
		c := dial(t, srv, tr)
		c.expect("kill "+bystander.name, "0 Permission Denied\n")
		c.expect("kill-holder b1", "0 Permission Denied\n")
	}
	bystander.expect("i b1", "1 Lock Is Locked: b1\n")
	log := logs.String()
	for _, want := range []string{"msg=kill by=" + admin.name + " victim=" + victim.name, "victim=" + other.name, "holder_of=w1"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}

	// Without -admin, kill is off.
	plain := startServer(t, nil)
	c := dial(t, plain, "unix")
	c.expect("kill "+c.name, "0 disabled\n")
	c.expect("kill-holder x", "0 disabled\n")
}

// TestKillStuckClient: a victim that does not read, whose replies fill the
// socket so that the server's write to it blocks, is killed all the same.
func TestKillStuckClient(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.Security.Admin = true })
	admin := dial(t, srv, "unix")
	victim := dial(t, srv, "tcp")
	const locks = 2000
	name := strings.Repeat("n", 200)
	var b strings.Builder
	for i := range locks {
		fmt.Fprintf(&b, "g %s%d\n", name, i)
	}
	victim.send(b.String())
	for range locks {
		victim.line()
	}
	// Each d is about 400 KB: far more than the socket buffers hold.
	victim.send(strings.Repeat("d\n", 200))
	orphans := admin.stat("orphans")
	admin.expect("kill "+victim.name, "1 ok\n")
	eventually(t, "the stuck victim's locks orphaned", func() bool { return admin.stat("orphans") == orphans+locks })
	if n := admin.stat("locks"); n != 0 {
		t.Errorf("%d locks left", n)
	}
}

func TestKillWithACL(t *testing.T) {
	srv, _ := aclServer(t, "", nil)
	ops := rawClient(t, srv, "tcp")
	ops.expectOne("auth "+opsToken, "1 ok\n")
	holder := rawClient(t, srv, "websocket")
	holder.expectOne("auth "+billingToken, "1 ok\n")
	holder.expectOne("g billing/w", "1 Lock Get Success: billing/w\n")
	victim := rawClient(t, srv, "tcp")
	victim.expectOne("auth "+billingToken, "1 ok\n")
	victim.expectOne("g billing/a", "1 Lock Get Success: billing/a\n")
	victim.expectOne("sg billing/s", "1 Shared Lock Get Success: billing/s\n")
	victim.send("gw -1 billing/w\n") // pending when it is killed

	waitersQueued(t, srv, 1, "the victim waiting")
	ops.expectOne("kill-holder billing/a", "1 ok\n")
	expectClosed(t, victim)
	eventually(t, "billing/a orphaned", func() bool { return ops.one("i billing/a") == "0 Lock Not Locked: billing/a\n" })
	ops.expectOne("si billing/s", "0 Shared Lock Not Locked: billing/s\n")
	// The wait ended with it: the holder's release passes the lock to no one.
	holder.expectOne("r billing/w", "1 Lock Release Success: billing/w\n")
	ops.expectOne("i billing/w", "0 Lock Not Locked: billing/w\n")

	// Over any transport, with the admin permission; never without it.
	holder.expectOne("kill "+ops.name, "0 Permission Denied\n")
	unix := rawClient(t, srv, "unix")
	unix.expectOne("kill "+ops.name, "0 Auth Required\n")
	unix.expectOne("auth "+opsToken, "1 ok\n")
	unix.expectOne("kill "+holder.name, "1 ok\n")
	expectClosed(t, holder)
}

// TestKillAnswersAfterRelease: kill and kill-holder answer once the
// victim's locks are released, so that commands pipelined right after them
// see the locks free, over every transport the admin may use.
func TestKillAnswersAfterRelease(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.Security.Admin = true })
	admin := dial(t, srv, "unix")
	for i, tr := range []string{"tcp", "websocket", "unix"} {
		for _, verb := range []string{"kill-holder", "kill"} {
			n := fmt.Sprintf("k%d-%s", i, verb)
			victim := dial(t, srv, tr)
			victim.expect("g "+n, "1 Lock Get Success: "+n+"\n")
			victim.expect("sg s"+n, "1 Shared Lock Get Success: s"+n+"\n")
			arg := n
			if verb == "kill" {
				arg = victim.name
			}
			admin.send(verb + " " + arg + "\ni " + n + "\nsi s" + n + "\n")
			for _, want := range []string{"1 ok\n", "0 Lock Not Locked: " + n + "\n", "0 Shared Lock Not Locked: s" + n + "\n"} {
				if got := admin.line(); got != want {
					t.Fatalf("%s over %s, pipelined: got %q, want %q", verb, tr, got, want)
				}
			}
			expectClosed(t, victim)
		}
	}
}

// TestKillBound: a victim whose release takes longer than the kill bound
// (here it holds many locks, orphaned in steps, and the bound is tiny) does
// not hold up the admin: the reply says the release is pending, and the
// locks are released after it.
func TestKillBound(t *testing.T) {
	srv, _ := aclServer(t, "", func(c *Config) { c.Security.KillBound = time.Millisecond })
	admin := rawClient(t, srv, "tcp")
	admin.expectOne("auth "+opsToken, "1 ok\n")
	victim := rawClient(t, srv, "tcp")
	victim.expectOne("auth "+billingToken, "1 ok\n")
	const n = 50000
	var batch strings.Builder
	for i := range n {
		fmt.Fprintf(&batch, "g billing/slow-%d\n", i)
	}
	victim.send(batch.String())
	for range n {
		if got := victim.line(); !strings.HasPrefix(got, "1 Lock Get Success: ") {
			t.Fatalf("victim's g: %q", got)
		}
	}
	admin.send("kill-holder billing/slow-0\n")
	if got := admin.line(); got != "1 Kill Pending: billing/slow-0\n" {
		t.Fatalf("kill-holder of a slow victim: %q", got)
	}
	last := fmt.Sprintf("billing/slow-%d", n-1)
	eventually(t, "the victim's locks released", func() bool {
		return admin.one("i billing/slow-0") == "0 Lock Not Locked: billing/slow-0\n" &&
			admin.one("i "+last) == "0 Lock Not Locked: "+last+"\n"
	})
}
