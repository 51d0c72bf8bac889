package main

import "time"

// Fencing tokens.
//
// Every token is at most maxToken = 2^53 − 1, the largest integer a
// JavaScript number or a JSON parser using doubles reads exactly.
//
// A single node (no -etcd) starts its counter from the clock, so that tokens
// keep increasing across restarts without any state on disk: the first
// token after a start is the milliseconds since tokenEpoch times
// tokensPerMilli. A restart therefore continues above the previous run as
// long as that run granted, on average since its start, fewer than
// tokensPerMilli tokens per millisecond (4,096,000 a second, over twice the
// highest grant rate measured on this server), and the clock did not step
// back between the runs. The counter reaches maxToken in September 2094.
//
// With -etcd, tokens come from blocks reserved in etcd by the leader (see
// leader.go); the seed above is only the floor of the first block ever
// reserved, so that moving a node to -etcd keeps its tokens increasing.
const (
	maxToken = 1<<53 - 1

	tokenEpochUnixMilli = 1735689600000 // 2025-01-01T00:00:00Z
	tokensPerMilli      = 1 << 12

	// tokenBlockSize is how many tokens the leader reserves in etcd at a
	// time: about 3 seconds of the highest grant rate measured, and 2^31
	// blocks before maxToken, so a failover that wastes the rest of a block
	// costs nothing that matters.
	tokenBlockSize = 1 << 22

	// tokenReserve is the least the manager must have in hand, current block
	// and next, before it runs a request: more than one request can grant (a
	// batch of maxBatch commands, or one orphaning step), so a grant never
	// finds the tokens exhausted midway.
	tokenReserve = 1 << 16
)

// clockTokenSeed is the floor of tokens at time now, see above.
func clockTokenSeed(now time.Time) uint64 {
	ms := now.UnixMilli() - tokenEpochUnixMilli
	if ms < 1 {
		ms = 1 // a clock set before 2025: tokens still start above 0
	}
	return min(uint64(ms)*tokensPerMilli, maxToken)
}

// tokenBlock is a range of tokens [start, end) reserved for one leader.
type tokenBlock struct {
	start, end uint64
}

// tokenSource hands out tokens in increasing order from a block, and is
// owned by the manager goroutine. take is the only call on the grant path:
// one comparison, no allocation, no etcd.
type tokenSource struct {
	next uint64 // the next token to hand out
	end  uint64 // end of the current block
	// limit is where take leaves the fast path: the block's end, or sooner,
	// the point where the next block should be asked for.
	limit uint64

	pending tokenBlock // the next block, when received (end > 0)
	asked   bool       // the next block has been asked for
	want    chan<- struct{}
}

// newClockTokens is the source of a single node: one block from the clock
// seed to maxToken.
func newClockTokens(now time.Time) tokenSource {
	seed := clockTokenSeed(now)
	return tokenSource{next: seed, end: maxToken + 1, limit: maxToken + 1}
}

// newBlockTokens is the source of a leader's term, from the block it
// reserved before serving; it asks for the next block on want.
func newBlockTokens(first tokenBlock, want chan<- struct{}) tokenSource {
	ts := tokenSource{want: want}
	ts.use(first)
	return ts
}

func (ts *tokenSource) use(b tokenBlock) {
	ts.next, ts.end = b.start, b.end
	ts.limit = b.end
	if ts.want != nil {
		// Ask for the next block halfway through this one.
		ts.limit = b.start + (b.end-b.start)/2
		ts.asked = false
	}
}

func (ts *tokenSource) take() uint64 {
	if ts.next >= ts.limit {
		ts.refill()
	}
	t := ts.next
	ts.next++
	return t
}

// refill is take's slow path, kept out of line so that take inlines.
//
//go:noinline
func (ts *tokenSource) refill() {
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
	if ts.pending.end > 0 {
		ts.use(ts.pending)
		ts.pending = tokenBlock{}
		return
	}
	if ts.end == 0 {
		return // no block at all: a fenced leader, which grants nothing
	}
	// Out of tokens: the clock source past 2094, or a leader whose next
	// block did not come (the manager makes sure it has before each
	// request, see tokenReserve). Stay at the last token rather than hand
	// out one that was never reserved.
	ts.next = ts.end - 1
}

// remaining is how many tokens are in hand: the current block's rest and
// the next block.
func (ts *tokenSource) remaining() uint64 {
	r := ts.end - ts.next
	if ts.pending.end > 0 {
		r += ts.pending.end - ts.pending.start
	}
	return r
}
