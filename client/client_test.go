package client_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/glockd/glockd/client"
)

// script answers each command line with raw reply bytes ("" for none).
type script func(line string) string

// lineServer serves script over TCP on loopback, recording the lines it
// receives.
type lineServer struct {
	ln    net.Listener
	mu    sync.Mutex
	lines []string
}

func serveLines(t *testing.T, s script) *lineServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &lineServer{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	goWait(&wg, func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			goWait(&wg, func() {
				defer c.Close()
				r := bufio.NewScanner(c)
				r.Buffer(nil, 1<<20)
				for r.Scan() {
					srv.mu.Lock()
					srv.lines = append(srv.lines, r.Text())
					srv.mu.Unlock()
					if _, err := c.Write([]byte(s(r.Text()))); err != nil {
						return
					}
				}
			})
		}
	})
	return srv
}

func (s *lineServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// fenced answers the fence ("i glockd-client-fence-…") as glockd does.
func fenced(s script) script {
	return func(line string) string {
		if name, ok := strings.CutPrefix(line, "i glockd-client-fence-"); ok {
			return "0 Lock Not Locked: glockd-client-fence-" + name + "\n"
		}
		return s(line)
	}
}

func dial(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestReplies checks each method against replies of the right and wrong
// forms.
func TestReplies(t *testing.T) {
	tests := []struct {
		name  string
		reply string // to the command
		call  func(context.Context, *client.Client) (any, error)
		want  any
		err   string // substring of the error, "" for none
	}{
		{"g ok", "1 Lock Get Success: a b\n", getCall("a  b"), true, ""},
		{"g busy", "0 Lock Get Failure: a\n", getCall("a"), false, ""},
		{"g wrong name", "1 Lock Get Success: b\n", getCall("a"), false, `unexpected reply "1 Lock Get Success: b\n"`},
		{"g wrong text", "1 Lock Release Success: a\n", getCall("a"), false, "unexpected reply"},
		{"g crlf tolerated", "1 Lock Get Success: a\r\n", getCall("a"), true, ""},
		{"g empty name", "1 Lock Get Success: \n", getCall(""), true, ""},
		{"r", "0 Lock Release Failure: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Release(ctx, "a") }, false, ""},
		{"i", "1 Lock Is Locked: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Inspect(ctx, "a") }, true, ""},
		{"sg", "12 Shared Lock Get Success: a\n", sgCall("a"), 12, ""},
		{"sg zero", "0 Shared Lock Get Success: a\n", sgCall("a"), 0, "unexpected reply"},
		{"sg leading zero", "02 Shared Lock Get Success: a\n", sgCall("a"), 0, "unexpected reply"},
		{"sg sign", "+2 Shared Lock Get Success: a\n", sgCall("a"), 0, "unexpected reply"},
		{"si none", "0 Shared Lock Not Locked: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.SharedInspect(ctx, "a") }, 0, ""},
		{"si two", "2 Shared Lock Is Locked: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.SharedInspect(ctx, "a") }, 2, ""},
		{"sr", "1 Shared Lock Release Success: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.SharedRelease(ctx, "a") }, true, ""},
		{"me", "1 127.0.0.1:5 my name\n", meCall, client.Identity{Conn: "127.0.0.1:5", Name: "my name"}, ""},
		{"me bad", "1 127.0.0.1:5\n", meCall, client.Identity{}, "unexpected reply"},
		{"iam", "1 ok\n", iamCall, nil, ""},
		{"iam disabled", "0 disabled\n", iamCall, nil, "disabled"},
		{"d", "a: x\nb: unix:2\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Debug(ctx, "") },
			[]client.LockOwner{{Lock: "a", Owner: "x"}, {Lock: "b", Owner: "unix:2"}}, ""},
		{"d none", "", func(ctx context.Context, c *client.Client) (any, error) { return c.Debug(ctx, "a") }, []client.LockOwner{}, ""},
		{"d name with colon", "a: b: c\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Debug(ctx, "a: b") },
			[]client.LockOwner{{Lock: "a: b", Owner: "c"}}, ""},
		{"d other name", "b: c\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Debug(ctx, "a") }, []client.LockOwner(nil), "unexpected reply"},
		{"dl", "a: my name token=42 held_ms=1500 waiters=2\ns: 127.0.0.1:5 shared held_ms=7 holders=1 waiters=0\n",
			func(ctx context.Context, c *client.Client) (any, error) { return c.Details(ctx, "") },
			[]client.LockDetail{{Lock: "a", Owner: "my name", Token: 42, Held: 1500 * time.Millisecond, Waiters: 2},
				{Lock: "s", Owner: "127.0.0.1:5", Shared: true, Held: 7 * time.Millisecond, Holders: 1}}, ""},
		{"dl bad", "a: x token=1 held_ms=z waiters=0\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Details(ctx, "") },
			[]client.LockDetail(nil), "unexpected reply"},
		{"dw", "a: my name queued_ms=1500\na: unix:3 queued_ms=7 deadlock=2\ns: 127.0.0.1:5 shared queued_ms=0\n",
			func(ctx context.Context, c *client.Client) (any, error) { return c.Waiters(ctx, "") },
			[]client.Waiter{{Lock: "a", Waiter: "my name", Queued: 1500 * time.Millisecond},
				{Lock: "a", Waiter: "unix:3", Queued: 7 * time.Millisecond, Deadlock: 2},
				{Lock: "s", Waiter: "127.0.0.1:5", Shared: true}}, ""},
		{"dw none", "", func(ctx context.Context, c *client.Client) (any, error) { return c.Waiters(ctx, "a") }, []client.Waiter{}, ""},
		{"dw bad", "a: x queued_ms=z\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Waiters(ctx, "") },
			[]client.Waiter(nil), "unexpected reply"},
		{"dw no waiter", "a: queued_ms=1\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Waiters(ctx, "a") },
			[]client.Waiter(nil), "unexpected reply"},
		{"dw disabled", "0 disabled\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Waiters(ctx, "") }, []client.Waiter(nil), "disabled"},
		{"gw deadlock", "0 Lock Get Deadlock: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.GetWait(ctx, -1, "a") }, false, "deadlock"},
		{"sgw deadlock", "0 Shared Lock Get Deadlock: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.SharedGetWait(ctx, -1, 2, "a") }, 0, "deadlock"},
		{"dl disabled", "0 disabled\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Details(ctx, "a") }, []client.LockDetail(nil), "disabled"},
		{"sd disabled", "0 disabled\n", func(ctx context.Context, c *client.Client) (any, error) { return c.SharedDebug(ctx, "") }, []client.LockOwner(nil), "disabled"},
		{"who", "[::1]:5: me\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Who(ctx, "") },
			[]client.Registration{{Conn: "[::1]:5", Name: "me"}}, ""},
		{"dump", "map[a:unix:1]\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Dump(ctx) }, "map[a:unix:1]", ""},
		{"dump bad", "nope\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Dump(ctx) }, "", "unexpected reply"},
		{"q", "command_g: 3\nlocks: 0\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Stats(ctx) },
			map[string]int64{"command_g": 3, "locks": 0}, ""},
		{"q bad value", "locks: -1\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Stats(ctx) }, map[string]int64(nil), "unexpected reply"},
		{"gw timeout", "0 Lock Get Timeout: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.GetWait(ctx, time.Second, "a") }, false, ""},
		{"sgw", "3 Shared Lock Get Success: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.SharedGetWait(ctx, -1, 5, "a") }, 3, ""},
		{"sgw timeout", "0 Shared Lock Get Timeout: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.SharedGetWait(ctx, 0, 5, "a") }, 0, ""},
		{"t", "1764000000000000000 Lock Token: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Token(ctx, "a") }, uint64(1764000000000000000), ""},
		{"t free", "0 Lock Not Locked: a\n", func(ctx context.Context, c *client.Client) (any, error) { return c.Token(ctx, "a") }, uint64(0), ""},
		{"ping", "1 pong\n", func(ctx context.Context, c *client.Client) (any, error) { return nil, c.Ping(ctx) }, nil, ""},
		{"ping bad", "1 ping\n", func(ctx context.Context, c *client.Client) (any, error) { return nil, c.Ping(ctx) }, nil, "unexpected reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serveLines(t, fenced(func(string) string { return tt.reply }))
			c := dial(t, srv.ln.Addr().String())
			got, err := tt.call(ctxTimeout(t, 5*time.Second), c)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func getCall(name string) func(context.Context, *client.Client) (any, error) {
	return func(ctx context.Context, c *client.Client) (any, error) { return c.Get(ctx, name) }
}

func sgCall(name string) func(context.Context, *client.Client) (any, error) {
	return func(ctx context.Context, c *client.Client) (any, error) { return c.SharedGet(ctx, name) }
}

func meCall(ctx context.Context, c *client.Client) (any, error) {
	conn, name, err := c.Me(ctx)
	if err != nil {
		return client.Identity{}, err
	}
	return client.Identity{Conn: conn, Name: name}, nil
}

func iamCall(ctx context.Context, c *client.Client) (any, error) { return nil, c.Iam(ctx, "x") }

// TestLinesSent checks the command lines the methods send.
func TestLinesSent(t *testing.T) {
	srv := serveLines(t, fenced(func(line string) string {
		verb, name, _ := strings.Cut(line, " ")
		switch verb {
		case "gw":
			_, name, _ = strings.Cut(name, " ")
			return "1 Lock Get Success: " + name + "\n"
		case "sgw":
			_, name, _ = strings.Cut(name, " ")
			_, name, _ = strings.Cut(name, " ")
			return "1 Shared Lock Get Success: " + name + "\n"
		case "iam":
			return "1 ok\n"
		}
		return ""
	}))
	c := dial(t, srv.ln.Addr().String())
	// Without a deadline, so that the waits keep their own limits.
	ctx := context.Background()
	steps := []func() error{
		func() error { _, err := c.GetWait(ctx, 1500*time.Microsecond, "a"); return err },
		func() error { _, err := c.GetWait(ctx, -time.Second, "a"); return err },
		func() error { _, err := c.GetWait(ctx, 0, "a"); return err },
		func() error { _, err := c.SharedGetWait(ctx, 2*time.Second, 3, "s"); return err },
		func() error { return c.Iam(ctx, "") },
		func() error { _, err := c.Debug(ctx, ""); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	got := srv.received()
	want := []string{"gw 2 a", "gw -1 a", "gw 0 a", "sgw 2000 3 s", "iam", "d"}
	if len(got) != 7 || !reflect.DeepEqual(got[:6], want) || !strings.HasPrefix(got[6], "i glockd-client-fence-") {
		t.Errorf("lines sent: %q, want %q and a fence", got, want)
	}
}

func TestNewlineInName(t *testing.T) {
	srv := serveLines(t, fenced(func(string) string { return "1 ok\n" }))
	c := dial(t, srv.ln.Addr().String())
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := c.Get(ctx, "a\nq"); err == nil {
		t.Error("Get with a newline in the name: no error")
	}
	if err := c.Iam(ctx, "a\nb"); err == nil {
		t.Error("Iam with a newline in the name: no error")
	}
	if err := c.Iam(ctx, "fine"); err != nil {
		t.Errorf("Iam after the refused commands: %v", err)
	}
	if got := srv.received(); !reflect.DeepEqual(got, []string{"iam fine"}) {
		t.Errorf("server received %q, want only the good command", got)
	}
}

// TestDeadline checks that a call whose reply does not come ends with ctx,
// and that the client is then closed, since a late reply would be taken
// for the next command's.
func TestDeadline(t *testing.T) {
	srv := serveLines(t, func(string) string { return "" })
	c := dial(t, srv.ln.Addr().String())
	_, err := c.Get(ctxTimeout(t, 50*time.Millisecond), "a")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get: %v, want a deadline error", err)
	}
	if _, err := c.Get(context.Background(), "a"); err == nil {
		t.Fatal("Get after a timed-out call: no error")
	}
}

func TestCancel(t *testing.T) {
	srv := serveLines(t, func(string) string { return "" })
	c := dial(t, srv.ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := c.Get(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get: %v, want context.Canceled", err)
	}
}

// TestRecvSilence checks that Recv's timeout before any byte keeps the
// client usable.
func TestRecvSilence(t *testing.T) {
	srv := serveLines(t, fenced(func(line string) string {
		if line == "xx" {
			return ""
		}
		return "1 Lock Is Locked: a\n"
	}))
	c := dial(t, srv.ln.Addr().String())
	if err := c.Send(context.Background(), "xx"); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Recv(ctxTimeout(t, 50*time.Millisecond)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv: %q, %v; want a deadline error", got, err)
	}
	if ok, err := c.Inspect(context.Background(), "a"); err != nil || !ok {
		t.Fatalf("Inspect after the silence: %v, %v", ok, err)
	}
}

// TestCloseInterruptsCall checks that Close ends a call waiting for a reply.
func TestCloseInterruptsCall(t *testing.T) {
	srv := serveLines(t, func(string) string { return "" })
	c := dial(t, srv.ln.Addr().String())
	done := make(chan error, 1)
	go func() {
		_, err := c.GetWait(context.Background(), -1, "a")
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("GetWait: %v, want ErrClosed", err)
	}
	if _, err := c.Get(context.Background(), "a"); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
}

// echoGet answers g and r with success for any name, and the fence.
func echoGet(line string) string {
	verb, name, _ := strings.Cut(line, " ")
	switch verb {
	case "g":
		return "1 Lock Get Success: " + name + "\n"
	case "r":
		return "1 Lock Release Success: " + name + "\n"
	case "q":
		return "locks: 1\n"
	}
	return ""
}

// TestPipeline sends a batch much larger than the socket buffers, so the
// replies must be read while it is still being written.
func TestPipeline(t *testing.T) {
	srv := serveLines(t, fenced(echoGet))
	c := dial(t, srv.ln.Addr().String())
	p := c.Pipeline()
	long := strings.Repeat("n", 200)
	var gets []*client.Reply[bool]
	for range 20000 {
		gets = append(gets, p.Get(long))
	}
	q := p.Stats()
	last := p.Release("x")
	if p.Len() != 20002 {
		t.Fatalf("Len %d, want 20002", p.Len())
	}
	if err := p.Exec(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i, g := range gets {
		if ok, err := g.Result(); !ok || err != nil {
			t.Fatalf("reply %d: %v, %v", i, ok, err)
		}
	}
	if got, err := q.Result(); err != nil || got["locks"] != 1 {
		t.Errorf("q: %v, %v", got, err)
	}
	if ok, err := last.Result(); !ok || err != nil {
		t.Errorf("r: %v, %v", ok, err)
	}
	if p.Len() != 0 {
		t.Errorf("Len after Exec: %d, want 0", p.Len())
	}
}

func TestPipelineErrors(t *testing.T) {
	srv := serveLines(t, fenced(echoGet))
	c := dial(t, srv.ln.Addr().String())
	p := c.Pipeline()
	good := p.Get("a")
	bad := p.Inspect("a") // the script has no reply for i: the next one is taken
	notRun := p.Get("b\nc")
	if _, err := good.Result(); err == nil {
		t.Error("a Reply before Exec has no error")
	}
	err := p.Exec(ctxTimeout(t, 200*time.Millisecond))
	if err == nil {
		t.Fatal("Exec: no error")
	}
	if ok, err := good.Result(); !ok || err != nil {
		t.Errorf("g a: %v, %v; want true", ok, err)
	}
	if _, err := bad.Result(); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("i a: %v, want the exchange's deadline error", err)
	}
	if _, err := notRun.Result(); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("g with a newline: %v, want its own error", err)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a", "a"},
		{"", ""},
		{"  a  b ", "a b"},
		{"a\tb\r", "a b"},
		{"a\u00a0\u2003b", "a b"},
	}
	for _, tt := range tests {
		if got := client.Normalize(tt.in); got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestWebsocket checks the websocket transport against a scripted server
// that sends one message per line, as glockd does.
func TestWebsocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var messages []string
	hs := &http.Server{Handler: websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil {
				return
			}
			mu.Lock()
			messages = append(messages, msg)
			mu.Unlock()
			for _, line := range strings.Split(strings.TrimSuffix(msg, "\n"), "\n") {
				reply := echoGet(line)
				if line == "me" {
					reply = "1 " + ws.Request().RemoteAddr + " " + ws.Request().RemoteAddr + "\n"
				}
				if websocket.Message.Send(ws, reply) != nil {
					return
				}
			}
		}
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	ctx := ctxTimeout(t, 5*time.Second)
	c, err := client.Dial(ctx, "ws", "ws://"+ln.Addr().String()+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Websocket() {
		t.Error("Websocket() = false")
	}
	conn, _, err := c.Me(ctx)
	if err != nil || conn != c.LocalAddr().String() {
		t.Errorf("Me: %q, %v; want the client's address %s", conn, err, c.LocalAddr())
	}
	stats, err := c.Stats(ctx)
	if err != nil || stats["locks"] != 1 {
		t.Errorf("Stats: %v, %v", stats, err)
	}
	lines, err := c.DoLines(ctx, "xx")
	if err != nil || len(lines) != 0 {
		t.Errorf("DoLines(xx): %q, %v; want no lines", lines, err)
	}
	p := c.Pipeline()
	g, r := p.Get("a"), p.Release("a")
	if err := p.Exec(ctx); err != nil || !g.Val() || !r.Val() {
		t.Errorf("pipeline: %v, %v, %v", err, g.Val(), r.Val())
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"me\n", "q\n", "xx\n", "g a\nr a\n"}; !reflect.DeepEqual(messages, want) {
		t.Errorf("messages sent: %q, want %q (no fences, a pipeline in one message)", messages, want)
	}
}

func TestDialErrors(t *testing.T) {
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := client.Dial(ctx, "ws", "http://127.0.0.1:1/"); err == nil {
		t.Error("Dial ws with an http URL: no error")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := client.Dial(ctx, "tcp", addr); err == nil {
		t.Error("Dial to a closed port: no error")
	}
}
