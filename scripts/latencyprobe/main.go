// Command latencyprobe is a bystander client for benchmarks: while a load
// runs against a glockd server, it sends "g NAME" and "r NAME" on one
// connection (one command in flight, a pause of -interval between commands)
// and times every reply, to show whether other clients' work stalls the lock
// manager. NAME is held throughout by a second connection of the probe, so
// the commands fail ("0 Lock Get Failure", "0 Lock Release Failure") and the
// server's lock count stays put: lockbench checks it. They still take the
// manager's path of any g and r. On SIGINT or SIGTERM, or after -duration,
// it prints one line:
//
//	PROBE ops=4210 p50_us=61.2 p99_us=830.5 p999_us=2101.0 max_us=2890.3 errors=0
//
// Used by scripts/bench-vs-redis.sh during lockbench's orphan workload.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9999", "glockd's TCP address")
	name := flag.String("name", fmt.Sprintf("latencyprobe-%d", os.Getpid()), "the probe's lock")
	interval := flag.Duration("interval", time.Millisecond, "pause between commands")
	duration := flag.Duration("duration", 0, "stop after this long (0: at SIGINT or SIGTERM)")
	timeout := flag.Duration("timeout", 5*time.Second, "reply timeout; a missing reply ends the probe")
	flag.Parse()

	holder, err := net.DialTimeout("tcp", *addr, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "latencyprobe:", err)
		os.Exit(1)
	}
	defer holder.Close()
	holder.SetDeadline(time.Now().Add(*timeout))
	fmt.Fprintf(holder, "g %s\n", *name)
	if reply, err := bufio.NewReader(holder).ReadString('\n'); reply != "1 Lock Get Success: "+*name+"\n" {
		fmt.Fprintf(os.Stderr, "latencyprobe: g %s: %q, %v\n", *name, reply, err)
		os.Exit(1)
	}
	nc, err := net.DialTimeout("tcp", *addr, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "latencyprobe:", err)
		os.Exit(1)
	}
	defer nc.Close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	var end <-chan time.Time
	if *duration > 0 {
		end = time.After(*duration)
	}

	r := bufio.NewReader(nc)
	cmds := [2]string{"g " + *name + "\n", "r " + *name + "\n"}
	wants := [2]string{"0 Lock Get Failure: " + *name + "\n", "0 Lock Release Failure: " + *name + "\n"}
	var lat []time.Duration
	errors := 0
loop:
	for i := 0; ; i++ {
		select {
		case <-stop:
			break loop
		case <-end:
			break loop
		case <-time.After(*interval):
		}
		start := time.Now()
		nc.SetDeadline(start.Add(*timeout))
		if _, err := nc.Write([]byte(cmds[i%2])); err != nil {
			fmt.Fprintln(os.Stderr, "latencyprobe:", err)
			errors++
			break
		}
		reply, err := r.ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, "latencyprobe:", err)
			errors++
			break
		}
		lat = append(lat, time.Since(start))
		if reply != wants[i%2] {
			fmt.Fprintf(os.Stderr, "latencyprobe: %q: reply %q\n", strings.TrimSpace(cmds[i%2]), reply)
			errors++
		}
	}
	slices.Sort(lat)
	at := func(q float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Nanoseconds()) / 1e3
	}
	fmt.Printf("PROBE ops=%d p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%d\n",
		len(lat), at(0.5), at(0.99), at(0.999), at(1), errors)
	if errors > 0 {
		os.Exit(1)
	}
}
