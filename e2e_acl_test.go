package main

import (
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	billingToken = "billing-7f3a9c"
	readerToken  = "reader-0c41d2"
	opsToken     = "ops-9e8b11"
)

// testACL: billing may lock its names, reader may only look, ops may look
// and kill; svc.example is identified by its client certificate.
var testACL = `# identities of the tests
billing ` + tokenHash(billingToken) + ` lock billing/* jobs/billing-* exact   # trailing comment
reader  ` + tokenHash(readerToken) + ` inspect

ops     ` + tokenHash(opsToken) + ` admin,inspect
svc.example cert lock,inspect svc/*
`

// aclServer starts a server with testACL (or acl) and a short auth delay.
func aclServer(t testing.TB, acl string, edit func(*Config)) (*Server, string) {
	t.Helper()
	if acl == "" {
		acl = testACL
	}
	path := writeFile(t, "acl", acl)
	srv := startServer(t, func(c *Config) {
		c.Security.ACLFile = path
		c.Security.AuthFailureDelay = 10 * time.Millisecond
		if edit != nil {
			edit(c)
		}
	})
	return srv, path
}

// one sends a command and returns its one-line reply (one message on a
// websocket). Under an ACL the fence of do may itself be refused.
func (c *client) one(cmd string) string {
	c.t.Helper()
	if c.ws != nil {
		c.send(cmd)
	} else {
		c.send(cmd + "\n")
	}
	return c.line()
}

func (c *client) expectOne(cmd, want string) {
	c.t.Helper()
	if got := c.one(cmd); got != want {
		c.t.Fatalf("%s: %q: got %q, want %q", c.name, cmd, got, want)
	}
}

// rawClient dials without running a command (dial runs me).
func rawClient(t testing.TB, srv *Server, tr string) *client {
	t.Helper()
	nc, ws := rawDial(t, srv, tr)
	c := &client{t: t, nc: nc, ws: ws, name: nc.LocalAddr().String()}
	if ws == nil {
		c = streamClient(t, nc)
	}
	t.Cleanup(c.close)
	return c
}

func TestACLUnauthenticated(t *testing.T) {
	// Nine failures from one address: over its bucket's burst.
	srv, _ := aclServer(t, "", func(c *Config) { c.Security.AuthFailuresPerAddr = 1000 })
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			c := rawClient(t, srv, tr)
			for _, cmd := range []string{"g a", "r a", "i a", "sg a", "sr a", "si a", "me", "iam x", "who", "d", "sd",
				"dump", "q", "gw 0 a", "gw -1 a", "sgw 0 1 a", "t a", "kill x", "kill-holder x", "perms", "gw x a"} {
				c.expectOne(cmd, "0 Auth Required\n")
			}
			c.expectOne("ping", "1 pong\n")
			c.expectOne("!ping", "!pong\n")
			c.expectOne("!cancel", "!cancel 0\n")
			c.expectOne("auth wrong", "0 Auth Failure\n")
			c.expectOne("auth", "0 Auth Failure\n")
			// The third failure closes the connection, after its reply.
			c.expectOne("auth "+tokenHash(billingToken), "0 Auth Failure\n") // the hash is not the token
			expectClosed(t, c)
			c = rawClient(t, srv, tr)
			if c.ws != nil {
				c.expectOne("xx", "") // unknown: silence, as without an ACL
			} else {
				c.send("xx\n")
				c.expectOne("ping", "1 pong\n")
			}
			c.expectOne("auth "+billingToken, "1 ok\n")
			// A name per transport: the previous subtest's lock is released
			// only once the server has read that connection's close.
			c.expectOne("g billing/"+tr, "1 Lock Get Success: billing/"+tr+"\n")
		})
	}
	// Nothing an unidentified client sent took a lock.
	r := rawClient(t, srv, "tcp")
	r.expectOne("auth "+readerToken, "1 ok\n")
	r.expectOne("i a", "0 Lock Not Locked: a\n")
	r.expectOne("si a", "0 Shared Lock Not Locked: a\n")
}

func TestACLPermissions(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			// A server per transport: each subtest ends holding shared
			// locks that the next one's sgw MAX 1 must find free, and a
			// server releases them only once it has read the close.
			srv, _ := aclServer(t, "", nil)
			b := rawClient(t, srv, tr)
			b.expectOne("auth "+billingToken, "1 ok\n")
			b.expectOne("me", "1 "+testConnName(b, tr)+" billing\n")
			b.expectOne("perms", "1 billing lock billing/* jobs/billing-* exact\n")
			b.expectOne("iam someone", "0 Permission Denied\n")
			b.expectOne("iam", "0 Permission Denied\n")
			// Patterns at their edges.
			for name, ok := range map[string]bool{
				"billing/x": true, "billing/": true, "billing/a/b c": true, "billing": false, "billingX": false,
				"billing*": false, "Billing/x": false, "jobs/billing-1": true, "jobs/billing-": true,
				"jobs/billing": false, "jobs/billingX": false, "exact": true, "exactX": false, "exac": false,
				"": false, "x billing/x": false,
			} {
				if !ok {
					denied := "0 Permission Denied: " + name + "\n"
					for _, cmd := range []string{"g ", "r ", "sg ", "sr ", "gw 100 ", "gw -1 ", "sgw -1 1 ", "i ", "si ", "t "} {
						b.expectOne(strings.TrimSpace(cmd+name), denied)
					}
					continue
				}
				b.expectOne("g "+name, "1 Lock Get Success: "+name+"\n")
				b.expectOne("i "+name, "1 Lock Is Locked: "+name+"\n")
				if got := b.one("t " + name); !strings.HasSuffix(got, " Lock Token: "+name+"\n") {
					t.Errorf("t %s: %q", name, got)
				}
				b.expectOne("gw 10 "+name, "1 Lock Get Success: "+name+"\n")
				b.expectOne("r "+name, "1 Lock Release Success: "+name+"\n")
				b.expectOne("sgw 0 1 "+name, "1 Shared Lock Get Success: "+name+"\n")
				b.expectOne("si "+name, "1 Shared Lock Is Locked: "+name+"\n")
				b.expectOne("sr "+name, "1 Shared Lock Release Success: "+name+"\n")
				b.expectOne("sg "+name, "1 Shared Lock Get Success: "+name+"\n")
			}
			b.expectOne("gw x billing/x", "0 Invalid Argument: gw x billing/x\n")
			for _, cmd := range []string{"d", "sd", "dump", "dump shared", "who", "q", "d billing/x", "dw", "dw billing/x"} {
				b.expectOne(cmd, "0 Permission Denied\n")
			}
			b.expectOne("kill x", "0 Permission Denied\n")
			b.expectOne("kill-holder billing/x", "0 Permission Denied\n")
			b.expectOne("g billing/held", "1 Lock Get Success: billing/held\n")

			// reader sees everything, takes nothing, and sees billing's
			// locks held by "billing".
			r := rawClient(t, srv, tr)
			r.expectOne("auth "+readerToken, "1 ok\n")
			r.expectOne("perms", "1 reader inspect\n")
			r.expectOne("g billing/x", "0 Permission Denied: billing/x\n")
			r.expectOne("sg s", "0 Permission Denied: s\n")
			r.expectOne("i billing/held", "1 Lock Is Locked: billing/held\n")
			r.expectOne("si billing/x", "1 Shared Lock Is Locked: billing/x\n")
			r.expectOne("i nobody", "0 Lock Not Locked: nobody\n")
			r.expect("d billing/held", "billing/held: billing\n")
			r.expect("sd billing/x", "billing/x: billing\n")
			if who := r.do("who billing"); !strings.Contains(who, testConnName(b, tr)+": billing\n") {
				t.Errorf("who billing: %q lacks %s", who, testConnName(b, tr))
			}
			if dump := r.do("dump"); !strings.Contains(dump, "billing/held:"+testConnName(b, tr)) {
				t.Errorf("dump shows connection names: %q", dump)
			}
			if q := r.do("q"); !strings.Contains(q, "command_auth: ") {
				t.Errorf("q: %q", q)
			}
			r.expectOne("kill "+testConnName(b, tr), "0 Permission Denied\n")

			// A failed auth keeps the identity; a good one switches it.
			b.expectOne("auth nope", "0 Auth Failure\n")
			b.expectOne("perms", "1 billing lock billing/* jobs/billing-* exact\n")
			b.expectOne("auth "+readerToken, "1 ok\n")
			b.expectOne("me", "1 "+testConnName(b, tr)+" reader\n")
			b.expectOne("g billing/y", "0 Permission Denied: billing/y\n")
			// Its locks stay its own, under its new name.
			r.expect("d billing/held", "billing/held: reader\n")
		})
	}
}

// testConnName is what the server calls a test client's connection; for a unix
// one it asks (me is refused before auth).
func testConnName(c *client, tr string) string {
	if tr != "unix" {
		return c.name
	}
	return strings.Fields(c.one("me"))[1]
}

func TestACLPipelinedAuth(t *testing.T) {
	srv, _ := aclServer(t, "", nil)
	c := rawClient(t, srv, "tcp")
	c.send("g billing/p\nauth " + billingToken + "\ng billing/p\nauth bad\ng billing/q\n")
	for _, want := range []string{"0 Auth Required\n", "1 ok\n", "1 Lock Get Success: billing/p\n", "0 Auth Failure\n", "1 Lock Get Success: billing/q\n"} {
		if got := c.line(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// TestAuthBruteForce: wrong tokens are answered one delay apart, even
// pipelined, while other clients are served meanwhile; each is counted and
// logged with the client's address.
func TestAuthBruteForce(t *testing.T) {
	var logs logBuffer
	const delay, guesses = 200 * time.Millisecond, 10
	srv, _ := aclServer(t, "", func(c *Config) {
		c.Security.AuthFailureDelay = delay
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	guesser := rawClient(t, srv, "tcp")
	var batch strings.Builder
	for i := range guesses {
		batch.WriteString("auth guess-" + string(rune('a'+i)) + "\n")
	}
	start := time.Now()
	guesser.send(batch.String())
	var answered atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range guesses {
			if got, err := guesser.r.ReadString('\n'); err != nil || got != "0 Auth Failure\n" {
				t.Errorf("guess: %q, %v", got, err)
				return
			}
			answered.Add(1)
		}
	}()
	// Another client is served while the guesser waits: the manager
	// never sleeps.
	other := rawClient(t, srv, "tcp")
	other.expectOne("auth "+readerToken, "1 ok\n")
	for range 5 {
		other.expectOne("ping", "1 pong\n")
	}
	if n := answered.Load(); n != 0 {
		t.Errorf("%d guesses were answered before 5 pings of another client, within the delay of %v", n, delay)
	}
	<-done
	// One guess tried; the nine that came with it are refused untried,
	// answered with it.
	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("%d wrong tokens answered in %v, want at least %v", guesses, elapsed, delay)
	}
	resp, body := httpGet(t, "http://"+srv.WSAddr().String()+"/metrics")
	resp.Body.Close()
	for _, want := range []string{"glockd_auth_failures_total 1\n", "glockd_auth_refused_total 9\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if n := strings.Count(logs.String(), "auth failure"); n != 1 || !strings.Contains(logs.String(), "conn="+guesser.name) {
		t.Errorf("%d auth failures logged, want 1 with conn=%s:\n%s", n, guesser.name, logs.String())
	}
}

// TestACLWithClientCertificates: a certificate identifies a connection when
// the ACL file has its name as a cert identity; any other certificate still
// needs a token.
func TestACLWithClientCertificates(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	clients := newTestCA(t, "glockd-clients")
	aclPath := writeFile(t, "acl", testACL)
	srv, _ := tlsServer(t, ca, func(c *Config) {
		c.Security.ClientCAFile = clients.file
		c.Security.ACLFile = aclPath
		c.Security.AuthFailureDelay = 10 * time.Millisecond
	})
	svc := tlsClient(t, srv, ca.clientTLS(clients.issue(certOpts{cn: "svc", dns: []string{"svc.example"}, client: true}).cert))
	svc.expectOne("me", "1 "+svc.name+" svc.example\n")
	svc.expectOne("g svc/1", "1 Lock Get Success: svc/1\n")
	svc.expectOne("g other", "0 Permission Denied: other\n")
	svc.expect("d", "svc/1: svc.example\n")

	// "billing" is a token identity: its name in a certificate is not
	// enough.
	b := tlsClient(t, srv, ca.clientTLS(clients.issue(certOpts{cn: "billing", client: true}).cert))
	b.expectOne("g billing/x", "0 Auth Required\n")
	b.expectOne("auth "+billingToken, "1 ok\n")
	b.expectOne("g billing/x", "1 Lock Get Success: billing/x\n")

	ws, err := wssClient(t, srv, ca.clientTLS(clients.issue(certOpts{dns: []string{"svc.example"}, client: true}).cert))
	if err != nil {
		t.Fatal(err)
	}
	ws.expectOne("g svc/2", "1 Lock Get Success: svc/2\n")
}

// TestACLReload: a reloaded ACL file applies to connections at once; a
// connection whose identity is gone is closed and its locks orphaned; a bad
// file keeps the old one.
func TestACLReload(t *testing.T) {
	var logs logBuffer
	srv, path := aclServer(t, "", func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	b := rawClient(t, srv, "tcp")
	b.expectOne("auth "+billingToken, "1 ok\n")
	b.expectOne("g billing/a", "1 Lock Get Success: billing/a\n")
	r := rawClient(t, srv, "unix")
	r.expectOne("auth "+readerToken, "1 ok\n")
	r.expectOne("g r/1", "0 Permission Denied: r/1\n")
	ops := rawClient(t, srv, "websocket")
	ops.expectOne("auth "+opsToken, "1 ok\n")

	newbieToken := "newbie-55"
	os.WriteFile(path, []byte("reader "+tokenHash(readerToken)+" inspect,lock r/*\n"+
		"ops "+tokenHash(opsToken)+" admin,inspect\n"+
		"newbie "+tokenHash(newbieToken)+" lock n\n"), 0o600)
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	r.expectOne("g r/1", "1 Lock Get Success: r/1\n")
	r.expectOne("perms", "1 reader lock,inspect r/*\n")
	b.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if s, err := b.r.ReadString('\n'); err == nil {
		t.Fatalf("billing's connection, whose identity is gone, still open: %q", s)
	}
	eventually(t, "billing's lock orphaned", func() bool { return r.one("i billing/a") == "0 Lock Not Locked: billing/a\n" })
	n := rawClient(t, srv, "tcp")
	n.expectOne("auth "+billingToken, "0 Auth Failure\n")
	n.expectOne("auth "+newbieToken, "1 ok\n")
	if !strings.Contains(logs.String(), "no longer accepts") || !strings.Contains(logs.String(), "identity=billing") {
		t.Errorf("closing billing not logged:\n%s", logs.String())
	}

	// A broken file: the last good one stays.
	os.WriteFile(path, []byte("reader nonsense\n"), 0o600)
	if err := srv.Reload(); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("reload of a bad file: %v", err)
	}
	n2 := rawClient(t, srv, "tcp")
	n2.expectOne("auth "+newbieToken, "1 ok\n")
	r.expectOne("g r/2", "1 Lock Get Success: r/2\n")
	if !strings.Contains(logs.String(), "reload failed") {
		t.Errorf("bad reload not logged:\n%s", logs.String())
	}
}

// TestACLReloadRotation: a reload that changes an identity's token closes
// the connections that authenticated with the old one (it may have leaked),
// and one whose certificate identity has become a token identity; the
// others keep their identity.
func TestACLReloadRotation(t *testing.T) {
	var logs logBuffer
	ca := newTestCA(t, "glockd-test")
	clients := newTestCA(t, "glockd-clients")
	aclPath := writeFile(t, "acl", testACL)
	srv, _ := tlsServer(t, ca, func(c *Config) {
		c.Security.ClientCAFile = clients.file
		c.Security.ACLFile = aclPath
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	svc := tlsClient(t, srv, ca.clientTLS(clients.issue(certOpts{dns: []string{"svc.example"}, client: true}).cert))
	svc.expectOne("g svc/1", "1 Lock Get Success: svc/1\n")
	old := rawClient(t, srv, "tcp")
	old.expectOne("auth "+billingToken, "1 ok\n")
	old.expectOne("g billing/before-rotation", "1 Lock Get Success: billing/before-rotation\n")
	reader := rawClient(t, srv, "tcp")
	reader.expectOne("auth "+readerToken, "1 ok\n")

	rotated := "billing-rotated-41"
	svcToken := "svc-token-77"
	os.WriteFile(aclPath, []byte(strings.NewReplacer(
		tokenHash(billingToken), tokenHash(rotated),
		"svc.example cert", "svc.example "+tokenHash(svcToken),
	).Replace(testACL)), 0o600)
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, old)
	expectClosed(t, svc)
	eventually(t, "the old connection's lock orphaned", func() bool {
		return reader.one("i billing/before-rotation") == "0 Lock Not Locked: billing/before-rotation\n"
	})
	reader.expectOne("perms", "1 reader inspect\n")
	n := rawClient(t, srv, "tcp")
	n.expectOne("auth "+rotated, "1 ok\n")
	n.expectOne("g billing/after-rotation", "1 Lock Get Success: billing/after-rotation\n")
	for _, want := range []string{"identity=billing reason=\"token changed\"", "identity=svc.example reason=\"identity now needs a token\""} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}
