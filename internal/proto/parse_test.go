package proto

import "testing"

// The parser allocates nothing, whatever the line: the common argument is
// used where it lies, one with odd white space is rewritten into scratch.
// Run with
//
//	go test -run '^$' -bench . -benchmem ./internal/proto
func BenchmarkParseCommand(b *testing.B) {
	for _, tc := range []struct{ name, line string }{
		{"g", "g k12"},
		{"r", "r some/longer:lock-name.1234"},
		{"gw", "gw 1500 k12"},
		{"sgw", "sgw -1 8 k12"},
		{"spaces", "  g   a  b\t c  \r"},
		{"unicode", "g a\u00a0\u2003b"},
		{"invalid", "xx yy"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			line := []byte(tc.line)
			scratch := make([]byte, 0, 64)
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				_, scratch = Parse(line, scratch[:0])
			}
		})
	}
}
