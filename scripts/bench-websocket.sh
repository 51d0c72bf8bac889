#!/usr/bin/env bash
# Measures glockd's websocket transport against its TCP one, side by side
# in one run, with the tester's load generator (go run ./tester load; built
# once here): one daemon serves both, and TCP and websocket runs alternate,
# RUNS of each, for the cycle workload at pipeline 1 and 64. The table shows
# the medians and the websocket's share of TCP's ops/s, and the daemon's CPU
# time per operation (from /proc/PID/stat, which is less at the mercy of
# other load on the machine than ops/s). Two tables, as in
# bench-vs-redis.sh: pinned (the daemon on core 0, the load generator on
# core 1) and colocated. Loopback only. Not part of CI; docs/performance.md
# has the figures it measured.
#
#   scripts/bench-websocket.sh                      # about 4 minutes
#   DURATION=2s RUNS=1 scripts/bench-websocket.sh
#
# Environment:
#   MODES      pinned and/or colocated (default: "pinned colocated")
#   DURATION   each run's length (default 5s)
#   RUNS       runs per transport and pipeline (default 3)
#   CONNS      connections (default 50)
#   KEEP       directory for the raw output (default: a temporary one, removed)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
MODES=${MODES:-pinned colocated}
DURATION=${DURATION:-5s}
RUNS=${RUNS:-3}
CONNS=${CONNS:-50}

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

echo "building glockd and the tester in $work" >&2
(cd "$repo" && go build -o "$work/glockd" . && go build -o "$work/tester" ./tester)

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

# json KEY FILE: a number from the tester's -json output.
json() { sed -n "s/^ *\"$1\": \([0-9.e+-]*\),\{0,1\}$/\1/p" "$2" | head -1; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b == "" || b == 0) print "na"; else printf "%.2f", a / b }'; }

# cpu_ticks is the daemon's user and system time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for mode in $MODES; do
	server_cpu=() client_cpu=()
	if [ "$mode" = pinned ]; then
		server_cpu=(taskset -c 0) client_cpu=(taskset -c 1)
	fi
	tcp=$(free_port) ws=$(free_port)
	"${server_cpu[@]}" "$work/glockd" -bind 127.0.0.1 -port "$tcp" -ws "$ws" >>"$work/glockd.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$ws") 2>/dev/null && break
		sleep 0.05
	done
	for p in 1 64; do
		echo "$mode: pipeline $p" >&2
		for run in $(seq "$RUNS"); do
			for t in tcp ws; do
				target=(-host "127.0.0.1:$tcp")
				[ "$t" = ws ] && target=(-ws "ws://127.0.0.1:$ws/")
				cpu0=$(cpu_ticks)
				"${client_cpu[@]}" "$work/tester" load "${target[@]}" -c "$CONNS" -d "$DURATION" -pipeline "$p" -json \
					>"$work/$mode.$p.$t.$run.json" 2>"$work/$mode.$p.$t.$run.err" ||
					echo "tester load $mode p$p $t run $run failed: $(tail -1 "$work/$mode.$p.$t.$run.err")" >&2
				echo $(($(cpu_ticks) - cpu0)) >"$work/$mode.$p.$t.$run.ticks"
			done
		done
	done
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "glockd websocket vs TCP (tester load, cycle, $CONNS connections): median of $RUNS alternating runs"
echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')); $(go version | cut -d' ' -f3)"
echo "load average (1, 5, 15 min) before: $load_before; after: $load_after"
printf '%-10s %-9s %12s %12s %6s %10s %10s %10s %10s %9s %9s  %s\n' mode pipeline "tcp ops/s" "ws ops/s" "ws/tcp" "tcp p50us" "ws p50us" "tcp p99us" "ws p99us" "tcp us/op" "ws us/op" "ws/tcp of each run"
for mode in $MODES; do
	for p in 1 64; do
		declare -A v=()
		each=()
		for t in tcp ws; do
			for k in ops_per_sec p50_us p99_us; do
				vals=()
				for run in $(seq "$RUNS"); do
					x=$(json "$k" "$work/$mode.$p.$t.$run.json")
					[ -n "$x" ] && vals+=("$x")
				done
				v[$t.$k]=$([ ${#vals[@]} -gt 0 ] && median "${vals[@]}" || echo "")
			done
			# The daemon's CPU per operation, over all runs together.
			ticks=0 ops=0
			for run in $(seq "$RUNS"); do
				ticks=$((ticks + $(cat "$work/$mode.$p.$t.$run.ticks" 2>/dev/null || echo 0)))
				ops=$(awk -v a="$ops" -v b="$(json ops "$work/$mode.$p.$t.$run.json")" 'BEGIN{print a + b}')
			done
			v[$t.cpu]=$(awk -v t="$ticks" -v n="$ops" -v hz="$hz" 'BEGIN{ if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "na" }')
		done
		for run in $(seq "$RUNS"); do
			each+=("$(ratio "$(json ops_per_sec "$work/$mode.$p.ws.$run.json")" "$(json ops_per_sec "$work/$mode.$p.tcp.$run.json")")")
		done
		printf '%-10s %-9s %12.0f %12.0f %6s %10.0f %10.0f %10.0f %10.0f %9s %9s  %s\n' "$mode" "$p" \
			"${v[tcp.ops_per_sec]:-0}" "${v[ws.ops_per_sec]:-0}" "$(ratio "${v[ws.ops_per_sec]}" "${v[tcp.ops_per_sec]}")" \
			"${v[tcp.p50_us]:-0}" "${v[ws.p50_us]:-0}" "${v[tcp.p99_us]:-0}" "${v[ws.p99_us]:-0}" \
			"${v[tcp.cpu]}" "${v[ws.cpu]}" "${each[*]}"
		unset v
	done
done
echo "goal: ws/tcp >= 0.80 at pipeline 1, >= 0.50 at pipeline 64"
[ -z "${KEEP:-}" ] || echo "raw output in $work"
