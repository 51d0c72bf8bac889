package client

import "sync"

// goWait runs f on a new goroutine that wg waits for: sync.WaitGroup.Go,
// which needs Go 1.25, kept out for the module's go 1.23 floor (go.mod).
func goWait(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
}
