//go:build linux

package transport

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawRead and rawWrite are read(2) and write(2) on a non-blocking socket,
// called from a RawConn callback. They skip the scheduler's syscall
// bookkeeping (syscall.Read tells the runtime it may block, and the sysmon
// thread then hands the goroutine's P to another thread when the call takes
// over 20µs, as a loopback write can): such a call never blocks, and on a
// busy machine with few cores that hand-off cost more than the call itself.
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}
