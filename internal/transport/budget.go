package transport

import (
	"errors"
	"sync/atomic"
)

// ErrOverBudget ends a connection that asked for more than -max-buffered had
// left; it has been told wire.QueueFull.
var ErrOverBudget = errors.New("over the -max-buffered budget")

// Budget is the server-wide budget.
type Budget struct {
	Max  int64        // -max-buffered, set before any connection charges it
	Used atomic.Int64 // what all charges hold
}

// Charge is what one holder has taken from a budget; each is used by one
// goroutine at a time. A nil budget (tests of a transport alone) charges
// nothing.
type Charge struct {
	Budget *Budget
	n      int64
}

// Set makes the charge n bytes, and reports false, leaving it as it was,
// when growing it would go over the budget.
//
//go:noinline
func (c *Charge) Set(n int64) bool {
	if c.Budget == nil || n == c.n {
		return true
	}
	delta := n - c.n
	if delta > 0 && c.Budget.Used.Add(delta) > c.Budget.Max {
		c.Budget.Used.Add(-delta)
		return false
	}
	if delta < 0 {
		c.Budget.Used.Add(delta)
	}
	c.n = n
	return true
}

// Held is what the charge holds now.
func (c *Charge) Held() int64 { return c.n }

// Release gives the whole charge back.
func (c *Charge) Release() { c.Set(0) }
