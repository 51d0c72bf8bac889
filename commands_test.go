package main

import (
	"strings"
	"testing"

	"github.com/glockd/glockd/internal/proto"
)

// TestVerbTable: proto.LookupVerb finds every word of the command table, each verb
// has a handler in runCommand, and q lists the original counters from
// start-up and no out-of-band verb.
func TestVerbTable(t *testing.T) {
	seen := map[string]bool{}
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		word := v.String()
		if word == "" || seen[word] {
			t.Fatalf("verb %d: word %q empty or used twice", v, word)
		}
		seen[word] = true
		if got := proto.LookupVerb([]byte(word)); got != v {
			t.Errorf("proto.LookupVerb(%q) = %v, want %v", word, got, v)
		}
		if got := proto.LookupVerb([]byte(strings.ToUpper(word))); got != proto.VerbInvalid && word != strings.ToUpper(word) {
			t.Errorf("proto.LookupVerb(%q) = %v: command words are lower case", strings.ToUpper(word), got)
		}
	}
	for _, word := range []string{"", "(invalid)", "(too long)", "G", "gg", "ping!", "!"} {
		if got := proto.LookupVerb([]byte(word)); got != proto.VerbInvalid {
			t.Errorf("proto.LookupVerb(%q) = %v, want none", word, got)
		}
	}

	// Every verb is dispatched: runCommand panics on one without a handler.
	m := newManager(Config{Registry: true, Dump: true, MaxLocksPerConn: DefaultMaxLocksPerConn})
	c := newConnState("127.0.0.1:1", "tcp")
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		b := benchBatch(v.String() + " name")
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: %v", v, r)
				}
			}()
			m.runBatch(c, b)
		}()
		for b.dump != nil && !b.dump.done() {
			m.copyStep(b.dump)
		}
		select {
		case <-c.done:
		default:
		}
		select {
		case <-c.grants:
		default:
		}
		if c.waiter != nil {
			m.unqueue(c.waiter)
		}
	}

	q := string(newManager(Config{}).appendStats(nil))
	for v := proto.VerbG; v < proto.NumVerbs; v++ {
		listed := strings.Contains(q, "command_"+v.String()+":")
		if listed != v.Original() {
			t.Errorf("q from start-up lists command_%s: %v, want %v", v, listed, v.Original())
		}
	}
}
