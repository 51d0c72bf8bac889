package main

import (
	"math/bits"
	"time"
)

// hist counts latencies in buckets that are exact below 32 ns and then 32
// to a power of two, so that a quantile is within about 3% of the true
// value, in fixed memory. (tester/load has a histogram of its own, but
// unexported, inside the load package.)
type hist struct {
	counts [60 * 32]uint64 // bucket(1<<64-1) is the last
	n      uint64
	sum    time.Duration
	max    time.Duration
}

func bucket(ns uint64) int {
	if ns < 32 {
		return int(ns)
	}
	exp := bits.Len64(ns) - 6 // ns>>exp is in [32, 64)
	return exp*32 + int(ns>>exp)
}

// bucketTop is the largest value that falls in bucket i.
func bucketTop(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	exp := i/32 - 1
	return (uint64(i%32+32)+1)<<exp - 1
}

func (h *hist) record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucket(uint64(d))]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile is the latency under which a fraction q of the samples fell, in
// microseconds.
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := max(uint64(q*float64(h.n)+0.5), 1)
	var seen uint64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return float64(min(time.Duration(bucketTop(i)), h.max)) / 1e3
		}
	}
	return float64(h.max) / 1e3
}

func (h *hist) maxUs() float64 { return float64(h.max) / 1e3 }
