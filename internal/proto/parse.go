package proto

import (
	"unicode"
	"unicode/utf8"
)

// A line becomes a command here: split into its verb and its argument, the
// argument normalised as strings.Fields would split it, without allocating.

// NoWait is the MS of a wait without a time limit.
const NoWait = -1

// Command is one parsed line. Its byte slices alias the connection's read
// buffer (or its scratch space), so a Command is only valid until the
// connection reads again; the manager copies a name before it keeps it.
type Command struct {
	Verb Verb
	Name []byte // the normalised argument; for gw/sgw the part after MS (and MAX)
	Line []byte // the line without surrounding white space, quoted by "Invalid Argument"
	MS   int64  // gw, sgw: how long to wait, NoWait for ever
	Max  int64  // sgw: the most holders the shared lock may have
	Bad  bool   // gw, sgw: MS or MAX is not a valid integer
}

// Parse parses one line (without its "\n"; a "\r" before it goes
// with the surrounding white space). scratch is used when the argument has to
// be rewritten; the returned scratch must be passed to the next call so that
// its space is reused without clobbering earlier commands.
func Parse(line, scratch []byte) (Command, []byte) {
	var cmd Command
	scratch = ParseInto(&cmd, line, scratch)
	return cmd, scratch
}

// ParseInto is Parse writing to *cmd. The stream transport parses
// into its batch with it: a command returned by value is copied through the
// stack, and the reader goroutine's stack has to stay small (docs/design.md,
// "The idle-stack rule").
func ParseInto(cmd *Command, line, scratch []byte) []byte {
	line = trimSpace(line)
	end := 0
	for end < len(line) && line[end] != ' ' && line[end] != '\t' {
		end++
	}
	*cmd = Command{Verb: LookupVerb(line[:end]), Line: line}
	if cmd.Verb == VerbInvalid {
		return scratch
	}
	cmd.Name, scratch = normaliseArgument(line[end:], scratch)
	switch cmd.Verb {
	case VerbGW, VerbAsyncGW:
		var ok bool
		cmd.MS, cmd.Name, ok = cutInteger(cmd.Name)
		cmd.Bad = !ok || cmd.MS < NoWait
	case VerbSGW, VerbAsyncSGW:
		var okMS, okMax bool
		cmd.MS, cmd.Name, okMS = cutInteger(cmd.Name)
		cmd.Max, cmd.Name, okMax = cutInteger(cmd.Name)
		cmd.Bad = !okMS || !okMax || cmd.MS < NoWait || cmd.Max < 1
	}
	return scratch
}

// cutInteger splits a decimal integer off the front of a normalised argument.
// What follows it (after one space) is the rest; an integer alone leaves the
// empty name, as "g" alone locks "".
func cutInteger(arg []byte) (n int64, rest []byte, ok bool) {
	end := 0
	for end < len(arg) && arg[end] != ' ' {
		end++
	}
	field := arg[:end]
	if end < len(arg) {
		rest = arg[end+1:]
	} else {
		rest = arg[end:]
	}
	neg := len(field) > 0 && field[0] == '-'
	if neg {
		field = field[1:]
	}
	// 18 digits always fit in an int64.
	if len(field) == 0 || len(field) > 18 {
		return 0, rest, false
	}
	for _, c := range field {
		if c < '0' || c > '9' {
			return 0, rest, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, rest, true
}

// normaliseArgument removes leading and trailing white space and collapses
// every inner run of it to one space, with white space as strings.Fields sees
// it. The common argument is already normal and is returned as is.
func normaliseArgument(arg, scratch []byte) ([]byte, []byte) {
	arg = trimSpace(arg)
	if isNormal(arg) {
		return arg, scratch
	}
	start := len(scratch)
	for len(arg) > 0 {
		r, size := rune(arg[0]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRune(arg)
		}
		if isSpace(r) {
			for len(arg) > 0 {
				r, size = rune(arg[0]), 1
				if r >= utf8.RuneSelf {
					r, size = utf8.DecodeRune(arg)
				}
				if !isSpace(r) {
					break
				}
				arg = arg[size:]
			}
			scratch = append(scratch, ' ')
			continue
		}
		scratch = append(scratch, arg[:size]...)
		arg = arg[size:]
	}
	// Full slice expression: a later append to scratch must not write here.
	return scratch[start:len(scratch):len(scratch)], scratch
}

// isNormal reports whether a trimmed argument is plain ASCII with single
// spaces as its only white space.
func isNormal(arg []byte) bool {
	prevSpace := false
	for _, c := range arg {
		switch {
		case c >= utf8.RuneSelf:
			return false
		case c == ' ':
			if prevSpace {
				return false
			}
			prevSpace = true
		case asciiSpace(c):
			return false
		default:
			prevSpace = false
		}
	}
	return true
}

func asciiSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// isSpace matches unicode.IsSpace, which is what strings.Fields splits on.
func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiSpace(byte(r))
	}
	return unicode.IsSpace(r)
}

// trimSpace removes leading and trailing white space (as isSpace sees it).
func trimSpace(b []byte) []byte {
	for len(b) > 0 {
		if b[0] < utf8.RuneSelf {
			if !asciiSpace(b[0]) {
				break
			}
			b = b[1:]
			continue
		}
		r, size := utf8.DecodeRune(b)
		if !unicode.IsSpace(r) {
			break
		}
		b = b[size:]
	}
	for len(b) > 0 {
		last := b[len(b)-1]
		if last < utf8.RuneSelf {
			if !asciiSpace(last) {
				break
			}
			b = b[:len(b)-1]
			continue
		}
		r, size := utf8.DecodeLastRune(b)
		if !unicode.IsSpace(r) {
			break
		}
		b = b[:len(b)-size]
	}
	return b
}
