//go:build unix

package failover

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runChecker runs the checker with opts against a fresh build of glockd
// and real etcd, and returns its result and output.
func runChecker(t *testing.T, opts Options) (Result, string) {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skip("etcd is not installed (apt-get install -y --no-install-recommends etcd-server); .ci/run installs it")
	}
	var out bytes.Buffer
	opts.Out = &out
	opts.Dir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := Run(ctx, opts)
	t.Logf("the checker's output:\n%s%s", out.String(), res.Summary())
	if errors.Is(err, ErrNoEtcd) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return res, out.String()
}

// TestSafeShort runs the CI form with the default, safe timing (session
// timeout 1s < takeover delay 2s): every fault is survived, every kind of
// fault that moves the leadership moves it, and nothing is violated.
func TestSafeShort(t *testing.T) {
	opts := Short(Defaults())
	res, out := runChecker(t, opts)
	if len(res.Violations) != 0 {
		t.Fatalf("%d violations in the safe setup", len(res.Violations))
	}
	// kill, pause and restart move the leadership (twice, twice, once); the
	// etcd fault may too, if the leader misses its renewals meanwhile.
	if res.Failovers < 5 {
		t.Errorf("%d failovers, want at least 5", res.Failovers)
	}
	for kind, n := range map[string]int{FaultKill: 2, FaultPause: 2, FaultRestart: 1} {
		if got := len(res.FailoverTimes[kind]); got != n {
			t.Errorf("%s: %d failovers timed, want %d", kind, got, n)
		}
	}
	if res.Grants == 0 || res.SessionsLost == 0 || res.Writes == 0 {
		t.Errorf("grants %d, sessions lost %d, writes %d: want some of each", res.Grants, res.SessionsLost, res.Writes)
	}
	if !strings.Contains(out, "etcd: etcd e") {
		t.Errorf("no etcd member was killed and restarted")
	}
}

// TestUnsafeSetupFails runs a setup that breaks the timing rule: no
// takeover delay and a session timeout of 10s. A paused leader's clients
// go on believing in their locks while the new leader grants them to
// others; the checker must see it and name it. Long holds make it certain
// that some lock is held across each pause.
func TestUnsafeSetupFails(t *testing.T) {
	opts := Defaults()
	opts.TakeoverDelay = 0
	opts.SessionTimeout = 10 * time.Second
	opts.Faults = []string{FaultPause}
	opts.Rounds = 2
	opts.LongHold, opts.LongHoldEvery = 10*time.Second, 2
	res, _ := runChecker(t, opts)
	if len(res.Violations) == 0 {
		t.Fatal("no violation in the unsafe setup")
	}
	kinds := map[string]int{}
	for _, v := range res.Violations {
		kinds[v.Kind]++
	}
	if kinds["overlap"] == 0 {
		t.Errorf("violations %v; want overlapping beliefs among them", kinds)
	}
}
