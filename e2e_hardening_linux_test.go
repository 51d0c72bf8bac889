package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestUnixSocketNeverWider: the socket file must never exist at its path
// with wider permissions than -unix-mode, not even for a moment. A socket
// that bind(2) creates at its path and that is chmod'ed afterwards has the
// umask's mode in between, long enough for another user to connect; so
// the socket must appear at its path whole, by a rename: inotify sees
// neither a create nor an attribute change under its name.
func TestUnixSocketNeverWider(t *testing.T) {
	dir := t.TempDir()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Skipf("inotify: %v", err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE|syscall.IN_ATTRIB|syscall.IN_MOVED_TO); err != nil {
		t.Skipf("inotify: %v", err)
	}
	path := filepath.Join(dir, "g.sock")
	srv := startServer(t, func(c *Config) { c.UnixPath, c.UnixMode = path, 0o600 })
	dial(t, srv, "unix").expect("ping", "1 pong\n")

	buf := make([]byte, 64<<10)
	n, err := syscall.Read(fd, buf)
	if err != nil {
		t.Fatalf("inotify read: %v", err)
	}
	movedIn := false
	for events := buf[:n]; len(events) >= syscall.SizeofInotifyEvent; {
		mask := binary.NativeEndian.Uint32(events[4:8])
		nameLen := int(binary.NativeEndian.Uint32(events[12:16]))
		name := string(bytes.TrimRight(events[syscall.SizeofInotifyEvent:syscall.SizeofInotifyEvent+nameLen], "\x00"))
		events = events[syscall.SizeofInotifyEvent+nameLen:]
		if name != "g.sock" {
			continue
		}
		if mask&(syscall.IN_CREATE|syscall.IN_ATTRIB) != 0 {
			t.Errorf("inotify event %#x on the socket's path: it was created or changed there, so it existed with other permissions first", mask)
		}
		if mask&syscall.IN_MOVED_TO != 0 {
			movedIn = true
		}
	}
	if !movedIn {
		t.Error("the socket did not appear at its path by a rename")
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v (%v), want a socket with 0600", fi.Mode(), err)
	}
	// Nothing else is left in the directory, and closing removes the socket.
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("directory holds %v", entries)
	}
	srv.Close()
	if _, err := os.Lstat(path); err == nil {
		t.Fatal("socket file left after Close")
	}
}
