// Package ha makes a glockd one node of an active/standby group: several
// nodes, one serving, elected through etcd (docs/ha.md).
//
// Lock tables are never replicated: a lock dies with its connection, and a
// failover ends every connection. What needs consensus is only which node
// serves, and the fencing-token counter; etcd's election (the concurrency
// package) decides the first, and blocks of tokens reserved in etcd by the
// leader the second.
//
// The rule that keeps two leaders from serving at once is a deadline that
// the leader keeps on its own monotonic clock: each successful renewal of
// its etcd lease moves it to the time the renewal was sent + TTL − margin.
// etcd counts the TTL from when it received the renewal, so the deadline
// always comes before etcd lets the lease expire and another node is
// elected. The lock manager checks the deadline (Term.Valid) before every
// request it runs and again before every grant in it, and a connection
// checks it once more before it writes replies; past it the node answers
// nothing, closes its listeners and connections, and campaigns again. A
// newly elected node waits -takeover-delay before it opens its listeners,
// so that clients of a leader that could not be told (paused, or cut off
// from them) have given up their session first.
//
// The package only reports leadership: it publishes the term it serves in a
// Leadership that the lock manager reads, and calls the server's Hooks to
// open and close the lock listeners. It never sees the server, the manager
// or a connection.
package ha

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Config configures a node of an active/standby group.
type Config struct {
	Endpoints     []string      // etcd client URLs
	Prefix        string        // keys of this group in etcd, ending in "/"
	LeaseTTL      time.Duration // whole seconds
	TakeoverDelay time.Duration // a new leader's wait before it serves
	Advertise     string        // host:port that clients are told to use

	// etcd TLS: a client certificate (both or neither) and the CA that
	// signed etcd's; all empty for plain connections.
	CertFile, KeyFile, CAFile string
}

// Defaults of the HA flags.
const (
	DefaultEtcdPrefix    = "/glockd/default/"
	DefaultLeaseTTL      = 5 * time.Second
	DefaultTakeoverDelay = 10 * time.Second
)

// Finish checks the HA flags, given only with -etcd (the comma-separated
// endpoints; setFlags names the flags given), fills in what follows from
// the server's -metrics-addr and TCP address, and returns the config: nil
// without -etcd.
func (c *Config) Finish(etcd string, setFlags map[string]bool, metricsAddr, tcpAddr string) (*Config, error) {
	if etcd == "" {
		for _, f := range []string{"etcd-prefix", "lease-ttl", "takeover-delay", "advertise", "etcd-cert", "etcd-key", "etcd-ca"} {
			if setFlags[f] {
				return nil, fmt.Errorf("-%s needs -etcd", f)
			}
		}
		return nil, nil
	}
	for _, ep := range strings.Split(etcd, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			c.Endpoints = append(c.Endpoints, ep)
		}
	}
	if len(c.Endpoints) == 0 {
		return nil, errors.New("-etcd: no endpoint")
	}
	if !strings.HasPrefix(c.Prefix, "/") {
		return nil, fmt.Errorf("-etcd-prefix %q: want a key prefix starting with /", c.Prefix)
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.LeaseTTL < time.Second || c.LeaseTTL%time.Second != 0 {
		return nil, fmt.Errorf("-lease-ttl %v: want whole seconds, at least 1s (etcd counts leases in seconds)", c.LeaseTTL)
	}
	if c.TakeoverDelay < 0 {
		return nil, fmt.Errorf("-takeover-delay %v: want 0 or more", c.TakeoverDelay)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("-etcd-cert and -etcd-key go together")
	}
	if metricsAddr == "" {
		return nil, errors.New("-etcd needs -metrics-addr: a standby serves /healthz and /metrics only there")
	}
	if c.Advertise == "" {
		if tcpAddr == "" {
			return nil, errors.New("-etcd with -port 0 needs -advertise")
		}
		c.Advertise = defaultAdvertise(tcpAddr)
	}
	if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
		return nil, fmt.Errorf("-advertise %q: want host:port", c.Advertise)
	}
	return c, nil
}

// defaultAdvertise is the TCP listener's address, with the host name in
// place of an address that listens on every interface.
func defaultAdvertise(tcpAddr string) string {
	host, port, err := net.SplitHostPort(tcpAddr)
	if err != nil {
		return tcpAddr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if name, err := os.Hostname(); err == nil {
			host = name
		}
	}
	return net.JoinHostPort(host, port)
}
