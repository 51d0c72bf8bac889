#!/usr/bin/env bash
# The whole test suite: every package, race detector on, fuzz corpora
# replayed as ordinary tests.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -race -count=1 -timeout 20m ./...
