package transport

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/proto"
)

// loopback is a TCP connection on 127.0.0.1: the server's end, with a file
// descriptor (so the raw-syscall path), and the client's.
func loopback(t *testing.T) (srv, cli net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cli, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if srv, err = l.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, cli
}

// TestStreamAbortWakesRead: Abort, from another goroutine, ends a Read
// blocked on a client that sends nothing, without closing the connection
// (its reader does that).
func TestStreamAbortWakesRead(t *testing.T) {
	srv, _ := loopback(t)
	s := NewStream(srv, 1024, &sync.Pool{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Read(nil)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the Read block; it ends either way
	s.Abort()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read after Abort: %v, want a deadline error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Abort did not wake the blocked Read")
	}
}

// TestStreamHandover: what a stopped stream read and did not run (Unread)
// goes on, after Restore, in a new Stream on the same connection: the
// partial line is completed by what follows, and a too-long line being
// skipped stays skipped.
func TestStreamHandover(t *testing.T) {
	for _, tc := range []struct {
		name, first, then string
		want              []string // the commands' normalised arguments
		wantDiscarding    bool
	}{
		{"partial line", "g a\ng b", "c\n", []string{"a", "bc"}, false},
		{"too long", "g a\ng " + string(make([]byte, 40)), "xx\ng ok\n", []string{"a", "", "ok"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := loopback(t)
			old := NewStream(srv, 32, &sync.Pool{})
			if _, err := cli.Write([]byte(tc.first)); err != nil {
				t.Fatal(err)
			}
			var got []string
			cmds, err := old.Read(nil)
			if err != nil {
				t.Fatal(err)
			}
			got = appendNames(got, cmds)
			if nc, ok := old.Handover(); !ok || nc != srv {
				t.Fatalf("Handover: %v %v, want the TCP connection", nc, ok)
			}
			input, discarding := old.Unread()
			if discarding != tc.wantDiscarding {
				t.Fatalf("Unread: discarding %v, want %v", discarding, tc.wantDiscarding)
			}
			heir := NewStream(srv, 32, &sync.Pool{})
			heir.Restore(append([]byte(nil), input...), discarding)
			if _, err := cli.Write([]byte(tc.then)); err != nil {
				t.Fatal(err)
			}
			for len(got) < len(tc.want) {
				cmds, err := heir.Read(nil)
				if err != nil {
					t.Fatal(err)
				}
				got = appendNames(got, cmds)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("commands %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("commands %q, want %q", got, tc.want)
				}
			}
		})
	}
}

// appendNames appends each command's argument, or "" for a line too long.
func appendNames(names []string, cmds []proto.Command) []string {
	for _, c := range cmds {
		if c.Verb == proto.VerbTooLong {
			names = append(names, "")
			continue
		}
		names = append(names, string(c.Name))
	}
	return names
}

// TestStreamRestoreCharges: a partial line handed over in a buffer past the
// pooled size is charged to the budget again, at the size the old reader's
// buffer grew to for it; over the budget, the first Read says so.
func TestStreamRestoreCharges(t *testing.T) {
	srv, _ := loopback(t)
	input := bytes.Repeat([]byte("p"), 10000) // the old buffer: 4 KiB, 8 KiB, then 16 KiB
	budget := &Budget{Max: 1 << 20}
	s := NewStream(srv, 65536, &sync.Pool{})
	s.Bind(Limits{Budget: budget})
	s.Restore(input, false)
	if got := budget.Used.Load(); got != 16<<10 {
		t.Fatalf("charged %d, want %d", got, 16<<10)
	}
	s.Release()
	if got := budget.Used.Load(); got != 0 {
		t.Fatalf("after Release: charged %d", got)
	}

	small := &Budget{Max: 8 << 10}
	over := NewStream(srv, 65536, &sync.Pool{})
	over.Bind(Limits{Budget: small})
	over.Restore(input, false)
	if got := small.Used.Load(); got != 0 {
		t.Fatalf("over the budget: charged %d, want nothing", got)
	}
	if _, err := over.Read(nil); err != ErrOverBudget {
		t.Fatalf("Read after a Restore over the budget: %v, want ErrOverBudget", err)
	}
}
