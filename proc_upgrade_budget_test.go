package main

import (
	"bufio"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bufferedBytes reads glockd_buffered_bytes from the daemon's /metrics.
func (d *upgradedDaemon) bufferedBytes(t *testing.T) int64 {
	return int64(d.metric(t, "glockd_buffered_bytes"))
}

// metric reads the sample name (with its labels, if any) from the daemon's
// /metrics.
func (d *upgradedDaemon) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(d.wsPort)) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// TestUpgradeBudget: what the connections hold against -max-buffered goes
// on being charged in the new process: the lines queued behind a pending gw,
// a read buffer grown for a long partial line and a websocket message whose
// first fragment has come, so glockd_buffered_bytes is the same after a
// hand-over as before it.
func TestUpgradeBudget(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("hand-overs are built on Linux")
	}
	v1 := buildGlockd(t, "v1", "-X main.version=0.0.1-first")
	d := startUpgradable(t, t.TempDir(), v1)
	holder := dialUp(t, "tcp", d.addr())
	if l := holder.do(t, "g busy"); l != "1 Lock Get Success: busy\n" {
		t.Fatal(l)
	}
	waiter := dialUp(t, "unix", d.sock)
	// The lines behind the gw, in its batch and read during the wait.
	if err := waiter.send("gw -1 busy\n" + strings.Repeat("t queued\n", 100)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := waiter.send(strings.Repeat("t queued\n", 200)); err != nil {
		t.Fatal(err)
	}
	// A line of 10,000 bytes, not finished: the read buffer grows for it.
	partial := dialUp(t, "tcp", d.addr())
	if err := partial.send("t " + strings.Repeat("p", 10000)); err != nil {
		t.Fatal(err)
	}
	// A websocket message of which a fragment of 10,002 bytes has come:
	// the message buffer holds it.
	ws, _, err := dialTransport("websocket", transportAddrs{ws: net.JoinHostPort("127.0.0.1", strconv.Itoa(d.wsPort))})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	key := [4]byte{9, 8, 7, 6}
	if _, err := ws.Write(maskedFrame(0x01, key, "g "+strings.Repeat("w", 10000))); err != nil {
		t.Fatal(err)
	}
	var before int64
	eventually(t, "the queue, the partial line and the fragment charged", func() bool {
		before = d.bufferedBytes(t)
		return before >= 300*int64(len("t queued")+queuedLineCost)+16<<10+10002
	})
	time.Sleep(100 * time.Millisecond) // nothing more is coming
	if again := d.bufferedBytes(t); again != before {
		t.Fatalf("glockd_buffered_bytes moved from %d to %d with nothing sent", before, again)
	}
	d.upgrade(t, v1)
	// The websocket's reader charges its message buffer again as it reads
	// the fragment handed over, once the new process serves.
	deadline := time.Now().Add(10 * time.Second)
	for after := d.bufferedBytes(t); after != before; after = d.bufferedBytes(t) {
		if time.Now().After(deadline) {
			t.Fatalf("glockd_buffered_bytes after the hand-over: %d, want %d as before it", after, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if after := d.bufferedBytes(t); after != before {
		t.Fatalf("glockd_buffered_bytes after the hand-over: %d, then %d, want %d as before it", before, after, before)
	}
	// The charges are still the connections': they go back to zero as
	// the queue runs and the line ends.
	if l := holder.do(t, "r busy"); l != "1 Lock Release Success: busy\n" {
		t.Fatal(l)
	}
	if l, err := waiter.line(10 * time.Second); err != nil || !strings.HasPrefix(l, "1 Lock Get Success: busy") {
		t.Fatalf("the waiter after the hand-over: %q %v", l, err)
	}
	for range 300 {
		if l, err := waiter.line(10 * time.Second); err != nil || !strings.Contains(l, "queued") {
			t.Fatalf("a queued line's reply: %q %v", l, err)
		}
	}
	if l := partial.do(t, ""); !strings.Contains(l, "pppp") {
		t.Fatalf("the partial line's reply: %q", l)
	}
	if _, err := ws.Write(maskedFrame(0x80, key, "\n")); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, reply := readServerFrame(t, ws); !strings.HasPrefix(reply, "1 Lock Get Success: www") {
		t.Fatalf("the websocket message finished after the hand-over: %.40q", reply)
	}
	eventually(t, "the charges released", func() bool { return d.bufferedBytes(t) == 0 })
}
