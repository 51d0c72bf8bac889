package transport

import (
	"fmt"
	"testing"

	"github.com/glockd/glockd/internal/proto"
)

// BenchmarkBatchParse is the stream transport's parse of a pipelined read of
// 64 lines into one batch.
func BenchmarkBatchParse(b *testing.B) {
	var input []byte
	for i := range 32 {
		input = fmt.Appendf(input, "g k%d\nr k%d\n", i, i)
	}
	t := &Stream{maxLine: 64 << 10, buf: input} // -max-line's default
	cmds := make([]proto.Command, 0, 64)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	for b.Loop() {
		t.start, t.end, t.scratch = 0, len(input), t.scratch[:0]
		if cmds = t.parse(cmds[:0]); len(cmds) != 64 {
			b.Fatalf("%d commands", len(cmds))
		}
	}
}
