package main

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runDump has one connection take cfg.locks locks, then cfg.conns
// connections list the whole table in a loop (glockd: d; Redis: SCAN with
// COUNT 1000 until the cursor is back at 0) while a bystander takes and
// releases a lock every cfg.probeEvery: the bystander's round trips, the
// dumps completed, and the server's RSS growth while they run, per dumping
// connection. Each dump must list at least cfg.locks entries.
func runDump(cfg *config, p protocol) (result, error) {
	errs := newErrorLog(cfg)
	owner, err := dial(cfg, p)
	if err != nil {
		return nil, err
	}
	defer owner.nc.Close()
	if err := take(owner, 64, get, "d", cfg.locks, func(n int64) bool { return n == 1 }, errs); err != nil {
		return nil, err
	}
	time.Sleep(cfg.settle)
	rss0, err := rssKB(cfg.pid)
	if err != nil {
		return nil, err
	}

	var dumps, short, listed atomic.Int64
	halt := make(chan struct{})
	var wg sync.WaitGroup
	for range cfg.conns {
		c, err := dial(cfg, p)
		if err != nil {
			close(halt)
			wg.Wait()
			return nil, err
		}
		defer c.nc.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-halt:
					return
				default:
				}
				n, err := listAll(c, cfg.proto, &listed)
				if err != nil {
					errs.add("dump: %v", err)
					return
				}
				if n < cfg.locks {
					short.Add(1)
				}
				dumps.Add(1)
			}
		}()
	}
	// The server's RSS, sampled while the dumps run.
	var rssMax atomic.Int64
	rssMax.Store(rss0)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-halt:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if kb, err := rssKB(cfg.pid); err == nil && kb > rssMax.Load() {
				rssMax.Store(kb)
			}
		}
	}()
	time.Sleep(cfg.warmup)
	// The probe's lock is held by a connection of its own on glockd, so
	// that its g and r change no count; Redis's DEL would delete it.
	pr, err := startProbe(cfg, p, cfg.proto == "glockd")
	if err != nil {
		close(halt)
		wg.Wait()
		return nil, err
	}
	d0, l0, t0 := dumps.Load(), listed.Load(), time.Now()
	time.Sleep(cfg.duration)
	all, _ := pr.stop()
	done, entries := dumps.Load()-d0, listed.Load()-l0
	elapsed := time.Since(t0)
	close(halt)
	<-sampled
	// The dumpers finish the dump they are in: the server must not be
	// left writing to a closed connection's buffer.
	wg.Wait()
	if n := short.Load(); n > 0 {
		errs.add("%d dumps listed fewer than %d entries", n, cfg.locks)
	}
	errs.n += pr.errs.count()
	growth := int64(-1)
	if rss0 >= 0 {
		growth = (rssMax.Load() - rss0) / int64(cfg.conns)
	}
	return result{
		{"locks", cfg.locks}, {"dumpers", cfg.conns},
		{"dumps", done}, {"dumps_per_s", float64(done) / elapsed.Seconds()},
		{"entries_per_s", float64(entries) / elapsed.Seconds()},
		{"probe_p50_us", all.quantile(0.5)}, {"probe_p99_us", all.quantile(0.99)},
		{"probe_max_us", all.maxUs()}, {"probe_rounds", int64(all.n)},
		{"rss_before_kb", rss0}, {"rss_max_kb", rssMax.Load()},
		{"rss_growth_per_dump_kb", growth},
		{"errors", errs.count()},
	}, nil
}

// listAll lists the whole table once and returns how many entries it had,
// adding them to listed as they come.
func listAll(c *conn, proto string, listed *atomic.Int64) (int, error) {
	if proto == "glockd" {
		return listGlockd(c, listed)
	}
	return scanRedis(c, listed)
}

// listGlockd sends d and a ping, and counts d's lines up to the ping's
// reply. It reads in big pieces and only counts newlines: on the client's
// one core, the dumpers must leave the bystander time to run.
func listGlockd(c *conn, listed *atomic.Int64) (int, error) {
	if err := c.write([]byte("d\nping\n")); err != nil {
		return 0, err
	}
	const pong = "\n1 pong\n"
	if c.buf == nil || cap(c.buf) < 256<<10 {
		c.buf = make([]byte, 256<<10)
	}
	buf := c.buf[:cap(c.buf)]
	var tail []byte
	n := 0
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.timeout))
		m, err := c.r.Read(buf)
		if err != nil {
			return n, err
		}
		lines := bytes.Count(buf[:m], []byte{'\n'})
		n += lines
		listed.Add(int64(lines))
		tail = append(tail, buf[max(0, m-len(pong)):m]...)
		tail = tail[max(0, len(tail)-len(pong)):]
		if string(tail) == pong {
			return n - 1, nil // the pong's line
		}
	}
}

// scanRedis walks the keys with SCAN cursor COUNT 1000 until the cursor
// comes back to 0, and counts them.
func scanRedis(c *conn, listed *atomic.Int64) (int, error) {
	cursor, n := "0", 0
	for {
		if err := c.write(appendCommand(nil, "SCAN", cursor, "COUNT", "1000")); err != nil {
			return n, err
		}
		c.nc.SetReadDeadline(time.Now().Add(c.timeout))
		line, err := readLine(c.r)
		if err != nil {
			return n, err
		}
		if string(line) != "*2" {
			return n, fmt.Errorf("SCAN: unexpected reply %q", line)
		}
		if cursor, err = readBulk(c.r); err != nil {
			return n, err
		}
		line, err = readLine(c.r)
		if err != nil {
			return n, err
		}
		keys, err := strconv.Atoi(string(line[min(1, len(line)):]))
		if err != nil || len(line) == 0 || line[0] != '*' {
			return n, fmt.Errorf("SCAN: unexpected keys %q", line)
		}
		for range keys {
			if err := skipBulk(c.r); err != nil {
				return n, err
			}
		}
		n += keys
		listed.Add(int64(keys))
		if cursor == "0" {
			return n, nil
		}
	}
}

// skipBulk reads a bulk string and drops it.
func skipBulk(r *bufio.Reader) error {
	line, err := readLine(r)
	if err != nil {
		return err
	}
	size, err := strconv.Atoi(string(line[min(1, len(line)):]))
	if err != nil || len(line) == 0 || line[0] != '$' || size < 0 {
		return fmt.Errorf("want a bulk string, got %q", line)
	}
	_, err = r.Discard(size + 2)
	return err
}
