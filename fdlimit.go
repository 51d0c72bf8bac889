package main

import "syscall"

// connCap is the connection limit actually enforced: -max-conns, or less
// when the file-descriptor limit (RLIMIT_NOFILE, as main has raised it)
// cannot hold that many, each connection being one descriptor beside the
// HTTP connections and fdReserve. Past it accept would fail at random; under
// it a client is told "0 Too Many Connections", and glockd_max_connections
// shows the real cap, so the near-limit alert fires in time.
func connCap(cfg Config) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<40 {
		return cfg.MaxConns // unknown, or unlimited
	}
	allowed := int64(rl.Cur) - int64(cfg.MaxHTTPConns) - fdReserve
	if allowed >= int64(cfg.MaxConns) {
		return cfg.MaxConns
	}
	return int(max(allowed, 1))
}
