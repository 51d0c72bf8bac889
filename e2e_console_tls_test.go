package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// evalBool evaluates a JavaScript expression in the tab.
func evalBool(t *testing.T, ctx context.Context, js string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browseTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// TestConsoleTLSAndIdentities drives the console in headless Chromium over
// https:// and wss://, on a server that gives access by identity: the page
// asks for a token, refuses a wrong one, and shows each identity only what
// it may see and lock.
func TestConsoleTLSAndIdentities(t *testing.T) {
	ca := newTestCA(t, "glockd-test")
	srv, cert := tlsServer(t, ca, func(c *Config) {
		c.Security.ACLFile = writeFile(t, "acl", testACL)
		c.Security.AuthFailureDelay = 10 * time.Millisecond
	})
	// Chromium trusts the test server's key, and only it: no certificate
	// error is ignored for any other.
	spki := sha256.Sum256(cert.cert.Leaf.RawSubjectPublicKeyInfo)
	browser := newBrowser(t, chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	url := "https://" + srv.WSAddr().String() + "/"
	watcher := rawClient(t, srv, "tcp")
	watcher.expectOne("auth "+readerToken, "1 ok\n")

	// billing may lock billing/* and see nothing else.
	billing := newTab(t, browser)
	browse(t, billing, "open the console: it asks for a token",
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#login`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#app`)),
	)
	if !evalBool(t, billing, `location.protocol === "https:"`) {
		t.Fatal("not on https")
	}
	browse(t, billing, "a wrong token is refused",
		chromedp.SendKeys(chromedp.CSS(`#token`), "not-the-token"),
		chromedp.Click(chromedp.CSS(`#login-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#login-error`)),
	)
	if msg := text(t, billing, `#login-error`); msg != "Wrong token." {
		t.Errorf("login error %q", msg)
	}
	browse(t, billing, "sign in as billing",
		setValue(`#token`, billingToken),
		chromedp.Click(chromedp.CSS(`#login-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#app`)),
		chromedp.WaitVisible(chromedp.CSS(`#no-inspect`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#login`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#cards`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#exclusive-panel`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#commands-panel`)),
	)
	if who := text(t, billing, `#whoami`); !strings.HasPrefix(who, "signed in as billing (") {
		t.Errorf("whoami %q", who)
	}
	browse(t, billing, "a name outside billing's patterns",
		chromedp.SendKeys(chromedp.CSS(`#lock-name`), "payroll"),
		chromedp.WaitVisible(chromedp.CSS(`#lock-hint.bad`)),
	)
	if !evalBool(t, billing, `document.querySelector('#acquire').disabled`) {
		t.Error("acquire enabled for a name billing may not lock")
	}
	browse(t, billing, "take billing/nightly",
		setValue(`#lock-name`, "billing/nightly"),
		chromedp.WaitNotPresent(chromedp.CSS(`#lock-hint.bad`)),
		chromedp.Click(chromedp.CSS(`#acquire`)),
		chromedp.WaitVisible(chromedp.CSS(`#mine li[data-lock="billing/nightly"]`)),
	)
	watcher.expect("d billing/nightly", "billing/nightly: billing\n")
	watcher.expectOne("i payroll", "0 Lock Not Locked: payroll\n")
	screenshot(t, billing, "console-lock-only.png")

	// reader sees every lock, with billing as its holder, and takes none.
	reader := newTab(t, browser)
	browse(t, reader, "sign in as reader",
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#login`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), readerToken),
		chromedp.Click(chromedp.CSS(`#login-button`)),
		chromedp.WaitVisible(chromedp.CSS(lockRow("#exclusive", "billing/nightly"))),
		chromedp.WaitVisible(chromedp.CSS(`#no-lock`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#lock-form`)),
		chromedp.WaitNotVisible(chromedp.CSS(`#no-inspect`)),
		chromedp.WaitVisible(chromedp.CSS(`#cards`)),
	)
	if holder := text(t, reader, lockRow("#exclusive", "billing/nightly")+" .holder"); holder != "billing" {
		t.Errorf("holder shown %q, want billing", holder)
	}
	screenshot(t, reader, "console-inspect-only.png")

	// Closing billing's tab orphans its lock, which the reader sees go.
	if err := chromedp.Cancel(billing); err != nil {
		t.Fatalf("close billing's tab: %v", err)
	}
	eventually(t, "billing's lock orphaned", func() bool { return watcher.one("i billing/nightly") == "0 Lock Not Locked: billing/nightly\n" })
	browse(t, reader, "see billing's lock go", chromedp.WaitNotPresent(chromedp.CSS(lockRow("#exclusive", "billing/nightly"))))
}
