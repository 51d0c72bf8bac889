package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/client"
)

// TestGrantAfterSessionLost: the server (a paused one, say) holds back its
// reply to g, and to every heartbeat, past the session timeout, then
// grants. The session was declared lost meanwhile: Lock, TryLock and
// LockShared report ErrSessionLost and hand out no lock, whether the late
// grant reaches the client or not.
func TestGrantAfterSessionLost(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, delay := range []time.Duration{timeout + 5*time.Millisecond, timeout + 50*time.Millisecond, 3 * timeout} {
		for _, method := range []string{"Lock", "TryLock", "LockShared"} {
			t.Run(method+"/"+delay.String(), func(t *testing.T) {
				srv := serveLines(t, fenced(func(line string) string {
					verb, name, _ := strings.Cut(line, " ")
					switch verb {
					case "!ping":
						return "!pong\n"
					case "!gw": // Lock's wait: its outcome line comes late
						time.Sleep(delay)
						_, name, _ = strings.Cut(name, " ")
						return "!gw 1 1099511627776 " + name + "\n"
					case "g", "gw", "sg":
						time.Sleep(delay) // nothing more is read meanwhile, heartbeats neither
						if verb == "sg" {
							return "1 Shared Lock Get Success: " + name + "\n"
						}
						if verb == "gw" {
							_, name, _ = strings.Cut(name, " ")
						}
						return "1 Lock Get Success: " + name + "\n"
					case "t":
						return "1099511627776 Lock Token: " + name + "\n"
					}
					return ""
				}))
				s, err := client.NewSession(ctxTimeout(t, 5*time.Second), "tcp", []string{srv.ln.Addr().String()},
					client.SessionOptions{Interval: timeout / 10, Timeout: timeout})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				time.Sleep(3 * timeout / 10) // a few heartbeats answered
				ctx := ctxTimeout(t, 10*time.Second)
				var l *client.Lock
				switch method {
				case "Lock":
					l, err = s.Lock(ctx, "x")
				case "TryLock":
					l, err = s.TryLock(ctx, "x")
				case "LockShared":
					l, err = s.LockShared(ctx, "x")
				}
				if l != nil || !errors.Is(err, client.ErrSessionLost) {
					t.Fatalf("%s after the session timeout: lock %v, err %v; want no lock and ErrSessionLost", method, l, err)
				}
				select {
				case <-s.Done():
				default:
					t.Fatal("the session is not lost")
				}
			})
		}
	}
}
