package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// pidfile is a file holding our pid, flock'ed for as long as we run, so that a
// second daemon with the same pidfile refuses to start.
type pidfile struct {
	f    *os.File
	path string
}

func lockPidfile(path string) (*pidfile, error) {
	// O_NOFOLLOW: a link planted at the path by whoever can write its
	// directory would have the daemon truncate any file, or create one.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("pidfile %s is a symbolic link: refusing to follow it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("pidfile: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("pidfile %s is not a regular file", path)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			owner := make([]byte, 32)
			n, _ := f.ReadAt(owner, 0)
			return nil, fmt.Errorf("pidfile %s is locked: another glockd (pid %s) is running", path, strings.TrimSpace(string(owner[:n])))
		}
		return nil, fmt.Errorf("pidfile %s: flock: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfile: %w", err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfile: %w", err)
	}
	return &pidfile{f: f, path: path}, nil
}

// remove deletes the file while still holding the lock, so that no other
// daemon can lock the path in between and lose its file to us.
func (p *pidfile) remove() {
	os.Remove(p.path)
	p.f.Close()
}
