package load

import (
	"math/bits"
	"time"
)

// histogram counts latencies in log-linear buckets: 64 per power of two,
// so a percentile is within 1.6% of the true value, in fixed memory.
type histogram struct {
	counts [(maxShift + 2) << subBits]uint64
	total  uint64
	max    time.Duration
}

const (
	subBits  = 6
	maxShift = 34 // values up to 2^41 ns (36 minutes) are kept apart
)

func bucketOf(ns uint64) int {
	if ns < 1<<subBits {
		return int(ns)
	}
	shift := bits.Len64(ns) - subBits - 1
	if shift > maxShift {
		return len(histogram{}.counts) - 1
	}
	return (shift+1)<<subBits + int(ns>>shift) - 1<<subBits
}

// upperBound is the largest value in bucket i.
func upperBound(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	shift := i>>subBits - 1
	mant := uint64(i&(1<<subBits-1) + 1<<subBits)
	return (mant+1)<<shift - 1
}

// add records n operations that each took d.
func (h *histogram) add(d time.Duration, n int) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))] += uint64(n)
	h.total += uint64(n)
	h.max = max(h.max, d)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.max = max(h.max, o.max)
}

// quantile returns the latency under which a fraction q of operations fell.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(upperBound(i)), h.max)
		}
	}
	return h.max
}
