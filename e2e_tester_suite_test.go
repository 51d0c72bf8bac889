package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/glockd/glockd/tester/suite"
)

// TestConformanceSuite runs the tester's conformance suite against an
// in-process server, over each transport and in each optional mode.
func TestConformanceSuite(t *testing.T) {
	for _, mode := range []struct{ dump, registry bool }{{true, true}, {false, true}, {true, false}, {false, false}} {
		t.Run(fmt.Sprintf("dump=%v,registry=%v", mode.dump, mode.registry), func(t *testing.T) {
			srv := startServer(t, func(c *Config) { c.Dump, c.Registry = mode.dump, mode.registry })
			targets := []struct{ network, addr string }{
				{"tcp", srv.TCPAddr().String()},
				{"unix", srv.cfg.UnixPath},
				{"ws", "ws://" + srv.WSAddr().String() + "/"},
			}
			for i, target := range targets {
				var out strings.Builder
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				passed, failed := suite.Run(ctx, suite.Options{
					Network:   target.network,
					Addr:      target.addr,
					Dump:      mode.dump,
					Registry:  mode.registry,
					Ext:       true,
					Exclusive: true,
					Fresh:     i == 0,
					Out:       &out,
				})
				cancel()
				if failed > 0 || passed == 0 {
					t.Errorf("%s: %d passed, %d failed:\n%s", target.network, passed, failed, out.String())
				}
			}
		})
	}
}
