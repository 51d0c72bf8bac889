package tokens

import (
	"testing"
	"time"
)

func TestClockTokenSeed(t *testing.T) {
	epoch := time.UnixMilli(tokenEpochUnixMilli)
	for _, tt := range []struct {
		at   time.Time
		want uint64
	}{
		{time.Unix(0, 0), tokensPerMilli}, // a clock before the epoch
		{epoch, tokensPerMilli},
		{epoch.Add(2 * time.Millisecond), 2 * tokensPerMilli},
		{epoch.Add(time.Second), 1000 * tokensPerMilli},
		{time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), Max}, // past the bound
	} {
		if got := ClockSeed(tt.at); got != tt.want {
			t.Errorf("%v: seed %d, want %d", tt.at, got, tt.want)
		}
	}
	// The documented bound: September 2094.
	day := uint64(24 * 3600 * 1000 * tokensPerMilli)
	if got := ClockSeed(time.Date(2094, 9, 7, 0, 0, 0, 0, time.UTC)); got >= Max || got < Max-day {
		t.Errorf("seed on 2094-09-07 is %d, want within a day below %d", got, uint64(Max))
	}
}

func TestTokenSourceBlocks(t *testing.T) {
	want := make(chan struct{}, 1)
	const size = 1000
	ts := NewBlocks(Block{Start: 5000, End: 5000 + size}, want)
	last := uint64(0)
	take := func(n int) {
		for range n {
			tok := ts.Take()
			if tok <= last {
				t.Fatalf("token %d after %d", tok, last)
			}
			last = tok
		}
	}
	take(size / 2)
	select {
	case <-want:
		t.Fatal("asked for the next block before the first was half used")
	default:
	}
	take(1)
	select {
	case <-want:
	default:
		t.Fatal("did not ask for the next block halfway")
	}
	if ts.Remaining() != size/2-1 {
		t.Fatalf("remaining %d, want %d", ts.Remaining(), size/2-1)
	}
	ts.Receive(Block{Start: 9000, End: 9000 + size})
	if ts.Remaining() != size/2-1+size {
		t.Fatalf("remaining with the next block %d", ts.Remaining())
	}
	take(size/2 - 1)
	if last != 5000+size-1 {
		t.Fatalf("last of the first block %d", last)
	}
	take(1)
	if last != 9000 {
		t.Fatalf("first of the next block %d, want 9000", last)
	}
	if ts.Remaining() != size-1 {
		t.Fatalf("remaining %d", ts.Remaining())
	}
}

// BenchmarkTokenTake: the grant path's cost of a token.
func BenchmarkTokenTake(b *testing.B) {
	ts := NewClock(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		ts.Take()
	}
}
