package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Kills during a hand-over's pause (upgrade.go), with the real binaries.

// TestUpgradeKillDuringPause: a holder killed (kill-holder on the -admin
// unix socket) while a hand-over has every reader stopped ends, and its lock
// is freed, whether the hand-over then succeeds (the new process holds a
// duplicate of its socket: the kill must reach it) or fails (the victim's
// reader must not be resumed).
//
// The kill must run while the victim's reader is stopped, and the pause
// must wait for it: the killer's "d" and "kill-holder" are read in one
// batch, before the pause, and the dump blocks on a killer that does not
// read it, which holds the pause open. The test drains it once the pause
// has begun, and the kill then runs. Its reply, "Kill Pending" at the kill
// bound, shows that the victim could not end in the old process meanwhile.
// For the failing hand-over a second client that does not read its dump
// holds the pause past the 3 s stop timeout. For the one that succeeds a
// websocket client has sent part of a frame: it goes over in the middle of
// its message and is answered by the new process once it sends the rest.
func TestUpgradeKillDuringPause(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("hand-overs are built on Linux")
	}
	v1 := buildGlockd(t, "v1", "-X main.version=0.0.1-first")
	for _, tc := range []struct {
		name    string
		handOff bool // false: a client that does not read holds the pause past the stop timeout
	}{{"handed over", true}, {"failed", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := startUpgradable(t, dir, v1, "-admin")
			victim := dialUp(t, "tcp", d.addr())
			if l := victim.do(t, "g victim"); l != "1 Lock Get Success: victim\n" {
				t.Fatal(l)
			}
			// The killer's dump must be bigger than what a unix socket
			// buffers, so that writing it blocks.
			killer := dialUp(t, "unix", d.sock)
			const locks, chunk = 12000, 500
			pad := strings.Repeat("x", 64)
			for i := 0; i < locks; i += chunk {
				var b strings.Builder
				for j := i; j < i+chunk; j++ {
					fmt.Fprintf(&b, "g k%05d-%s\n", j, pad)
				}
				if err := killer.send(b.String()); err != nil {
					t.Fatal(err)
				}
				for range chunk {
					if l, err := killer.line(30 * time.Second); err != nil || !strings.HasPrefix(l, "1 Lock Get Success") {
						t.Fatalf("killer's g: %q %v", l, err)
					}
				}
			}
			var stall net.Conn
			var frame []byte
			if tc.handOff {
				var err error
				stall, _, err = dialTransport("websocket", transportAddrs{ws: net.JoinHostPort("127.0.0.1", strconv.Itoa(d.wsPort))})
				if err != nil {
					t.Fatal(err)
				}
				defer stall.Close()
				frame = maskedFrame(0x81, [4]byte{1, 2, 3, 4}, "g stalled\n")
				if _, err := stall.Write(frame[:len(frame)-4]); err != nil {
					t.Fatal(err)
				}
			} else {
				blocker := dialUp(t, "unix", d.sock)
				if err := blocker.send("d\n"); err != nil {
					t.Fatal(err)
				}
				if l, err := blocker.line(30 * time.Second); err != nil || !strings.Contains(l, ": ") {
					t.Fatalf("the blocker's dump: %q %v", l, err)
				}
			}
			if err := killer.send("d\nkill-holder victim\n"); err != nil {
				t.Fatal(err)
			}
			if l, err := killer.line(30 * time.Second); err != nil || !strings.Contains(l, ": ") {
				t.Fatalf("the dump's first line: %q %v", l, err)
			}
			time.Sleep(200 * time.Millisecond) // the dump fills the socket's buffer

			pid := d.readPid()
			tookOver := strings.Count(d.logs.String(), "glockd took over")
			failures := strings.Count(d.logs.String(), "upgrade failed; still serving")
			if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
				t.Fatal(err)
			}
			// The pause has begun when a bystander's command is not
			// answered any more; its reply comes after the pause.
			bystander := dialUp(t, "tcp", d.addr())
			deadline := time.Now().Add(20 * time.Second)
			for {
				if err := bystander.send("t victim\n"); err != nil {
					t.Fatal(err)
				}
				if _, err := bystander.line(500 * time.Millisecond); err != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no pause after SIGUSR2; log:\n%s", d.logs)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Drain the dump: the kill runs behind it, with the victim
			// stopped, and is answered at the kill bound.
			for {
				l, err := killer.line(10 * time.Second)
				if err != nil {
					t.Fatalf("the kill's reply: %v; log:\n%s", err, d.logs)
				}
				if strings.Contains(l, ": ") && !strings.HasPrefix(l, "1 ") && !strings.HasPrefix(l, "0 ") {
					continue // a line of the dump
				}
				if l != "1 Kill Pending: victim\n" {
					t.Fatalf("kill-holder during the pause: %q, want the kill bound's reply", l)
				}
				break
			}
			if tc.handOff {
				eventually(t, "the hand-over", func() bool {
					return strings.Count(d.logs.String(), "glockd took over") > tookOver
				})
				if _, err := stall.Write(frame[len(frame)-4:]); err != nil {
					t.Fatal(err)
				}
				stall.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, reply := readServerFrame(t, stall); reply != "1 Lock Get Success: stalled\n" {
					t.Errorf("the message finished after the hand-over: %q", reply)
				}
			} else {
				deadline := time.Now().Add(20 * time.Second)
				for strings.Count(d.logs.String(), "upgrade failed; still serving") == failures {
					if strings.Count(d.logs.String(), "glockd took over") > tookOver {
						t.Fatalf("the hand-over succeeded; log:\n%s", d.logs)
					}
					if time.Now().After(deadline) {
						t.Fatalf("the hand-over did not fail; log:\n%s", d.logs)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			// Run before or after the victim's end.
			if l, err := bystander.line(10 * time.Second); err != nil || !strings.Contains(l, "Lock Token: victim") && l != "0 Lock Not Locked: victim\n" {
				t.Fatalf("the bystander's command during the pause: %q %v", l, err)
			}
			if l, err := victim.line(5 * time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the victim, killed during the pause, after it: %q %v, want the connection's end", l, err)
			}
			deadline = time.Now().Add(10 * time.Second)
			for {
				l := bystander.do(t, "i victim")
				if l == "0 Lock Not Locked: victim\n" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the victim's lock after the pause: %q, want it freed", l)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if l := killer.do(t, "t k00000-"+pad); !strings.Contains(l, "Lock Token") {
				t.Errorf("the killer after the pause: %q", l)
			}
		})
	}
}
