package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// minShare is the least time an address gets from a dial with a deadline,
// unless less than that is left in all (net.Dialer does the same with the
// addresses of one name).
const minShare = 2 * time.Second

// dialFirst connects to the first of addrs that accepts and, if accept is
// set, passes it; accept gets the address's share of the time.
func dialFirst(ctx context.Context, d *net.Dialer, tlsConf *tls.Config, network string, addrs []string,
	accept func(context.Context, *Client) error) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("glockd client: no address to dial")
	}
	var errs []error
	for i, addr := range addrs {
		actx, cancel := share(ctx, len(addrs)-i)
		c, err := dialOne(actx, d, tlsConf, network, addr)
		if err == nil && accept != nil {
			if err = accept(actx, c); err != nil {
				c.Close()
			}
		}
		cancel()
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, fmt.Errorf("glockd client: no address answered: %w", errors.Join(errs...))
}

// share returns ctx bounded to 1/left of its remaining time (at least
// minShare), so that an address that never answers leaves time for the
// others.
func share(ctx context.Context, left int) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok || left <= 1 {
		return context.WithCancel(ctx)
	}
	remaining := time.Until(dl)
	part := max(remaining/time.Duration(left), min(minShare, remaining))
	return context.WithTimeout(ctx, part)
}

// dialOne connects to one address; over TCP with TLS when tlsConf is set
// (a ws URL uses TLS when it is wss).
func dialOne(ctx context.Context, d *net.Dialer, tlsConf *tls.Config, network, addr string) (*Client, error) {
	if network == "ws" {
		return dialWebsocket(ctx, d, tlsConf, addr)
	}
	if tlsConf != nil && network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, fmt.Errorf("glockd client: TLS over %q: want tcp", network)
	}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if tlsConf == nil {
		return New(conn), nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		conn.Close()
		return nil, err
	}
	tc, err := tlsHandshake(ctx, conn, tlsConf, host)
	if err != nil {
		return nil, err
	}
	return New(tc), nil
}
