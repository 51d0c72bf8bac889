package main

import (
	"net"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
)

// TestIdleConnStack guards the idle-stack rule (docs/design.md, "The
// idle-stack rule"): a connection that has run a command and waits for the
// next keeps its goroutine on the smallest stack, 2 KiB, most of an idle
// connection's 6 KiB budget. Its goroutine's deepest path, from the read
// through the manager to the write of the reply, must fit in that stack; a
// few more frames or bigger locals on it double the stack of every
// connection. CI runs it without -race (scripts/test.sh).
func TestIdleConnStack(t *testing.T) {
	if raceBuild() {
		t.Skip("the race detector doubles the stack guard: stacks are bigger")
	}
	srv, err := NewServer(Config{TCPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const n = 500
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	buf := make([]byte, 256)
	for i := range n {
		nc, err := net.Dial("tcp", srv.TCPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		for _, cmd := range []string{"g h" + strconv.Itoa(i), "sg s", "t h" + strconv.Itoa(i)} {
			if _, err := nc.Write([]byte(cmd + "\n")); err != nil {
				t.Fatal(err)
			}
			if _, err := nc.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	runtime.ReadMemStats(&after)
	perConn := (int64(after.StackInuse) - int64(before.StackInuse)) / n
	t.Logf("goroutine stack per idle connection: %d bytes", perConn)
	if perConn > 3<<10 {
		t.Errorf("goroutine stack per idle connection: %d bytes, want at most 3 KiB (2 KiB stacks; 4 KiB means they doubled)", perConn)
	}
}

// raceBuild reports whether the test binary was built with -race.
func raceBuild() bool {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "-race" && s.Value == "true" {
				return true
			}
		}
	}
	return false
}
