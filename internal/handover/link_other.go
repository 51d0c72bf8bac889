//go:build !linux

package main

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// Hand-overs (upgrade.go) are built on Linux only: elsewhere SIGUSR2 is
// logged as failed and the process serves on.

var errNoHandover = errors.New("hand-overs to a new binary are supported on Linux only")

type handoverLink struct{}

const (
	handoverMaxMessage = 60 << 10
	handoverMaxFDs     = 200
)

func newHandoverPair() (*handoverLink, *os.File, error) { return nil, nil, errNoHandover }

func openHandoverLink(int) (*handoverLink, error) { return nil, errNoHandover }

func (*handoverLink) close() error { return nil }

func (*handoverLink) send(byte, []byte, []int) error { return errNoHandover }

func (*handoverLink) receive(time.Time) (byte, []byte, []int, error) {
	return 0, nil, nil, errNoHandover
}

func closeFDs([]int) {}

func rawFD(syscall.Conn) (int, error) { return -1, errNoHandover }
