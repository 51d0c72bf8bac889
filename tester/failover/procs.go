//go:build unix

package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process that can be killed, paused and started again
// with the same command line; its output goes to a log file.
type proc struct {
	name string
	argv []string
	log  string // path of its log, appended to by every start
	cmd  *exec.Cmd
	done chan struct{} // closed when the current run has exited
}

func (p *proc) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "--- %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.argv, " "))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	done := p.done
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	return nil
}

// running reports whether the current run has not exited.
func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(sig syscall.Signal) error {
	if !p.running() {
		return fmt.Errorf("%s is not running", p.name)
	}
	return p.cmd.Process.Signal(sig)
}

// kill ends the process with SIGKILL (resuming it first, should it be
// stopped, is not needed: SIGKILL ends a stopped process too).
func (p *proc) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stop asks the process to end (SIGTERM, after SIGCONT in case it is
// paused) and kills it if it has not within grace.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// httpClient is for the processes' health endpoints: short timeouts, since
// a paused process answers nothing, and no kept connections, which a
// killed process would leave dangling.
func newHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}

// etcdMember is one member of the etcd cluster the nodes elect through.
type etcdMember struct {
	proc
	client string // client URL
}

// startEtcd starts an n-member etcd cluster on loopback ports, with data
// directories under dir, and waits until it is healthy.
func startEtcd(ctx context.Context, bin, dir string, n int) ([]*etcdMember, error) {
	members := make([]*etcdMember, n)
	peers := make([]string, n)
	var initial []string
	for i := range members {
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("e%d", i)
		peers[i] = "http://" + loopback(pp)
		initial = append(initial, name+"="+peers[i])
		members[i] = &etcdMember{client: "http://" + loopback(cp)}
		members[i].name = "etcd " + name
		members[i].log = filepath.Join(dir, "etcd-"+name+".log")
	}
	for i, m := range members {
		name := fmt.Sprintf("e%d", i)
		m.argv = []string{bin,
			"--name", name, "--data-dir", filepath.Join(dir, "etcd-"+name),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "glockd-failover",
			// A lost etcd leader is replaced in about half a second.
			"--heartbeat-interval", "50", "--election-timeout", "500",
		}
		if err := m.start(); err != nil {
			stopAll(members)
			return nil, err
		}
	}
	for _, m := range members {
		if err := m.waitHealthy(ctx, 30*time.Second); err != nil {
			stopAll(members)
			return nil, err
		}
	}
	return members, nil
}

func stopAll(members []*etcdMember) {
	for _, m := range members {
		if m != nil {
			m.stop(5 * time.Second)
		}
	}
}

// waitHealthy waits until the member says it is healthy (it is part of a
// cluster that has a leader).
func (m *etcdMember) waitHealthy(ctx context.Context, within time.Duration) error {
	hc := newHTTPClient(time.Second)
	end := time.Now().Add(within)
	for {
		resp, err := hc.Get(m.client + "/health")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"true"`)) {
				return nil
			}
		}
		if !m.running() {
			return fmt.Errorf("%s exited (see %s)", m.name, m.log)
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return fmt.Errorf("%s not healthy after %v (see %s)", m.name, within, m.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// isLeader asks the member whether it is the etcd cluster's leader, through
// etcd's JSON gateway (no gRPC client needed here).
func (m *etcdMember) isLeader() (bool, error) {
	hc := newHTTPClient(2 * time.Second)
	resp, err := hc.Post(m.client+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var st struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return false, err
	}
	if st.Header.MemberID == "" {
		return false, errors.New("no member id in the status")
	}
	return st.Leader == st.Header.MemberID, nil
}

// node is one glockd process with -etcd.
type node struct {
	proc
	addr    string // the line protocol's host:port
	metrics string // host:port of /healthz and /metrics
}

type role int

const (
	unknown role = iota // no answer: down, paused or slow
	standby             // answers 503: standby, or elected and waiting the takeover delay
	leader              // answers 200: serving
)

// role asks the node's /healthz.
func (n *node) role(hc *http.Client) role {
	resp, err := hc.Get("http://" + n.metrics + "/healthz")
	if err != nil {
		return unknown
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return leader
	case http.StatusServiceUnavailable:
		return standby
	}
	return unknown
}

// waitAnswering waits until the node serves /healthz in any role.
func (n *node) waitAnswering(within time.Duration) error {
	hc := newHTTPClient(time.Second)
	end := time.Now().Add(within)
	for n.role(hc) == unknown {
		if !n.running() {
			return fmt.Errorf("%s exited (see %s)", n.name, n.log)
		}
		if time.Now().After(end) {
			return fmt.Errorf("%s: no /healthz after %v (see %s)", n.name, within, n.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// buildGlockd builds the glockd binary of the module the current directory
// is in, into dir.
func buildGlockd(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the glockd module: run from the repository or give -glockd")
	}
	bin := filepath.Join(dir, "glockd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}
