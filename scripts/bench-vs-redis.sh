#!/usr/bin/env bash
# Benchmarks glockd against redis-server on this machine with the
# repository's own load generator (go run ./bench; built once here). Two
# tables:
#
#   pinned     (the main one) each server on core 0 (taskset -c 0), the load
#              generator on core 1 (taskset -c 1): Go sizes GOMAXPROCS from
#              the affinity mask, so each side has one core of its own, as
#              on a deployment where clients run on other machines;
#   colocated  no pinning: servers and load generator share every core.
#
# Each target runs as alternating runs (glockd, redis, glockd, redis, ...),
# RUNS of each, every run against a freshly started server, and the tables
# show the medians and their ratio. Loopback TCP only. Not part of CI.
# docs/performance.md has the figures it measured.
#
#   scripts/bench-vs-redis.sh                       # about 20 minutes
#   DURATION=2s RUNS=1 scripts/bench-vs-redis.sh    # a quick look
#   MODES=pinned KEEP=/tmp/out scripts/bench-vs-redis.sh
#
# Environment:
#   MODES          pinned and/or colocated (default: "pinned colocated")
#   DURATION       measured time of each throughput and hand-over run (default 5s)
#   WARMUP         unmeasured warm-up before it (default 1s)
#   RUNS           runs per server and target (default 3)
#   CONNS          connections for cycle, contend, shared (default 50)
#   HOLD_CONNS     idle connections for hold (default 10000)
#   WAITERS        connections queued for handover (default 10000)
#   ORPHAN_LOCKS   locks for orphan, sharedorphan and dump (default 1000000)
#   DUMPERS        connections listing the table in a loop for dump (default 3)
#   KEEP           directory for the raw output (default: a temporary one, removed)
#   TARGETS        run only these targets (e.g. "handover dump"); the others' rows show na
#   GLOCKD         a glockd binary to measure instead of this tree's (an older
#                  build, for a before/after: git worktree add ../before COMMIT &&
#                  (cd ../before && go build -o /tmp/glockd-before .))
#
# Needs go, redis-server (apt-get install -y --no-install-recommends
# redis-server), taskset and 2 cores for the pinned table, and a file
# descriptor limit of at least HOLD_CONNS+100 and WAITERS+100 (it raises the
# soft limit to the hard one).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
MODES=${MODES:-pinned colocated}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
RUNS=${RUNS:-3}
CONNS=${CONNS:-50}
HOLD_CONNS=${HOLD_CONNS:-10000}
WAITERS=${WAITERS:-10000}
ORPHAN_LOCKS=${ORPHAN_LOCKS:-1000000}
DUMPERS=${DUMPERS:-3}

command -v redis-server >/dev/null || {
	echo "redis-server not found (apt-get install -y --no-install-recommends redis-server)" >&2
	exit 1
}
case " $MODES " in *" pinned "*)
	if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ]; then
		echo "the pinned table needs taskset and 2 cores; running the colocated one only" >&2
		MODES=colocated
	fi
	;;
esac
work=${KEEP:-$(mktemp -d)}
mkdir -p "$work"
pid=
cleanup() {
	[ -z "$pid" ] || kill "$pid" 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((HOLD_CONNS > WAITERS ? HOLD_CONNS : WAITERS))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((need + 100)) ]; then
	echo "file descriptor limit $(ulimit -n) is below $((need + 100)); hold and handover may fail" >&2
fi

echo "building glockd and bench in $work" >&2
(cd "$repo" && go build -o "$work/bench" ./bench)
if [ -n "${GLOCKD:-}" ]; then
	cp "$GLOCKD" "$work/glockd"
else
	(cd "$repo" && go build -o "$work/glockd" .)
fi
# A certificate for glockd's TLS listener (the tls targets).
sh "$repo/scripts/make-certs.sh" "$work/certs" >/dev/null 2>&1

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

# server_cpu and client_cpu are the taskset prefixes of the current mode.
server_cpu=() client_cpu=()
set_mode() {
	mode=$1
	if [ "$mode" = pinned ]; then
		server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
	else
		server_cpu=() client_cpu=()
	fi
}

# start_glockd and start_redis start a fresh server and set port and pid
# (taskset execs the server, so pid is the server's own).
start_glockd() {
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		"${server_cpu[@]}" "$work/glockd" -bind 127.0.0.1 -port "$port" -ws 0 >>"$work/glockd.log" 2>&1 &
		pid=$!
		started && return 0
		stop_server
	done
	echo "glockd does not start: see $work/glockd.log" >&2
	exit 1
}

# start_glockdtls starts glockd with its TLS listener on port (and no plain
# one): the tls targets compare it with start_glockd's plain TCP.
start_glockdtls() {
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		"${server_cpu[@]}" "$work/glockd" -bind 127.0.0.1 -port 0 -ws 0 -tls-port "$port" \
			-tls-cert "$work/certs/server.crt" -tls-key "$work/certs/server.key" >>"$work/glockd.log" 2>&1 &
		pid=$!
		started && return 0
		stop_server
	done
	echo "glockd with TLS does not start: see $work/glockd.log" >&2
	exit 1
}

start_redis() {
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		"${server_cpu[@]}" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
			--maxclients $((need + 1000)) --daemonize no >>"$work/redis.log" 2>&1 &
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

# run_bench TARGET SERVER ARGS...: one bench run against a fresh server.
run_bench() {
	local target=$1 server=$2 proto=glockd out tls=()
	shift 2
	[ "$server" = redis ] && proto=resp
	[ "$server" = glockdtls ] && tls=(-tls)
	out="$work/$mode.$target.$server.$run.out"
	"start_$server"
	"${client_cpu[@]}" "$work/bench" -proto "$proto" -addr "127.0.0.1:$port" -pid "$pid" "${tls[@]}" "$@" >"$out" 2>&1 ||
		echo "bench $mode $target $server run $run failed: $(grep -m1 '^bench:' "$out" || tail -1 "$out")" >&2
	stop_server
}

# loads TARGET SERVERS ARGS...: RUNS alternating runs of each server.
# want TARGET: whether TARGETS (all when empty) selects it.
want() { case " ${TARGETS:-$1} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

loads() {
	local target=$1 servers=$2
	shift 2
	want "$target" || return 0
	echo "$mode: $target" >&2
	for run in $(seq "$RUNS"); do
		for server in $servers; do
			run_bench "$target" "$server" "$@"
		done
	done
}

# field prints KEY's value from the RESULT line in file $1.
field() { { grep -s '^RESULT' "$1" || true; } | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# median of the numbers given.
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# med TARGET SERVER KEY: the median of KEY over the runs of this mode.
med() {
	local vals=() v
	for run in $(seq "$RUNS"); do
		v=$(field "$work/$mode.$1.$2.$run.out" "$3")
		[ -n "$v" ] && [ "$v" != na ] && vals+=("$v")
	done
	if [ ${#vals[@]} -eq 0 ]; then echo na; else median "${vals[@]}"; fi
}
# all TARGET SERVER KEY: every run's value, for the spread.
all() {
	local vals=() v
	for run in $(seq "$RUNS"); do
		v=$(field "$work/$mode.$1.$2.$run.out" "$3")
		vals+=("${v:-na}")
	done
	echo "${vals[*]}" | tr ' ' '/'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "na" || b == "na" || b == 0) print "na"; else printf "%.2f", a / b }'; }
errors() { # TARGET SERVERS: total errors over the runs of this mode
	local n=0 v server
	for run in $(seq "$RUNS"); do
		for server in $2; do
			v=$(field "$work/$mode.$1.$server.$run.out" errors)
			n=$((n + ${v:-1}))
		done
	done
	echo "$n"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for m in $MODES; do
	set_mode "$m"
	for p in 1 64; do
		loads "cycle$p" "glockd redis" -workload cycle -conns "$CONNS" -pipeline "$p" -duration "$DURATION" -warmup "$WARMUP"
		loads "contend$p" "glockd redis" -workload contend -conns "$CONNS" -keys 8 -pipeline "$p" -duration "$DURATION" -warmup "$WARMUP"
		loads "shared$p" "glockd redis" -workload shared -conns "$CONNS" -pipeline "$p" -duration "$DURATION" -warmup "$WARMUP"
	done
	loads handover "glockd redis" -workload handover -conns "$WAITERS" -duration "$DURATION" -warmup "$WARMUP" -wait 5m
	for p in 1 64; do
		loads "tls$p" "glockdtls glockd" -workload cycle -conns "$CONNS" -pipeline "$p" -duration "$DURATION" -warmup "$WARMUP"
	done
	if [ "$m" = "${MODES%% *}" ]; then # memory once, in the first mode
		loads hold "glockd redis" -workload hold -conns "$HOLD_CONNS"
		loads orphan "glockd redis" -workload orphan -locks "$ORPHAN_LOCKS" -pipeline 64
		loads sharedorphan "glockd" -workload sharedorphan -locks "$ORPHAN_LOCKS" -pipeline 64
		loads dump "glockd redis" -workload dump -conns "$DUMPERS" -locks "$ORPHAN_LOCKS" -duration "$DURATION" -warmup "$WARMUP"
		loads holdtls "glockdtls glockd" -workload hold -conns "$HOLD_CONNS"
	fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

row() { printf '%-36s %24s %24s %7s  %s\n' "$@"; }
pair() { # LABEL TARGET KEY GOAL: a row of both servers' medians
	local g r
	g=$(med "$2" glockd "$3") r=$(med "$2" redis "$3")
	row "$1" "$g" "$r" "$(ratio "$g" "$r")" "$4"
}

echo
echo "glockd vs redis-server: median of $RUNS alternating runs, each against a fresh server"
echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); $(redis-server --version | cut -d' ' -f1-3); $(go version | cut -d' ' -f3)"
echo "load average (1, 5, 15 min) before: $load_before; after: $load_after"
for m in $MODES; do
	set_mode "$m"
	echo
	if [ "$m" = pinned ]; then
		echo "PINNED: each server on core 0, the load generator on core 1 (the main table)"
	else
		echo "COLOCATED: servers and load generator on all cores"
	fi
	row "target" "glockd" "redis" "ratio" "goal (pinned)"
	for p in 1 64; do
		goal=">= 1.0" p99goal="<= 1.1"
		[ "$p" = 64 ] && goal=">= 1.5" p99goal="-"
		pair "cycle p$p ops/s" "cycle$p" ops_per_s "$goal"
		pair "cycle p$p p50 us" "cycle$p" p50_us "-"
		pair "cycle p$p p99 us" "cycle$p" p99_us "$p99goal"
		row "cycle p$p ops/s, each run" "$(all "cycle$p" glockd ops_per_s)" "$(all "cycle$p" redis ops_per_s)" "" ""
	done
	for t in contend shared; do
		for p in 1 64; do
			pair "$t p$p ops/s" "$t$p" ops_per_s "-"
			pair "$t p$p p50 us" "$t$p" p50_us "-"
			pair "$t p$p p99 us" "$t$p" p99_us "-"
		done
	done
	pair "handover $WAITERS waiting: per s" handover handovers_per_s "-"
	pair "handover p50 us" handover p50_us "-"
	pair "handover p99 us" handover p99_us "-"
	pair "handover: probe's g/r p99 us" handover probe_p99_us "-"
	for p in 1 64; do
		g=$(med "tls$p" glockdtls ops_per_s) r=$(med "tls$p" glockd ops_per_s)
		row "TLS cycle p$p ops/s (vs plain)" "$g" "$r" "$(ratio "$g" "$r")" ">= 0.8 (p64)"
		g=$(med "tls$p" glockdtls p99_us) r=$(med "tls$p" glockd p99_us)
		row "TLS cycle p$p p99 us (vs plain)" "$g" "$r" "$(ratio "$g" "$r")" "-"
	done
	if [ "$m" = "${MODES%% *}" ]; then # the memory targets ran in the first mode
		pair "hold $HOLD_CONNS: RSS bytes/conn" hold bytes_per_conn "glockd <= 6144"
		pair "hold: release ms" hold release_ms "-"
		pair "orphan $ORPHAN_LOCKS: RSS bytes/lock" orphan bytes_per_lock "glockd <= 128"
		pair "orphan: release ms" orphan release_ms "glockd < 500"
		pair "orphan: acquire locks/s (p64)" orphan acquire_ops_per_s "-"
		pair "orphan: probe's g/r p99 us" orphan probe_p99_us "< 5000"
		pair "orphan: probe's max us in release" orphan probe_release_max_us "-"
		pair "shared names: RSS bytes/name" sharedorphan bytes_per_name "glockd <= 128"
		pair "shared: RSS bytes/extra holder" sharedorphan bytes_per_extra_holder "glockd <= 64"
		pair "shared names: release ms" sharedorphan release_ms "-"
		pair "dump $DUMPERS x $ORPHAN_LOCKS: probe p50 us" dump probe_p50_us "-"
		pair "dump: probe's g/r p99 us" dump probe_p99_us "glockd < 2000"
		pair "dump: probe's g/r max us" dump probe_max_us "glockd < 20000"
		pair "dump: dumps/s" dump dumps_per_s "-"
		pair "dump: RSS growth KB per dumper" dump rss_growth_per_dump_kb "glockd < 1024"
		g=$(med holdtls glockdtls bytes_per_conn) r=$(med holdtls glockd bytes_per_conn)
		row "hold over TLS: RSS bytes/conn (vs plain)" "$g" "$r" "$(ratio "$g" "$r")" "-"
	fi
	total=0
	for t in cycle1 cycle64 contend1 contend64 shared1 shared64 handover; do want "$t" || continue; total=$((total + $(errors "$t" "glockd redis"))); done
	for t in tls1 tls64; do want "$t" || continue; total=$((total + $(errors "$t" "glockdtls glockd"))); done
	if [ "$m" = "${MODES%% *}" ]; then
		for t in hold orphan dump; do want "$t" || continue; total=$((total + $(errors "$t" "glockd redis"))); done
		! want holdtls || total=$((total + $(errors holdtls "glockdtls glockd")))
		! want sharedorphan || total=$((total + $(errors sharedorphan glockd)))
	fi
	echo "bench errors over all runs of this table: $total"
done
echo
echo "redis's shared is INCR/DECR of a counter, its handover BLPOP/RPUSH of a one-token list, its dump SCAN COUNT 1000;"
echo "the TLS rows compare glockd over TLS (left) with glockd over plain TCP (right), not with redis;"
echo "redis releases nothing at a disconnect (release: na)"
[ -z "${KEEP:-}" ] || echo "raw output in $work"
