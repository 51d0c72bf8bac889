#!/usr/bin/env bash
# Benchmarks glockd against redis-server on this machine with lockbench, a
# load generator for lock servers that is not part of this repository (see
# LOCKBENCH_SRC): each target runs as alternating pairs (glockd, redis,
# glockd, redis, ...), RUNS of each, and the table shows the medians and
# their ratio. Loopback TCP only. Not part of CI. docs/performance.md has the
# figures it measured.
#
#   scripts/bench-vs-redis.sh                 # about 6 minutes
#   DURATION=2s RUNS=1 scripts/bench-vs-redis.sh
#
# Environment:
#   LOCKBENCH_SRC  lockbench's source (default: ../shared/bench beside the repo)
#   DURATION       measured time of each cycle/contend/shared run (default 5s)
#   WARMUP         unmeasured warm-up before it (default 1s)
#   RUNS           runs per server and target (default 3)
#   CONNS          connections for cycle, contend, shared (default 50)
#   HOLD_CONNS     idle connections for hold (default 10000)
#   ORPHAN_LOCKS   locks for orphan (default 1000000)
#   KEEP           directory for the raw output (default: a temporary one, removed)
#
# Needs go, redis-server and a file descriptor limit of at least
# HOLD_CONNS+100 (it tries to raise the soft limit to the hard one).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
LOCKBENCH_SRC=${LOCKBENCH_SRC:-"$(dirname "$0")/../../shared/bench"}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
RUNS=${RUNS:-3}
CONNS=${CONNS:-50}
HOLD_CONNS=${HOLD_CONNS:-10000}
ORPHAN_LOCKS=${ORPHAN_LOCKS:-1000000}

command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install -y redis-server)" >&2; exit 1; }
work=${KEEP:-$(mktemp -d)}
mkdir -p "$work"
pid= probe=
cleanup() {
	[ -z "$probe" ] || kill "$probe" 2>/dev/null || true
	[ -z "$pid" ] || kill "$pid" 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((HOLD_CONNS + 100)) ]; then
	echo "file descriptor limit $(ulimit -n) is below HOLD_CONNS+100; hold may fail" >&2
fi

echo "building glockd, lockbench and the latency probe in $work" >&2
(cd "$repo" && go build -o "$work/glockd" . && go build -o "$work/latencyprobe" ./scripts/latencyprobe)
(cd "$LOCKBENCH_SRC" && go build -o "$work/lockbench" .)

# free_port prints a loopback port below the ephemeral range (so that no
# client connection holds it) that nobody listens on.
free_port() {
	local low p
	low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	while :; do
		p=$((10000 + RANDOM % (low - 10000)))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# started waits until the server just started (pid) listens on port; it
# fails if the server has exited.
started() {
	for _ in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

# start_glockd and start_redis start a fresh server and set port and pid.
start_glockd() {
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		"$work/glockd" -bind 127.0.0.1 -port "$port" -ws 0 >>"$work/glockd.log" 2>&1 &
		pid=$!
		started && return 0
		stop_server
	done
	echo "glockd does not start: see $work/glockd.log" >&2
	exit 1
}

start_redis() {
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
			--maxclients $((HOLD_CONNS + 1000)) --daemonize no >>"$work/redis.log" 2>&1 &
		pid=$!
		started && return 0
		stop_server
	done
	echo "redis-server does not start: see $work/redis.log" >&2
	exit 1
}

stop_server() {
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	pid=
}

# field prints KEY's value from the RESULT (or PROBE) line in file $1.
field() { { grep -sE '^(RESULT|PROBE)' "$1" || true; } | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# median of the numbers given.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# run_load TARGET SERVER ARGS...: one lockbench run against a running server.
run_load() {
	local target=$1 server=$2 proto=glockd
	shift 2
	[ "$server" = redis ] && proto=resp
	"$work/lockbench" -proto "$proto" -addr "127.0.0.1:$port" "$@" >"$work/$target.$server.$run.out" 2>&1 ||
		echo "lockbench $target $server run $run failed: $(tail -1 "$work/$target.$server.$run.out")" >&2
}

loads() { # TARGET SERVERS ARGS...: alternating runs against long-lived servers
	local target=$1 servers=$2
	shift 2
	for run in $(seq "$RUNS"); do
		for server in $servers; do
			"start_$server"
			run_load "$target" "$server" "$@"
			stop_server
		done
	done
}

echo "cycle, pipeline 1" >&2
loads cycle1 "glockd redis" -workload cycle -conns "$CONNS" -pipeline 1 -duration "$DURATION" -warmup "$WARMUP"
echo "cycle, pipeline 64" >&2
loads cycle64 "glockd redis" -workload cycle -conns "$CONNS" -pipeline 64 -duration "$DURATION" -warmup "$WARMUP"
echo "contend" >&2
loads contend "glockd redis" -workload contend -conns "$CONNS" -keys 8 -duration "$DURATION" -warmup "$WARMUP"
echo "shared (glockd only)" >&2
loads shared "glockd" -workload shared -conns "$CONNS" -duration "$DURATION" -warmup "$WARMUP"

echo "hold, $HOLD_CONNS connections (fresh servers)" >&2
for run in $(seq "$RUNS"); do
	for server in glockd redis; do
		"start_$server"
		run_load hold "$server" -workload hold -conns "$HOLD_CONNS" -pid "$pid"
		stop_server
	done
done

echo "orphan, $ORPHAN_LOCKS locks at pipeline 64 (fresh servers; glockd with a latency probe)" >&2
for run in $(seq "$RUNS"); do
	for server in glockd redis; do
		"start_$server"
		if [ "$server" = glockd ]; then
			"$work/latencyprobe" -addr "127.0.0.1:$port" >"$work/probe.$run.out" 2>&1 &
			probe=$!
			sleep 0.2
		fi
		run_load orphan "$server" -workload orphan -locks "$ORPHAN_LOCKS" -pipeline 64 -pid "$pid"
		if [ "$server" = glockd ]; then
			kill -INT "$probe"
			wait "$probe" || echo "latency probe run $run: $(tail -1 "$work/probe.$run.out")" >&2
			probe=
		fi
		stop_server
	done
done

# med TARGET SERVER KEY: the median of KEY over the runs.
med() {
	local vals=() v
	for run in $(seq "$RUNS"); do
		v=$(field "$work/$1.$2.$run.out" "$3")
		[ -n "$v" ] && [ "$v" != na ] && vals+=("$v")
	done
	if [ ${#vals[@]} -eq 0 ]; then echo na; else median "${vals[@]}"; fi
}
probe_med() {
	local vals=() v
	for run in $(seq "$RUNS"); do
		v=$(field "$work/probe.$run.out" "$1")
		[ -n "$v" ] && vals+=("$v")
	done
	if [ ${#vals[@]} -eq 0 ]; then echo na; else median "${vals[@]}"; fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "na" || b == "na" || b == 0) print "na"; else printf "%.2f", a / b }'; }
errors() { # TARGET SERVERS: total errors over the runs
	local n=0 v
	for run in $(seq "$RUNS"); do
		for server in $2; do
			v=$(field "$work/$1.$server.$run.out" errors)
			n=$((n + ${v:-1}))
		done
	done
	echo "$n"
}

row() { printf '%-34s %14s %14s %8s  %s\n' "$@"; }

echo
echo "glockd vs redis-server, median of $RUNS alternating runs; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); $(redis-server --version | cut -d' ' -f1-3)"
row "target" "glockd" "redis" "ratio" "goal"
for p in 1 64; do
	g=$(med "cycle$p" glockd ops_per_s) r=$(med "cycle$p" redis ops_per_s)
	goal=">= 1.2"
	[ "$p" = 64 ] && goal=">= 1.0"
	row "cycle p$p ops/s" "$g" "$r" "$(ratio "$g" "$r")" "$goal"
	g=$(med "cycle$p" glockd p99_us) r=$(med "cycle$p" redis p99_us)
	row "cycle p$p p99 us" "$g" "$r" "$(ratio "$g" "$r")" "$([ "$p" = 1 ] && echo "<= 1.0" || echo "-")"
done
g=$(med hold glockd bytes_per_conn) r=$(med hold redis bytes_per_conn)
row "hold $HOLD_CONNS: RSS bytes/conn" "$g" "$r" "$(ratio "$g" "$r")" "glockd <= 6144"
g=$(med hold glockd release_ms)
row "hold: release ms" "$g" "na" "-" "-"
g=$(med orphan glockd bytes_per_lock) r=$(med orphan redis bytes_per_lock)
row "orphan $ORPHAN_LOCKS: RSS bytes/lock" "$g" "$r" "$(ratio "$g" "$r")" "glockd <= 128"
g=$(med orphan glockd release_ms)
row "orphan: release ms" "$g" "na" "-" "glockd < 500"
g=$(med orphan glockd acquire_ops_per_s) r=$(med orphan redis acquire_ops_per_s)
row "orphan: acquire locks/s" "$g" "$r" "$(ratio "$g" "$r")" "-"
row "orphan: bystander g/r p99 us" "$(probe_med p99_us)" "-" "-" "< 5000"
row "orphan: bystander g/r max us" "$(probe_med max_us)" "-" "-" "-"
g=$(med contend glockd ops_per_s) r=$(med contend redis ops_per_s)
row "contend ops/s" "$g" "$r" "$(ratio "$g" "$r")" "no regression"
g=$(med contend glockd p99_us) r=$(med contend redis p99_us)
row "contend p99 us" "$g" "$r" "$(ratio "$g" "$r")" "-"
row "shared ops/s" "$(med shared glockd ops_per_s)" "-" "-" "no regression"
row "shared p99 us" "$(med shared glockd p99_us)" "-" "-" "-"
total=0
for t in cycle1 cycle64 contend hold orphan; do total=$((total + $(errors "$t" "glockd redis"))); done
total=$((total + $(errors shared glockd)))
echo "lockbench errors over all runs: $total"
[ -z "${KEEP:-}" ] || echo "raw output in $work"
