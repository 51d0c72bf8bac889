#!/usr/bin/env bash
# The JavaScript client's tests (clients/js), with node --test, against a
# glockd built from this repository: over TCP, the unix socket, TLS, and the
# websocket twice, with the module's own RFC 6455 client and with Node's
# global WebSocket (behind --experimental-websocket on Node 20, built in
# later). The console's browser test (go test -run TestConsoleBrowser) runs
# the same module in Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/glockd" .
export GLOCKD_BIN="$bin/glockd"
node --version
cd clients/js
node --test test/*.test.js
if node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)'; then
	echo "== Node's WebSocket is built in: the websocket tests above used it (the module's own client ran for wss:// with tls options)"
	echo "== websocket tests again, with the module's own client"
	GLOCKD_JS_OWN_WEBSOCKET=1 node --test test/websocket.test.js
elif node --experimental-websocket -e '' 2>/dev/null; then
	echo "== websocket tests again, with Node's global WebSocket (--experimental-websocket)"
	node --experimental-websocket --test test/websocket.test.js
else
	echo "== this Node ($(node --version)) has no WebSocket at all: the module's own client alone was tested"
fi
