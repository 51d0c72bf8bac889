package main

import (
	"strconv"
	"testing"

	"github.com/glockd/glockd/internal/tokens"
)

// TestTokensFitJavaScript: tokens were nanoseconds since 1970 plus a count,
// about 1.8 × 10^18, and three successive ones parsed as doubles (as by
// JavaScript or most JSON parsers) came out equal. Every token must stay at
// most 2^53 − 1.
func TestTokensFitJavaScript(t *testing.T) {
	c := dial(t, startServer(t, nil), "tcp")
	var last float64
	for i := range 3 {
		c.expect("g x", "1 Lock Get Success: x\n")
		token := tokenOf(t, c, "x")
		if token > tokens.Max {
			t.Fatalf("token %d is above 2^53 − 1", token)
		}
		f, _ := strconv.ParseFloat(strconv.FormatUint(token, 10), 64)
		if uint64(f) != token || (i > 0 && f <= last) {
			t.Fatalf("token %d read as a double: %v after %v", token, f, last)
		}
		last = f
		c.expect("r x", "1 Lock Release Success: x\n")
	}
}
