package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/ha"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// startUpgradableHA starts an -etcd node from an installed binary with a
// pidfile, so that upgradedDaemon.upgrade can follow it through hand-overs;
// the haNodeProc is for the probes of ha_test.go (not its start or kill).
func startUpgradableHA(t *testing.T, name, first, etcd string) (*upgradedDaemon, *haNodeProc) {
	t.Helper()
	dir := t.TempDir()
	n := &haNodeProc{t: t, name: name, port: freePort(t), metricsPort: freePort(t)}
	d := &upgradedDaemon{bin: filepath.Join(dir, "glockd"), pidPath: filepath.Join(dir, "pid"), port: n.port, logs: &logBuffer{}}
	install(t, first, d.bin)
	cmd := exec.Command(d.bin, "-etcd", etcd,
		"-port", strconv.Itoa(n.port), "-bind", "127.0.0.1", "-ws", "0",
		"-metrics-addr", n.metricsAddr(), "-pidfile", d.pidPath,
		"-lease-ttl", haTTL.String(), "-takeover-delay", haTakeover.String())
	cmd.Stderr = d.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pid := d.readPid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	eventually(t, name+"'s pidfile", func() bool { return d.readPid() == cmd.Process.Pid })
	eventually(t, name+" serving /healthz", func() bool {
		c, err := net.Dial("tcp", n.metricsAddr())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return d, n
}

// electionKeyCount is how many keys are under the election prefix: one per
// node campaigning or leading.
func electionKeyCount(t *testing.T, etcd string) int {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(etcd, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, ha.DefaultEtcdPrefix+"election/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

// TestUpgradeHA: under -etcd, a leader upgraded by SIGUSR2 keeps its
// leadership (the same lease and election key, no new election), its
// clients' connections and locks, and its tokens keep increasing; the
// standby never serves meanwhile. A standby upgraded stays a standby, and
// its old lease goes at once; it still takes over when the leader dies.
func TestUpgradeHA(t *testing.T) {
	etcd := endpoints(startEtcd(t, 1))
	v1 := buildGlockd(t, "v1", "-X main.version=0.0.1-first")
	v2 := buildGlockd(t, "v2", "-X main.version=0.0.1-second")
	ad, a := startUpgradableHA(t, "a", v1, etcd)
	waitServing(t, 10*time.Second, a)
	bd, b := startUpgradableHA(t, "b", v1, etcd)
	expectStandby(t, b, a)
	eventually(t, "both nodes campaigning", func() bool { return electionKeyCount(t, etcd) == 2 })

	// The standby must never serve while a leads.
	var bServed atomic.Bool
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if b.serving() {
				bServed.Store(true)
			}
		}
	}()
	stopWatching := func() {
		if stop != nil {
			close(stop)
			<-watched
			stop = nil
		}
	}
	defer stopWatching()

	c := dialLine(t, a.addr())
	held := c.lock("held")
	highest := held
	for i, bin := range []string{v2, v1} {
		pid := ad.upgrade(t, bin)
		// Served at once by the same connection, the lock still its own.
		if got := c.do("t held"); got != strconv.FormatUint(held, 10)+" Lock Token: held\n" {
			t.Fatalf("upgrade %d: t held: %q, want token %d", i, got, held)
		}
		token := c.lock("after-" + strconv.Itoa(i))
		if token <= highest {
			t.Fatalf("upgrade %d: token %d after %d", i, token, highest)
		}
		highest = token
		expectLeader(t, a)
		if won := a.metric("glockd_elections_won_total"); won != 1 {
			t.Fatalf("upgrade %d: glockd_elections_won_total %v, want 1 (no new election)", i, won)
		}
		// Past two TTLs the new process must have renewed the lease.
		time.Sleep(2 * haTTL)
		if got := c.do("t held"); got != strconv.FormatUint(held, 10)+" Lock Token: held\n" {
			t.Fatalf("upgrade %d, %v later: t held: %q", i, 2*haTTL, got)
		}
		expectLeader(t, a)
		if ad.readPid() != pid {
			t.Fatalf("upgrade %d: pidfile %d, want %d", i, ad.readPid(), pid)
		}
		if n := electionKeyCount(t, etcd); n != 2 {
			t.Fatalf("upgrade %d: %d election keys, want 2", i, n)
		}
	}
	for l := range strings.Lines(ad.logs.String()) {
		if strings.Contains(l, "glockd took over") || strings.Contains(l, "leading on after a hand-over") {
			t.Logf("a: %s", strings.TrimSpace(l))
		}
	}
	if !strings.Contains(ad.logs.String(), "leading on after a hand-over") {
		t.Fatalf("no resumed term in the log:\n%s", ad.logs)
	}

	// The standby hands over and stays one; its old lease is revoked, so
	// only the new process's key is left beside the leader's.
	bd.upgrade(t, v2)
	expectStandby(t, b, a)
	eventually(t, "two election keys", func() bool { return electionKeyCount(t, etcd) == 2 })
	if got := c.do("t held"); got != strconv.FormatUint(held, 10)+" Lock Token: held\n" {
		t.Fatalf("after the standby's upgrade: t held: %q", got)
	}
	stopWatching()
	if bServed.Load() {
		t.Fatal("the standby served while the leader was handing over")
	}

	// The upgraded standby still campaigns: it takes over from a dead leader.
	syscall.Kill(ad.readPid(), syscall.SIGKILL)
	waitServing(t, haFailover+5*time.Second, b)
	if token := dialLine(t, b.addr()).lock("held"); token <= highest {
		t.Fatalf("new leader's token %d is not above %d", token, highest)
	}
}
