package client

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"

	"golang.org/x/net/websocket"
)

// dialWebsocket connects to a ws:// URL. It dials the TCP connection itself
// rather than letting the websocket package do it, to keep its local address
// (the server's name for the connection) and to bound the handshake by ctx.
func dialWebsocket(ctx context.Context, d *net.Dialer, rawURL string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("glockd client: %q: want a ws:// URL", rawURL)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "80")
	}
	// The server checks that an Origin is present, not what it is.
	cfg, err := websocket.NewConfig(rawURL, "http://"+u.Host+"/")
	if err != nil {
		return nil, err
	}
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil, err
	}
	stop := watch(ctx, conn)
	ws, err := websocket.NewClient(cfg, conn)
	stop()
	if err != nil {
		conn.Close()
		return nil, contextError(ctx, err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, err
	}
	return newWebsocket(ws, conn.LocalAddr()), nil
}
