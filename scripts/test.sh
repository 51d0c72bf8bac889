#!/usr/bin/env bash
# The whole test suite: every package, race detector on, fuzz corpora
# replayed as ordinary tests; then the idle-stack guard (docs/design.md, "The
# idle-stack rule") and the memory bound of -max-buffered, which must run
# without the race detector: -race enlarges goroutine stacks and adds shadow
# memory, so under it they skip those checks.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -race -count=1 -timeout 20m ./...
(cd client && go test -race -count=1 -timeout 5m ./...) # a module of its own
go test -count=1 -run 'IdleConnStack' .
go test -count=1 -run 'IdleTLSConnMemory' . # the TLS one's stack check (tls.go, waitInput)
# Separate: their connections would still be closing while the stack guard measures.
go test -count=1 -run 'MaxBufferedMemory|UnauthWebsocketMemory' .
