#!/usr/bin/env bash
# The whole test suite: every package, race detector on, fuzz corpora
# replayed as ordinary tests; then the idle-stack guard (docs/design.md, "The
# idle-stack rule"), which must run without the race detector: -race enlarges
# goroutine stacks, so under it the guard skips itself.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -race -count=1 -timeout 20m ./...
(cd client && go test -race -count=1 -timeout 5m ./...) # a module of its own
go test -count=1 -run 'IdleConnStack' .
