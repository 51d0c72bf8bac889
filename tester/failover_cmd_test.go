package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRunFailoverFlags: mistakes in the flags end the run before anything
// is started, with exit status 2 and a message naming the mistake. (The
// checker itself is tested in tester/failover, with etcd.)
func TestRunFailoverFlags(t *testing.T) {
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"-faults", "kill,flood"}, `fault "flood": want one of kill, pause, etcd, restart`},
		{[]string{"-faults", "etcd", "-etcd-members", "1"}, "the etcd fault needs -etcd-members 3 or more"},
		{[]string{"-lease-ttl", "1500ms"}, "-lease-ttl 1.5s: want whole seconds"},
		{[]string{"-nodes", "1"}, "-nodes 1: want at least 2"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		status := run(context.Background(), append([]string{"failover"}, tt.args...), &stdout, &stderr)
		if status != 2 || !strings.Contains(stderr.String(), tt.err) {
			t.Errorf("failover %q: status %d, stderr %q; want 2 and %q", tt.args, status, stderr.String(), tt.err)
		}
	}
}
