package main

import (
	"fmt"
	"strings"
	"testing"
)

// step is one line of a transcript: client `who` sends cmd and must get
// want, in which {0}, {1}, … stand for the clients' connection names.
type step struct {
	who  int
	cmd  string
	want string
}

func runTranscript(t *testing.T, transport string, clients int, steps []step) {
	srv := startServer(t, nil)
	cs := make([]*client, clients)
	for i := range cs {
		cs[i] = dial(t, srv, transport)
	}
	for _, s := range steps {
		want := s.want
		for i, c := range cs {
			want = strings.ReplaceAll(want, fmt.Sprintf("{%d}", i), c.name)
		}
		cs[s.who].expect(s.cmd, want)
	}
}

func TestExclusiveLocks(t *testing.T) {
	steps := []step{
		{0, "i foo", "0 Lock Not Locked: foo\n"},
		{0, "g foo", "1 Lock Get Success: foo\n"},
		{0, "g foo", "1 Lock Get Success: foo\n"}, // re-entrant for the holder
		{1, "g foo", "0 Lock Get Failure: foo\n"},
		{1, "i foo", "1 Lock Is Locked: foo\n"},
		{1, "r foo", "0 Lock Release Failure: foo\n"}, // only the holder releases
		{1, "r nothing", "0 Lock Release Failure: nothing\n"},
		{0, "r foo", "1 Lock Release Success: foo\n"},
		{0, "r foo", "0 Lock Release Failure: foo\n"},
		{1, "g foo", "1 Lock Get Success: foo\n"},
		{0, "i foo", "1 Lock Is Locked: foo\n"},
		// The argument is normalised; the empty name is a name.
		{0, "g   a \t b  ", "1 Lock Get Success: a b\n"},
		{1, "i a b", "1 Lock Is Locked: a b\n"},
		{0, "g", "1 Lock Get Success: \n"},
		{1, "g ", "0 Lock Get Failure: \n"},
		{0, "\t g\tx", "1 Lock Get Success: x\n"},
		{0, "g \u00a0ü\u2003ß ", "1 Lock Get Success: ü ß\n"},
		{0, "g bin\x00\xff\xfe", "1 Lock Get Success: bin\x00\xff\xfe\n"},
		{1, "g foo\r", "1 Lock Get Success: foo\n"},
		// Shared locks are another namespace.
		{0, "si foo", "0 Shared Lock Not Locked: foo\n"},
		{0, "sg foo", "1 Shared Lock Get Success: foo\n"},
		{1, "i foo", "1 Lock Is Locked: foo\n"},
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { runTranscript(t, tr, 2, steps) })
	}
}

func TestSharedLocks(t *testing.T) {
	steps := []step{
		{2, "si foo", "0 Shared Lock Not Locked: foo\n"},
		{0, "sg foo", "1 Shared Lock Get Success: foo\n"},
		{1, "sg foo", "2 Shared Lock Get Success: foo\n"},
		{1, "sg foo", "2 Shared Lock Get Success: foo\n"}, // not counted twice
		{1, "sg bar", "1 Shared Lock Get Success: bar\n"},
		{2, "si foo", "2 Shared Lock Is Locked: foo\n"},
		{2, "sr foo", "0 Shared Lock Release Failure: foo\n"},
		{0, "sr foo", "1 Shared Lock Release Success: foo\n"},
		{0, "sr foo", "0 Shared Lock Release Failure: foo\n"},
		{2, "si foo", "1 Shared Lock Is Locked: foo\n"},
		{1, "sr foo", "1 Shared Lock Release Success: foo\n"},
		{2, "si foo", "0 Shared Lock Not Locked: foo\n"},
		{2, "i bar", "0 Lock Not Locked: bar\n"},
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { runTranscript(t, tr, 3, steps) })
	}
}

func TestRegistryAndDumps(t *testing.T) {
	steps := []step{
		{0, "me", "1 {0} {0}\n"},
		{0, "who", ""},
		{0, "d", ""},
		{0, "sd", ""},
		{0, "dump", "map[]\n"},
		{0, "dump shared", "map[]\n"},
		{0, "g zeta", "1 Lock Get Success: zeta\n"},
		{1, "g alpha", "1 Lock Get Success: alpha\n"},
		{0, "g mid", "1 Lock Get Success: mid\n"},
		{0, "d", "alpha: {1}\nmid: {0}\nzeta: {0}\n"},
		{0, "d mid", "mid: {0}\n"},
		{0, "d none", ""},
		{0, "dump", "map[alpha:{1} mid:{0} zeta:{0}]\n"},
		{0, "dump anything", "map[alpha:{1} mid:{0} zeta:{0}]\n"},
		{0, "iam worker one", "1 ok\n"},
		{0, "me", "1 {0} worker one\n"},
		{1, "d", "alpha: {1}\nmid: worker one\nzeta: worker one\n"},
		{1, "dump", "map[alpha:{1} mid:{0} zeta:{0}]\n"}, // connection names, not registered ones
		{1, "iam other", "1 ok\n"},
		{0, "who", "{0}: worker one\n{1}: other\n"},
		{0, "iam again", "1 ok\n"}, // re-registering moves to the end
		{0, "who", "{1}: other\n{0}: again\n"},
		{0, "who other", "{1}: other\n"},
		{0, "who nobody", ""},
		{1, "iam", "1 ok\n"},
		{1, "me", "1 {1} {1}\n"},
		{0, "who", "{0}: again\n"},
		{1, "sg s2", "1 Shared Lock Get Success: s2\n"},
		{0, "sg s2", "2 Shared Lock Get Success: s2\n"},
		{0, "sg s1", "1 Shared Lock Get Success: s1\n"},
		{0, "sd", "s1: again\ns2: {1}\ns2: again\n"},
		{0, "sd s2", "s2: {1}\ns2: again\n"},
		{0, "dump shared", "map[s1:[{0}] s2:[{1} {0}]]\n"},
	}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { runTranscript(t, tr, 2, steps) })
	}
}

func TestDisabledModes(t *testing.T) {
	tests := []struct {
		registry, dump bool
		steps          []step
	}{
		{false, true, []step{
			{0, "iam x", "0 disabled\n"},
			{0, "me", "1 {0} {0}\n"},
			{0, "who", "0 disabled\n"},
			{0, "g a", "1 Lock Get Success: a\n"},
			{0, "d", "a: {0}\n"},
			{0, "sg b", "1 Shared Lock Get Success: b\n"},
			{0, "sd", "b: {0}\n"},
		}},
		{true, false, []step{
			{0, "iam x", "1 ok\n"},
			{0, "me", "1 {0} x\n"},
			{0, "who", "0 disabled\n"},
			{0, "d", "0 disabled\n"},
			{0, "sd", "0 disabled\n"},
			{0, "dump", "0 disabled\n"},
			{0, "dump shared", "0 disabled\n"},
		}},
		{false, false, []step{
			{0, "iam x", "0 disabled\n"},
			{0, "who", "0 disabled\n"},
			{0, "d", "0 disabled\n"},
		}},
	}
	for _, tt := range tests {
		for _, tr := range transports {
			t.Run(fmt.Sprintf("registry=%v,dump=%v/%s", tt.registry, tt.dump, tr), func(t *testing.T) {
				srv := startServer(t, func(c *Config) { c.Registry, c.Dump = tt.registry, tt.dump })
				c := dial(t, srv, tr)
				for _, s := range tt.steps {
					c.expect(s.cmd, strings.ReplaceAll(s.want, "{0}", c.name))
				}
			})
		}
	}
}

func TestUnknownCommandsAreSilent(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			srv := startServer(t, nil)
			c := dial(t, srv, tr)
			for _, cmd := range []string{"xx", "", "   ", "G foo", "gfoo", "stats", "g\u00a0foo", "\x00"} {
				c.expect(cmd, "")
			}
			if n := c.stat("invalid_commands"); n != 8 {
				t.Fatalf("invalid_commands = %d, want 8", n)
			}
		})
	}
}

// TestStatsKeys checks q's keys: the original's 16 until another command is
// used, then that command's counter too.
func TestStatsKeys(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, "websocket") // no fence commands: counts are exact
	original := "command_d: 0\ncommand_dump: 0\ncommand_g: 0\ncommand_i: 0\ncommand_q: 1\n" +
		"command_r: 0\ncommand_sd: 0\ncommand_sg: 0\ncommand_si: 0\ncommand_sr: 0\n" +
		"connections: 1\ninvalid_commands: 0\nlocks: 0\norphans: 0\nshared_locks: 0\nshared_orphans: 0\n"
	// dial sent "me", which shows up; a fresh raw websocket would not.
	withMe := strings.Replace(original, "command_i: 0\n", "command_i: 0\ncommand_me: 1\n", 1)
	c.expect("q", withMe)
	c.expect("g a", "1 Lock Get Success: a\n")
	c.expect("sg b", "1 Shared Lock Get Success: b\n")
	c.expect("ping", "1 pong\n")
	c.expect("bogus", "")
	want := "command_d: 0\ncommand_dump: 0\ncommand_g: 1\ncommand_i: 0\ncommand_me: 1\ncommand_ping: 1\ncommand_q: 2\n" +
		"command_r: 0\ncommand_sd: 0\ncommand_sg: 1\ncommand_si: 0\ncommand_sr: 0\n" +
		"connections: 1\ninvalid_commands: 1\nlocks: 1\norphans: 0\nshared_locks: 1\nshared_orphans: 0\n"
	c.expect("q", want)
}

func TestStatsFromStartUp(t *testing.T) {
	srv := startServer(t, nil)
	c := dial(t, srv, "tcp")
	other := dial(t, srv, "unix")
	_ = other
	// The test client's own "me" and fences are counted; nothing else is.
	lines := strings.Split(strings.TrimSuffix(c.do("q"), "\n"), "\n")
	keys := make([]string, len(lines))
	for i, l := range lines {
		keys[i], _, _ = strings.Cut(l, ": ")
	}
	want := "command_d command_dump command_g command_i command_me command_q command_r command_sd command_sg command_si command_sr connections invalid_commands locks orphans shared_locks shared_orphans"
	if got := strings.Join(keys, " "); got != want {
		t.Fatalf("q keys:\n got %s\nwant %s", got, want)
	}
	if n := c.stat("connections"); n != 2 {
		t.Fatalf("connections = %d, want 2", n)
	}
}
