// Package tokens is the source of fencing tokens, owned by the lock
// manager goroutine.
//
// Every token is at most Max = 2^53 − 1, the largest integer a
// JavaScript number or a JSON parser using doubles reads exactly.
//
// A single node (no -etcd) starts its counter from the clock, so that tokens
// keep increasing across restarts without any state on disk: the first
// token after a start is the milliseconds since tokenEpoch times
// tokensPerMilli. A restart therefore continues above the previous run as
// long as that run granted, on average since its start, fewer than
// tokensPerMilli tokens per millisecond (4,096,000 a second, over twice the
// highest grant rate measured on this server), and the clock did not step
// back between the runs. The counter reaches Max in September 2094.
//
// With -etcd, tokens come from blocks reserved in etcd by the leader (see
// internal/ha); the seed above is only the floor of the first block ever
// reserved, so that moving a node to -etcd keeps its tokens increasing.
package tokens

import "time"

const (
	// Max is the largest token: 2^53 − 1, see above.
	Max = 1<<53 - 1

	tokenEpochUnixMilli = 1735689600000 // 2025-01-01T00:00:00Z
	tokensPerMilli      = 1 << 12

	// BlockSize is how many tokens the leader reserves in etcd at a
	// time: about 3 seconds of the highest grant rate measured, and 2^31
	// blocks before Max, so a failover that wastes the rest of a block
	// costs nothing that matters.
	BlockSize = 1 << 22

	// Reserve is the least the manager must have in hand, current block
	// and next, before it runs a request: more than one request can grant (a
	// batch of maxBatch commands, or one orphaning step), so a grant never
	// finds the tokens exhausted midway.
	Reserve = 1 << 16
)

// ClockSeed is the floor of tokens at time now, see above.
func ClockSeed(now time.Time) uint64 {
	ms := now.UnixMilli() - tokenEpochUnixMilli
	if ms < 1 {
		ms = 1 // a clock set before 2025: tokens still start above 0
	}
	return min(uint64(ms)*tokensPerMilli, Max)
}

// Block is a range of tokens [start, end) reserved for one leader.
type Block struct {
	Start, End uint64
}

// Source hands out tokens in increasing order from a block, and is
// owned by the manager goroutine. Take is the only call on the grant path:
// one comparison, no allocation, no etcd.
type Source struct {
	next uint64 // the next token to hand out
	end  uint64 // end of the current block
	// limit is where Take leaves the fast path: the block's end, or sooner,
	// the point where the next block should be asked for.
	limit uint64

	pending Block // the next block, when received (end > 0)
	asked   bool  // the next block has been asked for
	want    chan<- struct{}
}

// NewClock is the source of a single node: one block from the clock
// seed to Max.
func NewClock(now time.Time) Source {
	seed := ClockSeed(now)
	return Source{next: seed, end: Max + 1, limit: Max + 1}
}

// NewBlocks is the source of a leader's term, from the block it
// reserved before serving; it asks for the next block on want.
func NewBlocks(first Block, want chan<- struct{}) Source {
	ts := Source{want: want}
	ts.use(first)
	return ts
}

func (ts *Source) use(b Block) {
	ts.next, ts.end = b.Start, b.End
	ts.limit = b.End
	if ts.want != nil {
		// Ask for the next block halfway through this one.
		ts.limit = b.Start + (b.End-b.Start)/2
		ts.asked = false
	}
}

// Take hands out the next token.
func (ts *Source) Take() uint64 {
	if ts.next >= ts.limit {
		ts.refill()
	}
	t := ts.next
	ts.next++
	return t
}

// refill is Take's slow path, kept out of line so that Take inlines.
//
//go:noinline
func (ts *Source) refill() {
	if ts.want != nil && !ts.asked && ts.next < ts.end {
		ts.asked = true
		select {
		case ts.want <- struct{}{}:
		default:
		}
		ts.limit = ts.end
		return
	}
	if ts.next < ts.end {
		return
	}
	if ts.pending.End > 0 {
		ts.use(ts.pending)
		ts.pending = Block{}
		return
	}
	if ts.end == 0 {
		return // no block at all: a fenced leader, which grants nothing
	}
	// Out of tokens: the clock source past 2094, or a leader whose next
	// block did not come (the manager makes sure it has before each
	// request, see Reserve). Stay at the last token rather than hand
	// out one that was never reserved.
	ts.next = ts.end - 1
}

// Remaining is how many tokens are in hand: the current block's rest and
// the next block.
func (ts *Source) Remaining() uint64 {
	r := ts.end - ts.next
	if ts.pending.End > 0 {
		r += ts.pending.End - ts.pending.Start
	}
	return r
}

// Awaiting reports whether the next block was asked for and has not come.
func (ts *Source) Awaiting() bool { return ts.asked && ts.pending.End == 0 }

// Receive keeps b as the next block, used once the current one is spent.
func (ts *Source) Receive(b Block) { ts.pending = b }

// Current is the rest of the current block: the next token to hand out and
// the block's end. A hand-over to a new binary carries it.
func (ts *Source) Current() Block { return Block{Start: ts.next, End: ts.end} }

// Pending is the next block, End 0 if none came yet.
func (ts *Source) Pending() Block { return ts.pending }

// Next is the next token to hand out.
func (ts *Source) Next() uint64 { return ts.next }

// Raise moves the next token up to next (at most Max), never down: a new
// process after a hand-over carries on above the old one's tokens.
func (ts *Source) Raise(next uint64) {
	if next > ts.next {
		ts.next = min(next, Max)
	}
}
