package proto

// The functions that format replies without allocating; the texts they
// format are in internal/wire, shared with the tests' models of the protocol.

// AppendReply appends "<n> <text>: <name>\n".
func AppendReply(out []byte, n uint64, text string, name []byte) []byte {
	out = AppendUint(out, n)
	out = append(out, ' ')
	out = append(out, text...)
	out = append(out, ": "...)
	out = append(out, name...)
	return append(out, '\n')
}

// AppendBoolReply is AppendReply for the 1/0 answers.
func AppendBoolReply(out []byte, ok bool, yes, no string, name []byte) []byte {
	if ok {
		return AppendReply(out, 1, yes, name)
	}
	return AppendReply(out, 0, no, name)
}

// AppendUint is strconv.AppendUint for base 10, kept here so the hot path
// has no dependency on strconv's generality.
func AppendUint(out []byte, n uint64) []byte {
	if n < 10 {
		return append(out, byte('0'+n))
	}
	var digits [20]byte
	i := len(digits)
	for n > 0 {
		i--
		digits[i] = byte('0' + n%10)
		n /= 10
	}
	return append(out, digits[i:]...)
}
