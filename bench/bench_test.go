package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// buildGlockd builds the daemon of the repository's root.
func buildGlockd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "glockd")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer runs a server's binary with args, where PORT is a free port,
// and returns its address and pid once it listens.
func startServer(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	port := strconv.Itoa(freePort(t))
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "PORT", port)
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := "127.0.0.1:" + port
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if nc, err := net.Dial("tcp", addr); err == nil {
			nc.Close()
			return addr, cmd.Process.Pid
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s does not listen on %s: %s", bin, addr, stderr.String())
		}
	}
}

// bench runs the command with args and returns the fields of its RESULT
// line; it fails the test on a non-zero exit.
func bench(t *testing.T, args ...string) map[string]string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("bench %q: exit %d\n%s%s", args, code, stdout.String(), stderr.String())
	}
	return resultFields(t, stdout.String())
}

func resultFields(t *testing.T, out string) map[string]string {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "RESULT "); ok {
			fields := map[string]string{}
			for _, f := range strings.Fields(rest) {
				k, v, _ := strings.Cut(f, "=")
				fields[k] = v
			}
			return fields
		}
	}
	t.Fatalf("no RESULT line in %q", out)
	return nil
}

// positive fails unless each key's value is a number above 0.
func positive(t *testing.T, res map[string]string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if v, err := strconv.ParseFloat(res[k], 64); err != nil || v <= 0 {
			t.Errorf("%s=%q, want a positive number (%v)", k, res[k], err)
		}
	}
}

// TestWorkloads runs every workload briefly against the daemon, and, when
// redis-server is installed, against Redis: each must finish with no wrong
// reply and report what it measures.
func TestWorkloads(t *testing.T) {
	servers := []struct {
		proto string
		bin   string
		args  []string
	}{{"glockd", buildGlockd(t), []string{"-bind", "127.0.0.1", "-port", "PORT", "-ws", "0"}}}
	if redis, err := exec.LookPath("redis-server"); err == nil {
		servers = append(servers, struct {
			proto string
			bin   string
			args  []string
		}{"resp", redis, []string{"--bind", "127.0.0.1", "--port", "PORT", "--save", "", "--appendonly", "no"}})
	} else {
		t.Log("redis-server is not installed: the RESP side is not run")
	}
	for _, s := range servers {
		t.Run(s.proto, func(t *testing.T) {
			addr, pid := startServer(t, s.bin, s.args...)
			common := []string{"-proto", s.proto, "-addr", addr, "-duration", "300ms", "-warmup", "100ms", "-settle", "50ms"}
			for _, p := range []string{"1", "16"} {
				for _, w := range []string{"cycle", "contend", "shared"} {
					res := bench(t, append(common, "-workload", w, "-conns", "8", "-pipeline", p)...)
					positive(t, res, "ops_per_s", "p50_us", "p99_us")
					if w == "contend" {
						positive(t, res, "acquired", "busy")
					}
				}
			}
			pidArg := []string{"-pid", strconv.Itoa(pid)}
			res := bench(t, append(append(common, pidArg...), "-workload", "hold", "-conns", "100")...)
			positive(t, res, "rss_held_kb")
			res = bench(t, append(append(common, pidArg...), "-workload", "orphan", "-locks", "5000", "-pipeline", "64")...)
			positive(t, res, "acquire_ops_per_s", "rss_held_kb")
			if s.proto == "glockd" {
				positive(t, res, "release_ms", "probe_p99_us")
				res = bench(t, append(append(common, pidArg...), "-workload", "sharedorphan", "-locks", "5000", "-pipeline", "64")...)
				positive(t, res, "rss_two_holders_kb", "release_ms")
			} else if res["release_ms"] != "na" {
				t.Errorf("Redis released the locks of a closed connection: release_ms=%s", res["release_ms"])
			}
			res = bench(t, append(common, "-workload", "handover", "-conns", "20")...)
			positive(t, res, "handovers", "p99_us", "probe_p99_us")
		})
	}
}

// TestWrongReplies: a server whose replies are well formed but wrong (the
// lock is never granted, or granted under another name) makes the run
// fail, with the first errors quoted.
func TestWrongReplies(t *testing.T) {
	for _, reply := range []string{"0 Lock Get Failure: k0\n", "1 Lock Get Success: other\n", "1 Lock Get Success\n"} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				nc, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer nc.Close()
					r := bufio.NewReader(nc)
					for {
						if _, err := r.ReadString('\n'); err != nil {
							return
						}
						nc.Write([]byte(reply))
					}
				}()
			}
		}()
		var stdout, stderr bytes.Buffer
		code := run([]string{"-addr", l.Addr().String(), "-conns", "1", "-duration", "100ms", "-warmup", "0s"}, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "bench: ") {
			t.Errorf("reply %q: exit %d, stderr %q", reply, code, stderr.String())
		}
		if res := resultFields(t, stdout.String()); res["errors"] == "0" {
			t.Errorf("reply %q: no error counted", reply)
		}
	}
}

// TestHist: quantiles within 3% of the true ones.
func TestHist(t *testing.T) {
	var h hist
	for i := 1; i <= 100000; i++ {
		h.record(time.Duration(i) * 37 * time.Nanosecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := q * 100000 * 37 / 1e3
		if got := h.quantile(q); got < want*0.97 || got > want*1.03 {
			t.Errorf("quantile %v: %.2f µs, want %.2f", q, got, want)
		}
	}
	for i := range len(hist{}.counts) {
		if b := bucket(bucketTop(i)); i >= 64 && b != i {
			t.Fatalf("bucket %d's top %d falls in bucket %d", i, bucketTop(i), b)
		}
	}
}

// TestRESP: commands as RESP arrays, and what each reply means.
func TestRESP(t *testing.T) {
	if got := string(resp{}.append(nil, op{get, "k1"})); got != "*4\r\n$3\r\nSET\r\n$2\r\nk1\r\n$1\r\n1\r\n$2\r\nNX\r\n" {
		t.Errorf("SET: %q", got)
	}
	for _, tt := range []struct {
		kind  kind
		reply string
		want  int64
		bad   bool
	}{
		{get, "+OK\r\n", 1, false},
		{get, "$-1\r\n", 0, false},
		{get, ":1\r\n", 0, true},
		{release, ":1\r\n", 1, false},
		{release, ":0\r\n", 0, false},
		{release, ":2\r\n", 0, true},
		{sharedGet, ":7\r\n", 7, false},
		{sharedRelease, ":0\r\n", 1, false},
		{sharedRelease, ":-1\r\n", 0, false},
		{waitGet, "*2\r\n$1\r\nk\r\n$5\r\ntoken\r\n", 1, false},
		{waitGet, "*2\r\n$1\r\nk\r\n$5\r\nother\r\n", 0, true},
		{handOver, ":1\r\n", 1, false},
		{release, "-ERR wrong\r\n", 0, true},
	} {
		got, err := resp{}.reply(bufio.NewReader(strings.NewReader(tt.reply)), op{tt.kind, "k"})
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("%v, reply %q: %d, %v", op{tt.kind, "k"}, tt.reply, got, err)
		}
	}
}

func TestMain(m *testing.M) {
	if _, err := exec.LookPath("go"); err != nil {
		fmt.Fprintln(os.Stderr, "the tests build glockd: go is not on PATH")
		os.Exit(1)
	}
	os.Exit(m.Run())
}
