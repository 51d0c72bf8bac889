package acl

// The failure buckets that limit guessing tokens (docs/security.md, "What a
// client without a credential can cost"): one server-wide and one per source
// address; an auth that finds either empty is refused untried.
const (
	// BurstSeconds is how many seconds of its refill rate a bucket holds
	// (at least one failure).
	BurstSeconds = 0.5
	// sweepAbove is the number of per-address buckets past which full ones
	// (addresses that have not failed lately) are dropped.
	sweepAbove = 1024
)

// tokenBucket is a rate limiter on the manager's clock (nanoseconds).
type tokenBucket struct {
	tokens float64
	last   int64
}

// refill adds what the time since the last refill earned, up to burst.
func (b *tokenBucket) refill(now int64, rate, burst float64) {
	b.tokens = min(burst, b.tokens+float64(now-b.last)/1e9*rate)
	b.last = now
}

// Limiter holds the failure buckets: one server-wide and one per source
// address that failed lately. It is not safe for concurrent use: the
// daemon's manager goroutine owns it.
type Limiter struct {
	perAddr, total           float64 // refill rates, per second
	perAddrBurst, totalBurst float64
	global                   tokenBucket
	byAddr                   map[string]*tokenBucket
}

// NewLimiter makes the buckets, full, with these refill rates per second.
func NewLimiter(perAddr, total float64) *Limiter {
	l := &Limiter{
		perAddr: perAddr, total: total,
		perAddrBurst: max(1, perAddr*BurstSeconds),
		totalBurst:   max(1, total*BurstSeconds),
		byAddr:       make(map[string]*tokenBucket),
	}
	l.global.tokens = l.totalBurst
	return l
}

// Allow reports whether an auth from addr may be tried: both its address's
// bucket and the global one have a failure left.
func (l *Limiter) Allow(addr string, now int64) bool {
	l.global.refill(now, l.total, l.totalBurst)
	if l.global.tokens < 1 {
		return false
	}
	b := l.byAddr[addr]
	if b == nil {
		return true // a new bucket is full
	}
	b.refill(now, l.perAddr, l.perAddrBurst)
	return b.tokens >= 1
}

// Failed takes a failure from both buckets (Allow has just refilled them).
func (l *Limiter) Failed(addr string, now int64) {
	l.global.tokens--
	b := l.byAddr[addr]
	if b == nil {
		if len(l.byAddr) >= sweepAbove {
			l.sweep(now)
		}
		b = &tokenBucket{tokens: l.perAddrBurst, last: now}
		l.byAddr[addr] = b
	}
	b.tokens--
}

// sweep drops the buckets that have refilled: a new one would be the same.
// The global bucket bounds how many addresses fail in the time a bucket
// takes to refill, and so how many are kept.
func (l *Limiter) sweep(now int64) {
	for addr, b := range l.byAddr {
		b.refill(now, l.perAddr, l.perAddrBurst)
		if b.tokens >= l.perAddrBurst {
			delete(l.byAddr, addr)
		}
	}
}
