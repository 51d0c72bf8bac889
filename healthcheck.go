package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// healthcheckTimeout bounds glockd -healthcheck: a container runtime kills
// a check that hangs, but reports a clearer failure when it ends itself.
const healthcheckTimeout = 5 * time.Second

// healthcheck asks url (GET) and returns nil if it answered 200 OK. It lets
// an image with no shell and no curl (distroless) declare a HEALTHCHECK
// that runs the daemon's own binary against /healthz.
func healthcheck(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
