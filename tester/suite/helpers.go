package suite

import "strconv"

func quote(s string) string { return strconv.Quote(s) }

// parseCount accepts only the canonical decimal form of a number.
func parseCount(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && strconv.FormatUint(n, 10) == s
}
