package main

import (
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUpgradeHangupDuring: SIGHUPs sent all through a hand-over (with
// -acl-file, a reload goes through the manager, which is frozen from the
// snapshot on) neither keep the old process from exiting nor get lost: the
// new process reloads. 100,000 locks make the frozen part of the pause long
// enough for a SIGHUP every 2 ms to land in it.
func TestUpgradeHangupDuring(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("hand-overs are built on Linux")
	}
	acl := writeFile(t, "acl", "svc "+tokenHash("svc-token")+" lock,inspect svc/*\n")
	v1 := buildGlockd(t, "v1", "-X main.version=0.0.1-first")
	d := startUpgradable(t, t.TempDir(), v1, "-acl-file", acl)
	c := dialUp(t, "tcp", d.addr())
	if l := c.do(t, "auth svc-token"); l != "1 ok\n" {
		t.Fatal(l)
	}
	const locks = 100000
	go func() {
		var b strings.Builder
		for i := range locks {
			fmt.Fprintf(&b, "g svc/%d\n", i)
		}
		c.send(b.String())
	}()
	for range locks {
		if l, err := c.line(30 * time.Second); err != nil || !strings.HasPrefix(l, "1 ") {
			t.Fatalf("g: %q %v", l, err)
		}
	}
	old := d.readPid()
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for d.readPid() == old {
		if time.Now().After(deadline) {
			t.Fatalf("no hand-over; log:\n%s", d.logs)
		}
		syscall.Kill(old, syscall.SIGHUP)
		time.Sleep(2 * time.Millisecond)
	}
	eventually(t, "the old process to exit", func() bool { return !alive(old) })
	eventually(t, "the new process to reload", func() bool {
		_, after, _ := strings.Cut(d.logs.String(), "glockd took over")
		return strings.Contains(after, "acl file reloaded")
	})
	if l := c.do(t, "t svc/7"); !strings.HasSuffix(l, " Lock Token: svc/7\n") {
		t.Errorf("after the hand-over: %q", l)
	}
}
