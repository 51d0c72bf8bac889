package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ListenUnix listens on path, replacing a socket file left by a daemon that
// died, but never one that a live daemon still answers on, nor a file that
// is not a socket.
//
// bind(2) creates the socket file with the process's umask; a chmod after
// it would leave a moment in which others may connect. The umask cannot be
// changed for one bind (it is the whole process's, and two servers may
// start at once), so the socket is bound in a private directory (0700:
// nobody else reaches it there), given its mode, and renamed into place,
// which rename(2) does atomically.
func ListenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		probe, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			probe.Close()
			return nil, fmt.Errorf("%s is in use by a running daemon", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s: cannot tell whether it is in use: %w", path, err)
		}
		// A stale socket: the rename below replaces it.
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".glockd")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	private := filepath.Join(dir, "s")
	l, err := net.Listen("unix", private)
	if err != nil {
		return nil, fmt.Errorf("%w (the socket is bound first as %s, %d bytes longer than the path)", err, private, len(private)-len(path))
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // its name changes; unixListener removes it
	if err := os.Chmod(private, mode); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Rename(private, path); err != nil {
		l.Close()
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		l.Close()
		return nil, err
	}
	return &unixListener{UnixListener: ul, path: path, file: fi}, nil
}

// unixListener is a unix socket bound under another name and renamed to
// path; closing it removes path, if the file there is still this socket.
type unixListener struct {
	*net.UnixListener
	path string
	file os.FileInfo
}

func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.file) {
		os.Remove(l.path)
	}
	return l.UnixListener.Close()
}

// AdoptUnix wraps a unix listener handed over from the old process, bound at
// path, so that closing it removes path as ListenUnix's does, if the file
// there is still this socket.
func AdoptUnix(ul *net.UnixListener, path string) (net.Listener, error) {
	ul.SetUnlinkOnClose(false) // unixListener removes the path, if still its own
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	return &unixListener{UnixListener: ul, path: path, file: fi}, nil
}

// RawListener is the listener under l's wrappers: what has the descriptor.
func RawListener(l net.Listener) net.Listener {
	if ul, ok := l.(*unixListener); ok {
		return ul.UnixListener
	}
	return l
}
