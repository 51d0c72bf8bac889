package load

import (
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	prev := -1
	for _, ns := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 123456789, 1 << 40} {
		i := bucketOf(ns)
		if i < prev {
			t.Errorf("bucketOf(%d) = %d, below the previous value's %d", ns, i, prev)
		}
		prev = i
		if ub := upperBound(i); ub < ns || float64(ub-ns) > 0.016*float64(ns)+1 {
			t.Errorf("value %d: bucket %d's upper bound %d is not within 1.6%% above it", ns, i, ub)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i)*time.Microsecond, 1)
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0.999, 999 * time.Microsecond}, {1, time.Millisecond}}
	for _, tt := range tests {
		got := h.quantile(tt.q)
		if got < tt.want || float64(got-tt.want) > 0.016*float64(tt.want) {
			t.Errorf("quantile(%v) = %v, want %v (+1.6%%)", tt.q, got, tt.want)
		}
	}
	var empty histogram
	if got := empty.quantile(0.5); got != 0 {
		t.Errorf("empty quantile = %v, want 0", got)
	}
}
