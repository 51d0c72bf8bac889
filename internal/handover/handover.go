package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Env names the descriptor of the hand-over socket in the new process's
// environment.
const Env = "GLOCKD_HANDOVER_FD"

// Message kinds on the hand-over link: one byte, then the payload.
const (
	msgHeader  = 'H' // old → new: magic, format
	msgReady   = 'R' // new → old: it reads the format; its version
	msgFDs     = 'F' // old → new: descriptors attached
	msgState   = 'S' // old → new: a chunk of the state
	msgDone    = 'D' // old → new: descriptors and bytes sent, when the pause began
	msgConfirm = 'C' // new → old: built, ready to serve
	msgGo      = 'G' // old → new: serve; the old process exits
	msgError   = 'E' // either way: why not
)

// connsMark is the payload of an F message whose descriptors are all
// connections'.
const connsMark = "c"

// markConns is whether this binary marks its F messages of connections
// with connsMark. It is a string so that a test can build a binary that
// does not, as the ones before the mark did not (-ldflags -X
// github.com/glockd/glockd/internal/handover.markConns=false); it is never
// written at run time.
var markConns = "true"

// Child is the old process's side of a hand-over: the new process, started,
// and the link to it.
type Child struct {
	cmd     *exec.Cmd
	link    *link
	sent    int    // descriptors sent
	Version []byte // the new binary's, from its ready message
}

// Start starts the binary exe with args and its end of the link, sends it
// the header and waits until it says it reads the format, at most timeout.
// On error the process is gone.
func Start(exe string, args []string, timeout time.Duration) (*Child, error) {
	link, theirs, err := newPair()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, Env+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, Env+"=3")
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		link.close()
		return nil, fmt.Errorf("starting %s: %w", exe, err)
	}
	c := &Child{cmd: cmd, link: link}
	fail := func(err error) (*Child, error) {
		c.Kill()
		c.Close()
		return nil, fmt.Errorf("new process %d did not get ready: %w", cmd.Process.Pid, err)
	}
	var header []byte
	header = append(header, magic...)
	header = binary.AppendUvarint(header, mustFormat())
	if err := link.send(msgHeader, header, nil); err != nil {
		return fail(err)
	}
	if c.Version, err = expect(link, msgReady, time.Now().Add(timeout)); err != nil {
		return fail(err)
	}
	return c, nil
}

// Pid is the new process's.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Kill ends the new process and waits for it: the hand-over failed.
func (c *Child) Kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// Close closes the old process's end of the link.
func (c *Child) Close() { c.link.close() }

// SendFDs sends descriptors, which stay the caller's; the state knows them
// by their index in the order of all the descriptors sent. With conns, they
// are all connections' (plain TCP, unix or websocket ones): the new process
// makes its connections of them at once, while the rest comes.
func (c *Child) SendFDs(fds []int, conns bool) error {
	var mark []byte
	if conns && markConns == "true" {
		mark = []byte(connsMark)
	}
	for sent := 0; sent < len(fds); sent += maxFDs {
		batch := fds[sent:min(sent+maxFDs, len(fds))]
		if err := c.link.send(msgFDs, mark, batch); err != nil {
			return fmt.Errorf("sending descriptors: %w", err)
		}
		c.sent += len(batch)
	}
	return nil
}

// SendState sends the state in chunks, then the message that ends them,
// which says how many descriptors SendFDs sent and when the pause began.
func (c *Child) SendState(data []byte, pauseStart time.Time) error {
	for rest := data; len(rest) > 0; {
		n := min(len(rest), maxMessage-1)
		if err := c.link.send(msgState, rest[:n], nil); err != nil {
			return fmt.Errorf("sending the state: %w", err)
		}
		rest = rest[n:]
	}
	var done []byte
	done = binary.AppendUvarint(done, uint64(c.sent))
	done = binary.AppendUvarint(done, uint64(len(data)))
	done = binary.AppendVarint(done, pauseStart.UnixNano())
	if err := c.link.send(msgDone, done, nil); err != nil {
		return fmt.Errorf("sending the state: %w", err)
	}
	return nil
}

// AwaitConfirm waits until deadline for the new process to say that it
// has built its server from the state.
func (c *Child) AwaitConfirm(deadline time.Time) error {
	if _, err := expect(c.link, msgConfirm, deadline); err != nil {
		return fmt.Errorf("new process %d did not confirm: %w", c.Pid(), err)
	}
	return nil
}

// Go tells the new process to serve, with payload (what the root's HA side
// needs it to know, or nothing). Once it is sent the old process must exit.
func (c *Child) Go(payload []byte) error {
	if err := c.link.send(msgGo, payload, nil); err != nil {
		return fmt.Errorf("new process %d: %w", c.Pid(), err)
	}
	return nil
}

func mustFormat() uint64 {
	f, err := strconv.ParseUint(format, 10, 64)
	if err != nil {
		panic("handover.format is not a number: " + format)
	}
	return f
}

// WritePid writes pid into the pidfile f, in place of what it held: the
// flock'ed descriptor stays the same.
func WritePid(f *os.File, pid int) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0)
	return err
}

// expect receives one message of kind, or says why not.
func expect(link *link, kind byte, deadline time.Time) ([]byte, error) {
	got, payload, fds, err := link.receive(deadline)
	closeFDs(fds)
	switch {
	case err != nil:
		return nil, err
	case got == msgError:
		return nil, errors.New(string(payload))
	case got != kind:
		return nil, fmt.Errorf("message %q, want %q", got, kind)
	}
	return payload, nil
}

// Heir is the new process's side of a hand-over: the link, the state and
// the descriptors received.
type Heir struct {
	link       *link
	State      *State
	fds        []int // by index; -1: taken (the pidfile, or made a connection)
	early      early
	PauseStart time.Time // when the old process stopped serving
	Received   time.Time // when the last of the state arrived, before it was decoded
}

// Receive is what a process started for a hand-over does first: it opens
// the link inherited as descriptor fdText (the value of Env), checks the
// format, says it is ready (with its version), and receives the descriptors
// and the state.
func Receive(fdText, version string) (*Heir, error) {
	fd, err := strconv.Atoi(fdText)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", Env, fdText, err)
	}
	link, err := openLink(fd)
	if err != nil {
		return nil, err
	}
	h := &Heir{link: link, early: early{sem: make(chan struct{}, runtime.GOMAXPROCS(0)),
		conns: make(map[int]net.Conn), errs: make(map[int]error)}}
	header, err := expect(link, msgHeader, time.Time{})
	if err != nil {
		link.close()
		return nil, fmt.Errorf("hand-over header: %w", err)
	}
	rest, ok := strings.CutPrefix(string(header), magic)
	f, n := binary.Uvarint([]byte(rest))
	if !ok || n <= 0 || !formatOK(f) {
		err := fmt.Errorf("the old process hands over state format %d; this binary reads format %s only", f, format)
		h.Fail(err)
		return nil, err
	}
	if err := link.send(msgReady, []byte(version), nil); err != nil {
		link.close()
		return nil, err
	}
	if err := h.receiveState(); err != nil {
		return nil, err
	}
	return h, nil
}

// receiveState receives the descriptors and the state, up to the message
// that ends them; on error it has given everything up.
func (h *Heir) receiveState() error {
	// The chunks are joined once at the end: appending each to the rest
	// would copy megabytes over and over.
	var chunks [][]byte
	size := 0
	for {
		kind, payload, fds, err := h.link.receive(time.Time{})
		if err != nil {
			closeFDs(h.fds)
			h.early.drop()
			h.link.close()
			return fmt.Errorf("receiving the state: %w", err)
		}
		h.fds = append(h.fds, fds...)
		switch kind {
		case msgFDs:
			if string(payload) == connsMark && len(fds) > 0 {
				first := len(h.fds) - len(fds)
				h.early.makeConns(first, fds)
				for i := first; i < len(h.fds); i++ {
					h.fds[i] = -1
				}
			}
		case msgState:
			chunks = append(chunks, payload) // receive's buffer is the message's own
			size += len(payload)
		case msgDone:
			received := time.Now()
			data := make([]byte, 0, size)
			for _, c := range chunks {
				data = append(data, c...)
			}
			chunks = nil
			d := decoder{b: payload}
			nfds, nbytes, start := d.uvarint(), d.uvarint(), d.varint()
			if d.err != nil || nfds != uint64(len(h.fds)) || nbytes != uint64(len(data)) {
				err := fmt.Errorf("hand-over incomplete: %d descriptors and %d bytes of %d and %d", len(h.fds), len(data), nfds, nbytes)
				h.Fail(err)
				return err
			}
			h.PauseStart, h.Received = time.Unix(0, start), received
			if h.State, err = Decode(data, len(h.fds)); err != nil {
				h.Fail(err)
				return err
			}
			return nil
		default:
			err := fmt.Errorf("unexpected hand-over message %q", kind)
			h.Fail(err)
			return err
		}
	}
}

// early is the connections a new process makes of the descriptors marked
// as connections' as they arrive, while the old process takes its snapshot
// and sends the state: each takes a handful of system calls (FileConn's
// duplicate, the poller's registration, its addresses, closing the
// original), the most of the new process's work per connection.
type early struct {
	wg sync.WaitGroup
	// sem bounds the goroutines making connections at once to the CPUs:
	// one for each F message (50 for 10,000 connections) would starve the
	// receiving of the state beside them (measured: one hand-over's send
	// took 340 ms). One goroutine only leaves the receiving a CPU of its
	// own but makes 10,000 connections a third slower.
	sem   chan struct{}
	mu    sync.Mutex
	conns map[int]net.Conn // by descriptor index
	errs  map[int]error
}

// makeConns makes connections of fds, the descriptors first, first+1, ...,
// which are its own from then on.
func (e *early) makeConns(first int, fds []int) {
	e.wg.Go(func() {
		e.sem <- struct{}{}
		defer func() { <-e.sem }()
		for j, fd := range fds {
			f := os.NewFile(uintptr(fd), "handover")
			nc, err := net.FileConn(f)
			f.Close() // FileConn made its own duplicate
			e.mu.Lock()
			if err != nil {
				e.errs[first+j] = err
			} else {
				e.conns[first+j] = nc
			}
			e.mu.Unlock()
		}
	})
}

// take waits for the connections and hands them over: the early holds none
// any more.
func (e *early) take() (map[int]net.Conn, map[int]error) {
	e.wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	conns, errs := e.conns, e.errs
	e.conns, e.errs = nil, nil
	return conns, errs
}

// drop closes the connections not taken.
func (e *early) drop() {
	conns, _ := e.take()
	for _, nc := range conns {
		nc.Close()
	}
}

// TakeConns waits for the connections made of the descriptors the old
// process marked as connections', and hands them over by their index (or,
// for one that could not be made, why not); Files has nil at their indexes.
// The Heir holds none of them any more.
func (h *Heir) TakeConns() (map[int]net.Conn, map[int]error) { return h.early.take() }

// TakePidfile takes the pidfile's descriptor out of the hand-over, if the
// old process had one: its flock is this process's from now on.
func (h *Heir) TakePidfile() *os.File {
	i := h.State.Pidfile
	if i < 0 || h.fds[i] < 0 {
		return nil
	}
	f := os.NewFile(uintptr(h.fds[i]), "pidfile")
	h.fds[i] = -1
	return f
}

// Files hands the descriptors received over to the caller, as files by
// their index in the state (nil for one already taken, the pidfile's); the
// Heir holds none of them any more.
func (h *Heir) Files() []*os.File {
	files := make([]*os.File, len(h.fds))
	for i, fd := range h.fds {
		if fd >= 0 {
			files[i] = os.NewFile(uintptr(fd), "handover")
		}
	}
	h.fds = nil
	return files
}

// Fail tells the old process why not, and gives everything up.
func (h *Heir) Fail(err error) {
	h.link.send(msgError, []byte(err.Error()), nil)
	closeFDs(h.fds)
	h.fds = nil
	h.early.drop()
	h.link.close()
}

// Confirm tells the old process the server is built, and waits for its go,
// which it returns with the time it arrived. An error means the old process
// goes on serving: this one must exit without touching anything it was
// handed.
func (h *Heir) Confirm() ([]byte, time.Time, error) {
	defer h.link.close()
	if err := h.link.send(msgConfirm, nil, nil); err != nil {
		return nil, time.Time{}, err
	}
	goMsg, err := expect(h.link, msgGo, time.Time{})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("the old process kept serving: %w", err)
	}
	return goMsg, time.Now(), nil
}
