package client_test

import (
	"fmt"
	"os"
	"testing"
)

// glockdAddr is the address of the fake server the examples talk to; a
// program would use its glockd's, such as "127.0.0.1:9999".
var glockdAddr string

func TestMain(m *testing.M) {
	srv, err := newFake()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	glockdAddr = srv.addr()
	code := m.Run()
	srv.close()
	os.Exit(code)
}
