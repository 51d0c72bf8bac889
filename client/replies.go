package client

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// The texts of the replies, each followed by the lock name.
const (
	getSuccess     = "1 Lock Get Success: "
	getFailure     = "0 Lock Get Failure: "
	getTimeout     = "0 Lock Get Timeout: "
	getDeadlock    = "0 Lock Get Deadlock: "
	releaseSuccess = "1 Lock Release Success: "
	releaseFailure = "0 Lock Release Failure: "
	isLocked       = "1 Lock Is Locked: "
	notLocked      = "0 Lock Not Locked: "

	// After a holder count.
	sharedGetSuccess = " Shared Lock Get Success: "
	sharedIsLocked   = " Shared Lock Is Locked: "
	tokenText        = " Lock Token: "

	sharedGetTimeout     = "0 Shared Lock Get Timeout: "
	sharedGetDeadlock    = "0 Shared Lock Get Deadlock: "
	sharedReleaseSuccess = "1 Shared Lock Release Success: "
	sharedReleaseFailure = "0 Shared Lock Release Failure: "
	sharedNotLocked      = "0 Shared Lock Not Locked: "

	disabled = "0 disabled"
)

// ErrDisabled is returned (wrapped) for a command that the server was
// started without: d, sd, dump and who need -dump; iam and who need
// -registry.
var ErrDisabled = errors.New("glockd: disabled on this server")

// ReplyError reports a reply that is not one the protocol allows for the
// command that was sent.
type ReplyError struct {
	Cmd   string   // the command line sent
	Lines []string // the reply, one element per line, newlines removed
}

func (e *ReplyError) Error() string {
	var b strings.Builder
	for _, l := range e.Lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return fmt.Sprintf("glockd: %q: unexpected reply %q", e.Cmd, b.String())
}

// Normalize returns name as the server sees it: leading and trailing white
// space removed and every inner run of it (Unicode spaces included) made one
// space. Replies carry the normalised name.
func Normalize(name string) string {
	if strings.IndexFunc(name, unicode.IsSpace) < 0 {
		return name
	}
	return strings.Join(strings.Fields(name), " ")
}

// command is one command line and the parser of its reply. The typed
// methods of Client and Pipeline are built from the constructors below.
type command[T any] struct {
	line  string
	multi bool
	wait  bool   // gw or sgw
	name  string // of a wait: the lock's normalised name
	err   error  // the command cannot be sent
	parse func(lines []string) (T, error)
}

func (cmd command[T]) request() request {
	return request{line: cmd.line, multi: cmd.multi, wait: cmd.wait, name: cmd.name}
}

// withArg joins a verb and its argument; an empty argument is left off, as
// a user typing the command would.
func withArg(verb, arg string) string {
	if arg == "" {
		return verb
	}
	return verb + " " + arg
}

// nameCommand starts a command on a lock name. A name cannot hold a newline:
// the line protocol would read the rest as another command.
func nameCommand[T any](verb, name string) (command[T], string) {
	cmd := command[T]{line: withArg(verb, name)}
	if strings.ContainsRune(name, '\n') {
		cmd.err = fmt.Errorf("glockd client: %q: a name cannot contain a newline", name)
	}
	return cmd, Normalize(name)
}

// replyError is the error of a reply the command does not expect: a
// refusal of access control or admission (errors.go), or a *ReplyError.
func (cmd command[T]) replyError(lines []string) error {
	if err := refusal(cmd.line, lines); err != nil {
		return err
	}
	return &ReplyError{Cmd: cmd.line, Lines: append([]string(nil), lines...)}
}

// single returns the only line of a one-line reply.
func single(lines []string) (string, bool) {
	if len(lines) != 1 {
		return "", false
	}
	return lines[0], true
}

// flagCommand is a command whose reply is yes+name or no+name.
func flagCommand(verb, name, yes, no string) command[bool] {
	cmd, norm := nameCommand[bool](verb, name)
	cmd.parse = func(lines []string) (bool, error) {
		line, ok := single(lines)
		if ok && strings.HasSuffix(line, norm) {
			switch line[:len(line)-len(norm)] {
			case yes:
				return true, nil
			case no:
				return false, nil
			}
		}
		return false, cmd.replyError(lines)
	}
	return cmd
}

// countCommand is a command whose reply is "N"+text+name with N ≥ 1, or, if
// zero is not empty, zero+name meaning 0.
func countCommand(verb, name, text, zero string) command[uint64] {
	cmd, norm := nameCommand[uint64](verb, name)
	cmd.parse = func(lines []string) (uint64, error) {
		line, ok := single(lines)
		if ok && zero != "" && line == zero+norm {
			return 0, nil
		}
		if ok && strings.HasSuffix(line, text+norm) {
			if n, ok := parseCount(line[:len(line)-len(text)-len(norm)]); ok && n > 0 {
				return n, nil
			}
		}
		return 0, cmd.replyError(lines)
	}
	return cmd
}

// parseCount accepts only the canonical decimal form of a number: no sign,
// no leading zeros, as the server prints it.
func parseCount(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && strconv.FormatUint(n, 10) == s
}

// exactCommand is a command with one possible reply, "0 disabled" aside
// when canBeDisabled.
func exactCommand(line, want string, canBeDisabled bool) command[struct{}] {
	cmd := command[struct{}]{line: line}
	if err := checkLine(line); err != nil {
		cmd.err = err
	}
	cmd.parse = func(lines []string) (struct{}, error) {
		got, ok := single(lines)
		switch {
		case ok && got == want:
			return struct{}{}, nil
		case ok && canBeDisabled && got == disabled:
			return struct{}{}, fmt.Errorf("%s: %w", cmd.line, ErrDisabled)
		}
		return struct{}{}, cmd.replyError(lines)
	}
	return cmd
}

// isDisabled reports whether a multi-line reply is "0 disabled": a line of
// d, sd or who always holds ": ", so it cannot be mistaken for one.
func isDisabled(lines []string) bool {
	line, ok := single(lines)
	return ok && line == disabled
}
