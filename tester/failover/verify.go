package failover

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
)

// A Violation is one broken promise, in words.
type Violation struct {
	Kind string // "overlap", "token order" or "fenced write refused"
	Text string
}

func (v Violation) String() string { return "VIOLATION " + v.Kind + ": " + v.Text }

// verify checks the beliefs and the register's refusals of a run: no two
// beliefs in the same lock overlap, tokens of a lock strictly increase in
// the order of the grants, and no write was refused while its writer
// believed it held the lock. Times are printed as seconds since t0.
func verify(t0 time.Time, beliefs []*belief, rejections []*rejection) []Violation {
	at := func(t time.Time) string { return fmt.Sprintf("%.3fs", t.Sub(t0).Seconds()) }
	who := func(b *belief) string {
		return fmt.Sprintf("session %d on %s (token %d)", b.session, b.node, b.token)
	}
	byLock := map[string][]*belief{}
	for _, b := range beliefs {
		byLock[b.lock] = append(byLock[b.lock], b)
	}
	var out []Violation
	for _, lock := range slices.Sorted(maps.Keys(byLock)) {
		bs := byLock[lock]
		slices.SortStableFunc(bs, func(a, b *belief) int {
			if c := a.start.Compare(b.start); c != 0 {
				return c
			}
			return cmp.Compare(a.token, b.token)
		})
		var longest *belief // of those started so far, the one that ends last
		for i, b := range bs {
			if i > 0 && b.token <= bs[i-1].token {
				p := bs[i-1]
				out = append(out, Violation{"token order", fmt.Sprintf("lock %s: %s was granted at %s, after %s at %s, with a token not above it",
					lock, who(b), at(b.start), who(p), at(p.start))})
			}
			if longest != nil && b.start.Before(longest.end) {
				out = append(out, Violation{"overlap", fmt.Sprintf("lock %s: %s believed it held the lock from %s to %s (%s); %s was granted it at %s, %v before that end",
					lock, who(longest), at(longest.start), at(longest.end), longest.how, who(b), at(b.start), longest.end.Sub(b.start).Round(time.Millisecond))})
			}
			if longest == nil || b.end.After(longest.end) {
				longest = b
			}
		}
	}
	for _, rj := range rejections {
		b := rj.b
		more := ""
		if rj.count > 1 {
			more = fmt.Sprintf(" (and %d more writes up to %s)", rj.count-1, at(rj.last))
		}
		out = append(out, Violation{"fenced write refused", fmt.Sprintf("lock %s: %s wrote at %s%s while it believed it held the lock (since %s), and the register refused it: it had seen token %d",
			b.lock, who(b), at(rj.at), more, at(b.start), rj.highest)})
	}
	return out
}
