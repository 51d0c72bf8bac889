package ha

import (
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/internal/tokens"
)

func TestFinish(t *testing.T) {
	for _, tt := range []struct {
		name          string
		etcd          string
		set           []string
		edit          func(*Config)
		metrics, addr string
		err           string // "" for success
	}{
		{name: "no etcd, ha flag", set: []string{"lease-ttl"}, err: "-lease-ttl needs -etcd"},
		{name: "no endpoint", etcd: " , ", metrics: ":0", addr: ":7000", err: "no endpoint"},
		{name: "relative prefix", etcd: "e", edit: func(c *Config) { c.Prefix = "glockd" }, metrics: ":0", addr: ":7000", err: "starting with /"},
		{name: "half a second", etcd: "e", edit: func(c *Config) { c.LeaseTTL = 1500 * time.Millisecond }, metrics: ":0", addr: ":7000", err: "whole seconds"},
		{name: "negative delay", etcd: "e", edit: func(c *Config) { c.TakeoverDelay = -1 }, metrics: ":0", addr: ":7000", err: "0 or more"},
		{name: "cert without key", etcd: "e", edit: func(c *Config) { c.CertFile = "c.pem" }, metrics: ":0", addr: ":7000", err: "go together"},
		{name: "no metrics", etcd: "e", addr: ":7000", err: "-metrics-addr"},
		{name: "no tcp, no advertise", etcd: "e", metrics: ":0", err: "needs -advertise"},
		{name: "bad advertise", etcd: "e", edit: func(c *Config) { c.Advertise = "nohostport" }, metrics: ":0", addr: ":7000", err: "-advertise"},
		{name: "ok", etcd: "e1, e2", metrics: ":0", addr: "10.1.2.3:7000"},
	} {
		c := &Config{Prefix: "/glockd/x", LeaseTTL: DefaultLeaseTTL, TakeoverDelay: DefaultTakeoverDelay}
		if tt.edit != nil {
			tt.edit(c)
		}
		set := map[string]bool{}
		for _, f := range tt.set {
			set[f] = true
		}
		got, err := c.Finish(tt.etcd, set, tt.metrics, tt.addr)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.err == "" && (got == nil || got.Prefix != "/glockd/x/" || got.Advertise != "10.1.2.3:7000" || strings.Join(got.Endpoints, ",") != "e1,e2"):
			t.Errorf("%s: %+v", tt.name, got)
		}
	}
	if got, err := (&Config{}).Finish("", nil, "", ""); got != nil || err != nil {
		t.Errorf("no -etcd: %+v, %v", got, err)
	}
}

// TestTermDeadline: a renewal moves the deadline forward only, and a term
// whose deadline passed stays over even if a late renewal comes.
func TestTermDeadline(t *testing.T) {
	l := NewLeadership()
	tm := NewTerm(l, tokens.Block{Start: 1, End: 2}, time.Now().Add(time.Hour))
	if !tm.Valid() || tm.Ended() {
		t.Fatal("a new term is not valid")
	}
	before := tm.Deadline()
	if !tm.extend(time.Now().Add(-2*time.Hour), 5*time.Second) || !tm.Deadline().Equal(before) {
		t.Fatalf("an old renewal moved the deadline from %v to %v", before, tm.Deadline())
	}
	if !tm.extend(time.Now().Add(time.Hour), 5*time.Second) || !tm.Deadline().After(before) {
		t.Fatal("a renewal did not move the deadline")
	}
	tm.SetDeadline(time.Now().Add(-time.Millisecond))
	if tm.Valid() || tm.extend(time.Now(), time.Hour) || tm.Valid() {
		t.Fatal("a lapsed term was revived")
	}
	tm.End("first")
	tm.End("second")
	if !tm.Ended() || tm.reason != "first" {
		t.Fatalf("ended %v, reason %q", tm.Ended(), tm.reason)
	}
}
