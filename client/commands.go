package client

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// LockOwner is one line of a d or sd reply: a lock and one of its holders.
type LockOwner struct {
	Lock  string
	Owner string // the holder's registered name, or its connection name
}

// Registration is one line of a who reply.
type Registration struct {
	Conn string // the connection name
	Name string // the name it registered with iam
}

// Identity is the reply to me.
type Identity struct {
	Conn string // the connection name: IP:PORT, or unix:N
	Name string // the registered name, or Conn when there is none
}

func getCmd(name string) command[bool] {
	return flagCommand("g", name, getSuccess, getFailure)
}

func releaseCmd(name string) command[bool] {
	return flagCommand("r", name, releaseSuccess, releaseFailure)
}

func inspectCmd(name string) command[bool] {
	return flagCommand("i", name, isLocked, notLocked)
}

func sharedGetCmd(name string) command[int] {
	return asInt(countCommand("sg", name, sharedGetSuccess, ""))
}

func sharedReleaseCmd(name string) command[bool] {
	return flagCommand("sr", name, sharedReleaseSuccess, sharedReleaseFailure)
}

func sharedInspectCmd(name string) command[int] {
	return asInt(countCommand("si", name, sharedIsLocked, sharedNotLocked))
}

// asInt converts a holder count, which never comes near the limits of int.
func asInt(cmd command[uint64]) command[int] {
	return command[int]{line: cmd.line, wait: cmd.wait, name: cmd.name, err: cmd.err, parse: func(lines []string) (int, error) {
		n, err := cmd.parse(lines)
		return int(n), err
	}}
}

func meCmd() command[Identity] {
	cmd := command[Identity]{line: "me"}
	cmd.parse = func(lines []string) (Identity, error) {
		line, ok := single(lines)
		if rest, found := strings.CutPrefix(line, "1 "); ok && found {
			// A connection name holds no space; a registered name may.
			conn, name, found := strings.Cut(rest, " ")
			if found && conn != "" && name != "" {
				return Identity{Conn: conn, Name: name}, nil
			}
		}
		return Identity{}, cmd.replyError(lines)
	}
	return cmd
}

func iamCmd(name string) command[struct{}] {
	return exactCommand(withArg("iam", name), "1 ok", true)
}

func whoCmd(name string) command[[]Registration] {
	cmd, norm := nameCommand[[]Registration]("who", name)
	cmd.multi = true
	cmd.parse = func(lines []string) ([]Registration, error) {
		if isDisabled(lines) {
			return nil, fmt.Errorf("%s: %w", cmd.line, ErrDisabled)
		}
		regs := make([]Registration, 0, len(lines))
		for _, l := range lines {
			// A connection name holds no ": "; a registered name may.
			conn, reg, ok := strings.Cut(l, ": ")
			if !ok || conn == "" || reg == "" || norm != "" && reg != norm {
				return nil, cmd.replyError(lines)
			}
			regs = append(regs, Registration{Conn: conn, Name: reg})
		}
		return regs, nil
	}
	return cmd
}

// debugCmd is d or sd. Without a name, a line is split at its first ": ",
// which is wrong for a lock name that holds ": " itself; with a name, the
// line must start with that name.
func debugCmd(verb, name string) command[[]LockOwner] {
	cmd, norm := nameCommand[[]LockOwner](verb, name)
	cmd.multi = true
	cmd.parse = func(lines []string) ([]LockOwner, error) {
		if isDisabled(lines) {
			return nil, fmt.Errorf("%s: %w", cmd.line, ErrDisabled)
		}
		entries := make([]LockOwner, 0, len(lines))
		for _, l := range lines {
			var lock, owner string
			var ok bool
			if norm != "" {
				lock = norm
				owner, ok = strings.CutPrefix(l, norm+": ")
			} else {
				lock, owner, ok = strings.Cut(l, ": ")
			}
			if !ok || owner == "" {
				return nil, cmd.replyError(lines)
			}
			entries = append(entries, LockOwner{Lock: lock, Owner: owner})
		}
		return entries, nil
	}
	return cmd
}

// LockDetail is one line of a dl reply: an exclusive lock, or one holder of
// a shared lock.
type LockDetail struct {
	Lock    string
	Owner   string        // the holder's registered name, or its connection name
	Shared  bool          // a holder of a shared lock
	Token   uint64        // exclusive: the holder's fencing token
	Held    time.Duration // how long it has been held, to the millisecond
	Holders int           // shared: how many hold the lock
	Waiters int           // connections queued for it with gw (exclusive) or sgw (shared)
}

// detailCmd is dl: "LOCK: OWNER token=T held_ms=MS waiters=W" or
// "LOCK: OWNER shared held_ms=MS holders=N waiters=W". An owner may hold
// spaces, so the fields are read from the end of the line.
func detailCmd(name string) command[[]LockDetail] {
	cmd, norm := nameCommand[[]LockDetail]("dl", name)
	cmd.multi = true
	cmd.parse = func(lines []string) ([]LockDetail, error) {
		if isDisabled(lines) {
			return nil, fmt.Errorf("%s: %w", cmd.line, ErrDisabled)
		}
		details := make([]LockDetail, 0, len(lines))
		for _, l := range lines {
			var lock, rest string
			var ok bool
			if norm != "" {
				lock = norm
				rest, ok = strings.CutPrefix(l, norm+": ")
			} else {
				lock, rest, ok = strings.Cut(l, ": ")
			}
			d, good := parseDetail(rest)
			if !ok || !good {
				return nil, cmd.replyError(lines)
			}
			d.Lock = lock
			details = append(details, d)
		}
		return details, nil
	}
	return cmd
}

// parseDetail reads what follows "LOCK: " in a dl line.
func parseDetail(rest string) (LockDetail, bool) {
	f := strings.Split(rest, " ")
	field := func(i int, key string) (uint64, bool) {
		if len(f) < i {
			return 0, false
		}
		v, ok := strings.CutPrefix(f[len(f)-i], key+"=")
		if !ok {
			return 0, false
		}
		n, err := strconv.ParseUint(v, 10, 64)
		return n, err == nil
	}
	var d LockDetail
	waiters, ok1 := field(1, "waiters")
	d.Waiters = int(waiters)
	var owner []string
	if len(f) >= 5 && f[len(f)-4] == "shared" {
		holders, ok2 := field(2, "holders")
		held, ok3 := field(3, "held_ms")
		d.Shared, d.Holders, d.Held, owner = true, int(holders), time.Duration(held)*time.Millisecond, f[:len(f)-4]
		d.Owner = strings.Join(owner, " ")
		return d, ok1 && ok2 && ok3 && d.Owner != ""
	}
	held, ok2 := field(2, "held_ms")
	token, ok3 := field(3, "token")
	if len(f) < 4 {
		return d, false
	}
	d.Held, d.Token, owner = time.Duration(held)*time.Millisecond, token, f[:len(f)-3]
	d.Owner = strings.Join(owner, " ")
	return d, ok1 && ok2 && ok3 && d.Owner != ""
}

func dumpCmd(line string) command[string] {
	cmd := command[string]{line: line}
	cmd.parse = func(lines []string) (string, error) {
		l, ok := single(lines)
		switch {
		case ok && l == disabled:
			return "", fmt.Errorf("%s: %w", cmd.line, ErrDisabled)
		case ok && strings.HasPrefix(l, "map[") && strings.HasSuffix(l, "]"):
			return l, nil
		}
		return "", cmd.replyError(lines)
	}
	return cmd
}

func statsCmd() command[map[string]int64] {
	cmd := command[map[string]int64]{line: "q", multi: true}
	cmd.parse = func(lines []string) (map[string]int64, error) {
		stats := make(map[string]int64, len(lines))
		for _, l := range lines {
			key, val, ok := strings.Cut(l, ": ")
			n, isNum := parseCount(val)
			if _, dup := stats[key]; !ok || key == "" || !isNum || dup || int64(n) < 0 {
				return nil, cmd.replyError(lines)
			}
			stats[key] = int64(n)
		}
		if len(stats) == 0 {
			return nil, cmd.replyError(lines)
		}
		return stats, nil
	}
	return cmd
}

// rawWait tells a raw gw or sgw line apart, so that it is sent and
// cancelled as a wait.
func rawWait(line string) (name string, wait bool) {
	f := strings.Fields(line)
	switch {
	case len(f) >= 2 && f[0] == "gw":
		return strings.Join(f[2:], " "), true
	case len(f) >= 3 && f[0] == "sgw":
		return strings.Join(f[3:], " "), true
	}
	return "", false
}

// rawCmd is any command whose reply is one line, returned unchecked.
func rawCmd(line string) command[string] {
	cmd := command[string]{line: line, err: checkLine(line)}
	cmd.name, cmd.wait = rawWait(line)
	cmd.parse = func(lines []string) (string, error) {
		if l, ok := single(lines); ok {
			return l, nil
		}
		return "", cmd.replyError(lines)
	}
	return cmd
}

// rawLinesCmd is any command whose reply may span lines, returned unchecked.
func rawLinesCmd(line string) command[[]string] {
	name, wait := rawWait(line)
	return command[[]string]{line: line, multi: true, wait: wait, name: name, err: checkLine(line),
		parse: func(lines []string) ([]string, error) {
			return append([]string{}, lines...), nil
		}}
}
