package load

import (
	"fmt"
	"strings"
	"time"
)

// progress draws a bar on opts.Progress until the returned stop is called.
func (r *run) progress() (stop func()) {
	if r.opts.Progress == nil {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				r.drawProgress(true)
				return
			case <-tick.C:
			}
			r.drawProgress(false)
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

func (r *run) drawProgress(last bool) {
	const width = 30
	done := r.done.Load()
	elapsed := time.Since(r.start)
	frac := 0.0
	if r.opts.Ops > 0 {
		frac = float64(done) / float64(r.opts.Ops)
	} else {
		frac = elapsed.Seconds() / r.opts.Duration.Seconds()
	}
	if last {
		frac = 1
	}
	frac = min(max(frac, 0), 1)
	filled := int(frac * width)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed.Seconds()
	}
	end := ""
	if last {
		end = "\n"
	}
	// \r and the erase-line escape redraw the bar in place.
	fmt.Fprintf(r.opts.Progress, "\r\x1b[K[%s%s] %3.0f%%  %d ops  %.0f ops/s%s",
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), frac*100, done, rate, end)
}
