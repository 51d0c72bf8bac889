package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds a Chromium to drive, or skips the test when there is
// none and it is not running in CI, where a missing browser is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"}
	if p := os.Getenv("GLOCKD_CHROMIUM"); p != "" {
		candidates = []string{p}
	}
	for _, name := range candidates {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but no chromium binary was found (tried %s): install it (apt-get install -y chromium), as .ci/run does", strings.Join(candidates, ", "))
	}
	t.Skipf("no chromium binary found (tried %s): apt-get install -y chromium to run the browser test; with CI set this is a failure", strings.Join(candidates, ", "))
	return ""
}

// newBrowser starts a headless Chromium for the test, with a fresh profile
// and nothing that reaches out to the network, and stops it when the test
// ends. The returned context is its first tab. extra adds options (flags).
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	path := chromiumPath(t)
	profile := t.TempDir() // removed after the browser has exited: cleanups run last first
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1360, 900),
	)
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser() // closes the browser
		cancelAlloc()   // waits for its process to exit
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// newTab opens a tab in the browser, closed when the test ends. It is
// opened here, on a context without a deadline, because the context of the
// first action in a tab bounds the tab's life.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return ctx
}

// browseTimeout bounds each step of the test in the browser.
const browseTimeout = 20 * time.Second

// browse runs steps in ctx, failing the test when they do not finish in
// time.
func browse(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browseTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// text is the visible text of the element that sel selects.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browseTimeout)
	defer cancel()
	quoted, _ := json.Marshal(sel)
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector(`+string(quoted)+`).innerText`))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// artifactDir is where the test writes screenshots: $GLOCKD_ARTIFACTS when
// set, else a temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GLOCKD_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, browseTimeout)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// setValue sets the value of the input that sel selects, as typing would.
func setValue(sel, value string) chromedp.Action[chromedp.Void] {
	qs, _ := json.Marshal(sel)
	qv, _ := json.Marshal(value)
	js := `(() => {
		const el = document.querySelector(` + string(qs) + `);
		el.value = ` + string(qv) + `;
		el.dispatchEvent(new Event('input', {bubbles: true}));
		return true;
	})()`
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](js)(ctx, t)
		return err
	})
}

// waitJS waits until a JavaScript expression is true in the page.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr)(ctx, t)
		return err
	})
}

// lockRow is the selector of a table's row for a lock (the names here need
// no escaping).
func lockRow(table, lock string) string { return table + ` tbody tr[data-lock="` + lock + `"]` }

func TestConsoleBrowser(t *testing.T) {
	browser := newBrowser(t)

	t.Run("locks", func(t *testing.T) {
		srv := startServer(t, nil)
		ctx := newTab(t, browser)
		browse(t, ctx, "open the console",
			chromedp.Navigate("http://"+srv.WSAddr().String()+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#status[data-state="connected"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#whoami`)),
		)
		pageName := strings.TrimPrefix(text(t, ctx, "#whoami"), "this page is ")

		// A lock a TCP client takes appears with its holder, and goes
		// when the client disconnects.
		tcp := dial(t, srv, "tcp")
		tcp.expect("g from-tcp", "1 Lock Get Success: from-tcp\n")
		browse(t, ctx, "see the TCP client's lock", chromedp.WaitVisible(chromedp.CSS(lockRow("#exclusive", "from-tcp"))))
		if holder := text(t, ctx, lockRow("#exclusive", "from-tcp")+" .holder"); holder != tcp.name {
			t.Errorf("holder shown %q, want %q", holder, tcp.name)
		}
		// Its token, hold time and a waiter queued behind it show too, and
		// it is highlighted once held longer than the threshold.
		token := strings.Fields(tcp.do("t from-tcp"))[0]
		waiter := dial(t, srv, "tcp")
		waiter.send("gw -1 from-tcp\n")
		browse(t, ctx, "see the waiter",
			chromedp.WaitVisible(chromedp.CSS(lockRow("#exclusive", "from-tcp")+` td.waiters`)),
			waitJS(`document.querySelector('#exclusive tbody tr[data-lock="from-tcp"] td.waiters').textContent === "1"`),
		)
		if got := text(t, ctx, lockRow("#exclusive", "from-tcp")+" td.token"); got != token {
			t.Errorf("token shown %q, want %q", got, token)
		}
		held := text(t, ctx, lockRow("#exclusive", "from-tcp")+" td.held")
		if !strings.HasSuffix(held, " ms") && !strings.HasSuffix(held, " s") {
			t.Errorf("held for %q, want a duration", held)
		}
		browse(t, ctx, "highlight holds over 0.2 s",
			setValue(`#threshold`, "0.2"),
			chromedp.WaitVisible(chromedp.CSS(lockRow("#exclusive", "from-tcp")+".is-old")),
			chromedp.WaitVisible(chromedp.CSS(`#connections tbody tr[data-conn="`+tcp.name+`"]`)),
		)
		if got := text(t, ctx, `#connections tbody tr[data-conn="`+tcp.name+`"] td.num`); got != "1" {
			t.Errorf("connection's exclusive count %q, want 1", got)
		}
		browse(t, ctx, "highlight off", setValue(`#threshold`, "0"),
			chromedp.WaitNotPresent(chromedp.CSS(lockRow("#exclusive", "from-tcp")+".is-old")))
		tcp.close()
		if got := waiter.line(); got != "1 Lock Get Success: from-tcp\n" {
			t.Fatalf("waiter: %q", got)
		}
		waiter.close()
		browse(t, ctx, "see the lock go", chromedp.WaitNotPresent(chromedp.CSS(lockRow("#exclusive", "from-tcp"))))

		// A lock taken from the page is held by the page's connection.
		other := dial(t, srv, "tcp")
		browse(t, ctx, "take a lock from the page",
			chromedp.SendKeys(chromedp.CSS(`#lock-name`), "from-page"),
			chromedp.Click(chromedp.CSS(`#acquire`)),
			chromedp.WaitVisible(chromedp.CSS(`#mine li[data-lock="from-page"]`)),
			chromedp.WaitVisible(chromedp.CSS(lockRow("#exclusive", "from-page")+".is-mine")),
		)
		other.expect("i from-page", "1 Lock Is Locked: from-page\n")
		other.expect("g from-page", "0 Lock Get Failure: from-page\n")
		other.expect("d from-page", "from-page: "+pageName+"\n")

		// Shared locks show their holders and count.
		other.expect("iam report-cron", "1 ok\n")
		other.expect("sg config", "1 Shared Lock Get Success: config\n")
		browse(t, ctx, "take a shared lock from the page",
			setValue(`#lock-name`, ""),
			chromedp.SendKeys(chromedp.CSS(`#lock-name`), "config"),
			chromedp.Click(chromedp.CSS(`input[name="kind"][value="shared"]`)),
			chromedp.Click(chromedp.CSS(`#acquire`)),
			chromedp.WaitVisible(chromedp.CSS(`#mine li[data-lock="config"][data-kind="shared"]`)),
		)
		other.expect("si config", "2 Shared Lock Is Locked: config\n")
		browse(t, ctx, "see the shared lock", chromedp.WaitVisible(chromedp.CSS(lockRow("#shared", "config")+".is-mine")))
		count := text(t, ctx, lockRow("#shared", "config")+" td.num")
		holders := text(t, ctx, lockRow("#shared", "config")+" td.holders")
		if count != "2" || !strings.Contains(holders, "report-cron") || !strings.Contains(holders, pageName) {
			t.Errorf("shared row: count %q, holders %q", count, holders)
		}

		// A scene for the screenshot: a few clients, named and not.
		scene := []struct{ name, cmds string }{
			{"billing-worker-1", "g invoices/2026-11\ng orders/1042"},
			{"billing-worker-2", "g orders/1043\nsg db/replica-read"},
			{"", "g reports/nightly\nsg db/replica-read"},
			{"api-7f9c", "sg db/replica-read\nsg config"},
		}
		for _, s := range scene {
			c := dial(t, srv, "tcp")
			if s.name != "" {
				c.do("iam " + s.name)
			}
			for _, cmd := range strings.Split(s.cmds, "\n") {
				c.do(cmd)
			}
		}
		other.send("xx\n")
		browse(t, ctx, "see the scene",
			chromedp.WaitVisible(chromedp.CSS(lockRow("#exclusive", "reports/nightly"))),
			chromedp.WaitVisible(chromedp.CSS(lockRow("#shared", "db/replica-read"))),
			setValue(`#lock-name`, "deploy/web"),
			chromedp.Click(chromedp.CSS(`input[name="kind"][value="exclusive"]`)),
			chromedp.Click(chromedp.CSS(`#acquire`)),
			chromedp.WaitVisible(chromedp.CSS(lockRow("#exclusive", "deploy/web"))),
			chromedp.Sleep(1200*time.Millisecond), // a second refresh, for the rate
		)
		screenshot(t, ctx, "console.png")

		// Sorting by a column: holder, then back by lock.
		order := func() string {
			tctx, cancel := context.WithTimeout(ctx, browseTimeout)
			defer cancel()
			got, err := chromedp.Run(tctx, chromedp.Evaluate[string](`[...document.querySelectorAll('#exclusive tbody tr')].map(r => r.dataset.lock).join(' ')`))
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		byLock := order()
		browse(t, ctx, "sort by holder", chromedp.Click(chromedp.CSS(`#exclusive th[data-sort="holder"]`)))
		if byHolder := order(); byHolder == byLock {
			t.Errorf("sorting by holder left the order %q", byHolder)
		}
		browse(t, ctx, "sort by lock, descending",
			chromedp.Click(chromedp.CSS(`#exclusive th[data-sort="lock"]`)),
			chromedp.Click(chromedp.CSS(`#exclusive th[data-sort="lock"]`)))
		if desc := order(); desc == byLock || !strings.HasPrefix(desc, "reports/nightly") {
			t.Errorf("sorted by lock descending: %q (ascending was %q)", desc, byLock)
		}
		browse(t, ctx, "sort by lock", chromedp.Click(chromedp.CSS(`#exclusive th[data-sort="lock"]`)))

		// The filter narrows both tables.
		browse(t, ctx, "filter",
			chromedp.SendKeys(chromedp.CSS(`#filter`), "orders/"),
			chromedp.WaitNotPresent(chromedp.CSS(lockRow("#exclusive", "deploy/web"))),
			chromedp.WaitVisible(chromedp.CSS(lockRow("#exclusive", "orders/1042"))),
			chromedp.WaitNotPresent(chromedp.CSS(lockRow("#shared", "config"))),
			setValue(`#filter`, ""),
		)

		// Releasing from the page's list frees the lock.
		browse(t, ctx, "release from the page",
			chromedp.Click(chromedp.CSS(`#mine li[data-lock="from-page"] button`)),
			chromedp.WaitNotPresent(chromedp.CSS(`#mine li[data-lock="from-page"]`)),
		)
		other.expect("i from-page", "0 Lock Not Locked: from-page\n")
	})

	t.Run("waiters and deadlocks", func(t *testing.T) {
		srv := startServer(t, func(c *Config) { c.Deadlocks = DeadlocksReport })
		ctx := newTab(t, browser)
		browse(t, ctx, "open the console",
			chromedp.Navigate("http://"+srv.WSAddr().String()+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#status[data-state="connected"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#waiting-empty`)),
		)
		a, b, c := dial(t, srv, "tcp"), dial(t, srv, "unix"), dial(t, srv, "websocket")
		a.expect("iam alice", "1 ok\n")
		a.expect("g X", "1 Lock Get Success: X\n")
		b.expect("g Y", "1 Lock Get Success: Y\n")
		queue(t, srv, c, "gw -1 X")
		queue(t, srv, a, "gw -1 Y")
		// Who waits for each lock, in queue order, since when; the
		// waiting connections are marked.
		waiterRow := func(lock, waiter string) string {
			return `#waiting tbody tr[data-lock="` + lock + `"][data-waiter="` + waiter + `"]`
		}
		browse(t, ctx, "see the waiters",
			chromedp.WaitVisible(chromedp.CSS(waiterRow("X", c.name))),
			chromedp.WaitVisible(chromedp.CSS(waiterRow("Y", "alice"))),
			chromedp.WaitVisible(chromedp.CSS(`#connections tbody tr.is-waiting[data-conn="alice"]`)),
		)
		if got := text(t, ctx, waiterRow("Y", "alice")+" td.held"); !strings.HasSuffix(got, " ms") && !strings.HasSuffix(got, " s") {
			t.Errorf("waiting for %q, want a duration", got)
		}
		if got := text(t, ctx, `#connections tbody tr[data-conn="alice"] .badge.waiting`); got != "waiting for Y" {
			t.Errorf("alice's mark %q", got)
		}
		// b closes the cycle a → b → a; with -deadlocks report it stays,
		// and the console shows it as one until it is broken.
		queue(t, srv, b, "gw -1 X")
		browse(t, ctx, "see the deadlock",
			chromedp.WaitVisible(chromedp.CSS(`#deadlocks li[data-deadlock="1"]`)),
			chromedp.WaitVisible(chromedp.CSS(waiterRow("X", b.name)+".is-deadlock")),
			chromedp.WaitVisible(chromedp.CSS(waiterRow("Y", "alice")+".is-deadlock")),
		)
		if got := text(t, ctx, waiterRow("X", c.name)+" td.deadlock"); got != "" {
			t.Errorf("c, outside the cycle, shows %q", got)
		}
		if got := text(t, ctx, waiterRow("X", b.name)+" td.place"); got != "2" {
			t.Errorf("b's place in X's queue %q, want 2", got)
		}
		cycle := text(t, ctx, `#deadlocks li[data-deadlock="1"]`)
		for _, want := range []string{"alice waits for Y, held by " + b.name, b.name + " waits for X, held by alice"} {
			if !strings.Contains(cycle, want) {
				t.Errorf("deadlock shown as %q, want %q in it", cycle, want)
			}
		}
		screenshot(t, ctx, "console-deadlock.png")
		b.send("!cancel\n")
		if got := b.line(); got != "!cancel 1\n" {
			t.Fatalf("b: %q", got)
		}
		browse(t, ctx, "see the deadlock broken",
			chromedp.WaitNotVisible(chromedp.CSS(`#deadlocks-panel`)),
			chromedp.WaitNotPresent(chromedp.CSS(waiterRow("X", b.name))),
		)
	})

	t.Run("dump disabled", func(t *testing.T) {
		srv := startServer(t, func(c *Config) { c.Dump = false })
		dial(t, srv, "tcp").expect("g hidden", "1 Lock Get Success: hidden\n")
		ctx := newTab(t, browser)
		browse(t, ctx, "open the console",
			chromedp.Navigate("http://"+srv.WSAddr().String()+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#status[data-state="connected"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#dump-disabled`)),
			chromedp.WaitNotVisible(chromedp.CSS(`#exclusive-panel`)),
			chromedp.WaitNotVisible(chromedp.CSS(`#shared-panel`)),
			chromedp.WaitNotVisible(chromedp.CSS(`#filter`)),
			chromedp.WaitNotVisible(chromedp.CSS(`#connections-panel`)),
		)
		if locks := text(t, ctx, `[data-stat="locks"]`); locks != "1" {
			t.Errorf("locks counter shows %q, want 1", locks)
		}
		screenshot(t, ctx, "console-dump-disabled.png")
	})
}

// TestConsoleClientModule runs the JavaScript client, clients/js/glockd.js as
// the console serves it, in Chromium over the websocket: locks with tokens,
// try-lock, semaphores, a cancelled and a timed-out wait that keep the
// session's other locks, unlock, and the lost signal when the server goes.
func TestConsoleClientModule(t *testing.T) {
	browser := newBrowser(t)
	srv := startServer(t, nil)
	ctx := newTab(t, browser)
	browse(t, ctx, "open the console",
		chromedp.Navigate("http://"+srv.WSAddr().String()+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="connected"]`)),
	)
	run := func(what, js string) string {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, browseTimeout)
		defer cancel()
		v, err := chromedp.Run(tctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	got := run("lock, try-lock, waits, semaphores", `(async () => {
		const m = await import('/console/glockd.js');
		const url = 'ws://' + location.host + '/';
		const open = () => m.Session.open({ addresses: [url], timeout: 3000, interval: 200 });
		const a = await open(), b = await open();
		const out = [];
		const first = await a.lock('browser/a', { timeout: 1000 });
		out.push(typeof first.token, first.lost === a.lost);
		out.push(await b.tryLock('browser/a'));
		const kept = await b.lock('browser/kept');
		const ac = new AbortController();
		setTimeout(() => ac.abort(), 100);
		out.push(await b.lock('browser/a', { signal: ac.signal }).catch((e) => e.name));
		out.push(await b.lock('browser/a', { timeout: 100 }).catch((e) => e.name));
		out.push(kept.held, b.lost.aborted);
		const s1 = await a.acquire('browser/pool', { limit: 1 });
		out.push(await b.tryAcquire('browser/pool', { limit: 1 }));
		await s1.unlock();
		await first.unlock();
		const second = await b.lock('browser/a', { timeout: 1000 });
		out.push(BigInt(second.token) > BigInt(first.token));
		await a.close();
		out.push(a.lost.aborted, a.lost.reason.name);
		window.glockdTest = { b, kept, second };
		return JSON.stringify(out);
	})()`)
	if want := `["string",true,null,"AbortError","LockTimeout",true,false,null,true,true,"SessionClosed"]`; got != want {
		t.Fatalf("in the browser: %s, want %s", got, want)
	}
	tcp := dial(t, srv, "tcp")
	kept := run("the kept lock's token", `Promise.resolve(window.glockdTest.kept.token)`)
	tcp.expect("t browser/kept", kept+" Lock Token: browser/kept\n")
	second := run("the second lock's token", `Promise.resolve(window.glockdTest.second.token)`)
	tcp.expect("t browser/a", second+" Lock Token: browser/a\n")
	tcp.close()

	// The console's own session holds a lock too.
	browse(t, ctx, "take a lock from the page",
		chromedp.SendKeys(chromedp.CSS(`#lock-name`), "from-page"),
		chromedp.Click(chromedp.CSS(`#acquire`)),
		chromedp.WaitVisible(chromedp.CSS(`#mine li[data-lock="from-page"]`)),
	)

	// The server goes: every session in the page is lost, at once.
	srv.Close()
	browse(t, ctx, "the module's session is lost",
		waitJS(`window.glockdTest.kept.lost.aborted && window.glockdTest.b.lost.reason.name === "SessionLost" && !window.glockdTest.kept.held`),
		chromedp.WaitNotPresent(chromedp.CSS(`#mine li[data-lock="from-page"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="disconnected"]`)),
	)
	if reply := text(t, ctx, `#last-reply`); !strings.Contains(reply, "Connection lost") {
		t.Errorf("the console says %q after the server went", reply)
	}
	got = run("after the loss", `window.glockdTest.b.lock('x').catch((e) => e.name)`)
	if got != "SessionLost" {
		t.Errorf("lock after the loss: %q, want SessionLost", got)
	}
}
