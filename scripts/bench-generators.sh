#!/usr/bin/env bash
# bench and tester load side by side: the same cycle workload (g and r of
# each connection's own lock), the same connections and pipeline, against
# one glockd, alternating; for each run the ops/s, the CPU time the load
# generator used (user+sys, from /usr/bin/time) and the daemon's (from
# /proc/PID/stat). docs/performance.md ("Two load generators") reads it.
#
#   scripts/bench-generators.sh            # RUNS=2 PIPELINES="1 64" DURATION=5s CONNS=50
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-2}
pipelines=${PIPELINES:-1 64}
duration=${DURATION:-5s}
conns=${CONNS:-50}
port=${PORT:-19931}

bin=$(mktemp -d)
go build -o "$bin/glockd" .
go build -o "$bin/bench" ./bench
go build -o "$bin/tester" ./tester
"$bin/glockd" -bind 127.0.0.1 -port "$port" -ws 0 2>/dev/null &
pid=$!
trap 'kill $pid; rm -rf "$bin"' EXIT
sleep 1
tck=$(getconf CLK_TCK)
daemon_cpu() { awk -v t="$tck" '{printf "%.2f", ($14+$15)/t}' "/proc/$pid/stat"; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-7s %8s %4s %12s %10s %12s %12s\n' tool pipeline run ops/s gen_cpu_s gen_us/op daemon_us/op
for p in $pipelines; do
	for run in $(seq "$runs"); do
		for tool in bench tester; do
			c0=$(daemon_cpu)
			if [ $tool = bench ]; then
				# bench measures after a 1 s warm-up, whose ops it does not count.
				out=$(/usr/bin/time -f 'cpu %U %S' "$bin/bench" -addr "127.0.0.1:$port" -workload cycle \
					-conns "$conns" -pipeline "$p" -duration "$duration" -warmup 0s 2>&1)
				ops=$(sed -n 's/^RESULT .* ops=\([0-9]*\) ops_per_s=\([0-9]*\).*/\1 \2/p' <<<"$out")
			else
				out=$(/usr/bin/time -f 'cpu %U %S' "$bin/tester" load -host "127.0.0.1:$port" -workload cycle \
					-c "$conns" -pipeline "$p" -d "$duration" 2>&1)
				ops=$(sed -n 's/^ops *\([0-9]*\) in .* = \([0-9]*\) ops\/s.*/\1 \2/p' <<<"$out")
			fi
			c1=$(daemon_cpu)
			read -r n rate <<<"$ops"
			gen=$(awk '/^cpu /{printf "%.2f", $2+$3}' <<<"$out")
			printf '%-7s %8s %4s %12s %10s %12.2f %12.2f\n' $tool "$p" "$run" "$rate" "$gen" \
				"$(awk -v g="$gen" -v n="$n" 'BEGIN{print g*1e6/n}')" \
				"$(awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN{print (b-a)*1e6/n}')"
		done
	done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
