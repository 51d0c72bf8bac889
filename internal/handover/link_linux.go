//go:build linux

package handover

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// link is one end of the unix socket pair between an old process and
// the new one during a hand-over. It is a SOCK_SEQPACKET socket:
// each message keeps its boundaries and carries the descriptors sent with it,
// so that no descriptor can end up attached to the wrong bytes.
type link struct {
	f *os.File
}

const (
	// maxMessage is the largest message on the link: the state is
	// sent in chunks of this size.
	maxMessage = 60 << 10
	// maxFDs is how many descriptors go in one message, under the
	// kernel's SCM_MAX_FD of 253.
	maxFDs = 200
)

// newPair makes the socket pair: ours, and the child's, to pass to it
// as an inherited file.
func newPair() (ours *link, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	// A new process that stops reading must not block the old one for
	// ever: a send that cannot go on for this long fails the hand-over.
	tv := unix.NsecToTimeval(int64(10 * time.Second))
	if err := unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return &link{f: os.NewFile(uintptr(fds[0]), "handover")}, os.NewFile(uintptr(fds[1]), "handover-child"), nil
}

// openLink is the child's end, inherited as descriptor fd.
func openLink(fd int) (*link, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("hand-over descriptor %d: %w", fd, err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return nil, fmt.Errorf("hand-over descriptor %d is not a SOCK_SEQPACKET socket", fd)
	}
	unix.CloseOnExec(fd)
	return &link{f: os.NewFile(uintptr(fd), "handover")}, nil
}

func (l *link) close() error { return l.f.Close() }

// send writes one message of kind with payload and, attached, fds.
func (l *link) send(kind byte, payload []byte, fds []int) error {
	msg := append([]byte{kind}, payload...)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for {
			serr = unix.Sendmsg(int(fd), msg, oob, nil, 0)
			if serr != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// errLinkClosed is the other process's end of the link closing.
var errLinkClosed = errors.New("the other process closed the hand-over link")

// receive reads one message, waiting at most until deadline (zero: for
// ever), and returns its kind, payload and descriptors.
func (l *link) receive(deadline time.Time) (kind byte, payload []byte, fds []int, err error) {
	buf := make([]byte, maxMessage+1)
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	fd := int(l.f.Fd()) // blocking mode: poll first, for the deadline
	for {
		wait := -1
		if !deadline.IsZero() {
			wait = int(time.Until(deadline).Milliseconds())
			if wait <= 0 {
				return 0, nil, nil, errors.New("timed out")
			}
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, wait)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, nil, nil, err
		}
		if n == 0 {
			continue
		}
		break
	}
	var n, oobn int
	for {
		n, oobn, _, _, err = unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, nil, nil, err
	}
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return 0, nil, nil, err
		}
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err != nil {
				return 0, nil, nil, err
			}
			fds = append(fds, got...)
		}
	}
	if n == 0 {
		closeFDs(fds)
		return 0, nil, nil, errLinkClosed
	}
	return buf[0], buf[1:n], fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// RawFD returns the descriptor behind a listener or connection, which stays
// its owner's: it is sent as it is (sendmsg takes its own reference), never
// duplicated, since a process with as many connections as its limit on open
// files allows could not hold a second descriptor for each.
func RawFD(sc syscall.Conn) (int, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}
