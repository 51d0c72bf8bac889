package client_test

import "sync"

// goWait is sync.WaitGroup.Go, which needs Go 1.25, for the module's go
// 1.23 floor (go.mod); the package's own is unexported.
func goWait(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
}
