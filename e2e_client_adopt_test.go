package main

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	lockclient "github.com/glockd/glockd/client"
	"github.com/glockd/glockd/tester/suite"
)

// TestClientWebsocketOriginPolicy: the Go client and the tester's suite
// work against a server that lets in only its own page's origin, the
// README's safe setting; refused, the client says with which status and,
// for 403, that the origin policy refused it.
func TestClientWebsocketOriginPolicy(t *testing.T) {
	port := strconv.Itoa(freePort(t))
	addr := "127.0.0.1:" + port
	url := "ws://" + addr + "/"
	// The README's safe setting, on the test's port.
	srv := startServer(t, func(c *Config) {
		c.WSAddr, c.WSOrigins = addr, []string{"http://localhost:" + port, "http://" + addr}
	})
	ctx := bg(t)
	var out strings.Builder
	passed, failed := suite.Run(ctx, suite.Options{Network: "ws", Addr: url, Dump: true, Registry: true, Ext: true, Exclusive: true, Fresh: true, Out: &out})
	if failed > 0 || passed == 0 {
		t.Errorf("tester -ws against -ws-origin http://%s: %d passed, %d failed:\n%s", addr, passed, failed, out.String())
	}
	c, err := lockclient.Dial(ctx, "ws", url)
	if err != nil {
		t.Fatalf("client against -ws-origin http://%s: %v", addr, err)
	}
	if ok, err := c.Get(ctx, "origin-ok"); !ok || err != nil {
		t.Fatalf("g over the websocket: %v, %v", ok, err)
	}
	c.Close()
	s, err := lockclient.NewSession(ctx, "ws", []string{url}, lockclient.SessionOptions{})
	if err != nil {
		t.Fatalf("session against -ws-origin http://%s: %v", addr, err)
	}
	s.Close()

	srv.Close()

	startServer(t, func(c *Config) { c.WSAddr, c.WSOrigins = addr, []string{"https://app.example.com"} })
	_, err = lockclient.Dial(ctx, "ws", url)
	var ue *lockclient.UpgradeError
	if !errors.As(err, &ue) || ue.StatusCode != 403 || ue.Origin != "http://"+addr {
		t.Fatalf("refused by the origin policy: %v (%#v), want an UpgradeError with 403 and origin http://%s", err, ue, addr)
	}
	for _, want := range []string{"403", "-ws-origin", "http://" + addr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestClientSessionTLSToken: a session over TLS with a token, given two
// addresses of which the first is down, takes a lock inside its patterns
// and gets ErrPermissionDenied, with the name, outside them; the other
// refusals are typed too.
func TestClientSessionTLSToken(t *testing.T) {
	ca := newTestCA(t, "session CA")
	aclPath := writeFile(t, "acl", testACL)
	srv, _ := tlsServer(t, ca, func(c *Config) {
		c.Security.ACLFile = aclPath
		c.Security.AuthFailureDelay = 10 * time.Millisecond
	})
	down := "127.0.0.1:" + strconv.Itoa(freePort(t))
	ctx := bg(t)
	opts := lockclient.SessionOptions{TLSConfig: ca.clientTLS(), Token: billingToken}
	for _, tr := range []struct{ network, addr string }{
		{"tcp", srv.TLSAddr().String()},
		{"ws", "wss://" + srv.WSAddr().String() + "/"},
	} {
		t.Run(tr.network, func(t *testing.T) {
			first := down
			if tr.network == "ws" {
				first = "wss://" + down + "/"
			}
			s := newSession(t, tr.network, []string{first, tr.addr}, opts)
			l, err := s.Lock(ctx, "billing/"+tr.network)
			if err != nil {
				t.Fatalf("lock inside the patterns: %v", err)
			}
			if l.Token() == 0 {
				t.Errorf("no fencing token")
			}
			_, err = s.TryLock(ctx, "payroll/x")
			var pe *lockclient.PermissionError
			if !errors.Is(err, lockclient.ErrPermissionDenied) || !errors.As(err, &pe) || pe.Name != "payroll/x" {
				t.Fatalf("lock outside the patterns: %v, want ErrPermissionDenied on payroll/x", err)
			}
			if _, err := s.Acquire(ctx, "payroll/y", 2); !errors.Is(err, lockclient.ErrPermissionDenied) {
				t.Errorf("semaphore outside the patterns: %v, want ErrPermissionDenied", err)
			}
			// The session goes on after a refusal.
			if err := l.Unlock(ctx); err != nil {
				t.Fatalf("unlock: %v", err)
			}
		})
	}

	t.Run("wrong token", func(t *testing.T) {
		bad := opts
		bad.Token = "not-a-token"
		_, err := lockclient.NewSession(ctx, "tcp", []string{srv.TLSAddr().String()}, bad)
		if !errors.Is(err, lockclient.ErrAuthFailed) || strings.Contains(err.Error(), "not-a-token") {
			t.Fatalf("wrong token: %v, want ErrAuthFailed, without the token", err)
		}
	})
	t.Run("no token", func(t *testing.T) {
		none := opts
		none.Token = ""
		s := newSession(t, "tcp", []string{srv.TLSAddr().String()}, none)
		if _, err := s.TryLock(ctx, "billing/x"); !errors.Is(err, lockclient.ErrAuthRequired) {
			t.Fatalf("no token: %v, want ErrAuthRequired", err)
		}
	})
	t.Run("lost", func(t *testing.T) {
		s := newSession(t, "tcp", []string{srv.TLSAddr().String()}, opts)
		s.Close()
		if _, err := s.TryLock(ctx, "billing/lost"); !errors.Is(err, lockclient.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	})
}

// TestClientTooManyConnections: a session refused at the connection limit
// says so with ErrTooManyConnections.
func TestClientTooManyConnections(t *testing.T) {
	srv := startServer(t, func(c *Config) { c.MaxConns = 1 })
	ctx := bg(t)
	for _, tr := range []struct{ network, addr string }{
		{"tcp", srv.TCPAddr().String()},
		{"ws", "ws://" + srv.WSAddr().String() + "/"},
	} {
		first := newSession(t, tr.network, []string{tr.addr}, lockclient.SessionOptions{})
		_, err := lockclient.NewSession(ctx, tr.network, []string{tr.addr}, lockclient.SessionOptions{})
		if !errors.Is(err, lockclient.ErrTooManyConnections) {
			t.Errorf("%s: second session at -max-conns 1: %v, want ErrTooManyConnections", tr.network, err)
		}
		first.Close()
		eventually(t, "the first connection gone", func() bool {
			st, ok := srv.manager.askStats(10 * time.Second)
			return ok && st.connections == 0
		})
	}
}
