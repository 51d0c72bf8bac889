package main

import (
	"strconv"
	"testing"
	"time"
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
		if token > maxToken {
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
		{time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), maxToken}, // past the bound
	} {
		if got := clockTokenSeed(tt.at); got != tt.want {
			t.Errorf("%v: seed %d, want %d", tt.at, got, tt.want)
		}
	}
	// The documented bound: September 2094.
	day := uint64(24 * 3600 * 1000 * tokensPerMilli)
	if got := clockTokenSeed(time.Date(2094, 9, 7, 0, 0, 0, 0, time.UTC)); got >= maxToken || got < maxToken-day {
		t.Errorf("seed on 2094-09-07 is %d, want within a day below %d", got, uint64(maxToken))
	}
}

func TestTokenSourceBlocks(t *testing.T) {
	want := make(chan struct{}, 1)
	const size = 1000
	ts := newBlockTokens(tokenBlock{start: 5000, end: 5000 + size}, want)
	last := uint64(0)
	take := func(n int) {
		for range n {
			tok := ts.take()
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
	if ts.remaining() != size/2-1 {
		t.Fatalf("remaining %d, want %d", ts.remaining(), size/2-1)
	}
	ts.pending = tokenBlock{start: 9000, end: 9000 + size}
	if ts.remaining() != size/2-1+size {
		t.Fatalf("remaining with the next block %d", ts.remaining())
	}
	take(size/2 - 1)
	if last != 5000+size-1 {
		t.Fatalf("last of the first block %d", last)
	}
	take(1)
	if last != 9000 {
		t.Fatalf("first of the next block %d, want 9000", last)
	}
	if ts.remaining() != size-1 {
		t.Fatalf("remaining %d", ts.remaining())
	}
}

// BenchmarkTokenTake: the grant path's cost of a token.
func BenchmarkTokenTake(b *testing.B) {
	ts := newClockTokens(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		ts.take()
	}
}
