package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/net/websocket"
)

// UpgradeError reports a websocket handshake the server refused: it
// answered with an HTTP status other than 101 Switching Protocols. A 403 is
// the server's origin policy (-ws-origin) refusing Origin.
type UpgradeError struct {
	URL        string
	Origin     string // the Origin header sent
	StatusCode int    // 0 if the status line could not be read
	Status     string // e.g. "403 Forbidden"
}

func (e *UpgradeError) Error() string {
	if e.StatusCode == 0 {
		return fmt.Sprintf("glockd client: %s: websocket upgrade refused (the server did not answer 101 Switching Protocols)", e.URL)
	}
	msg := fmt.Sprintf("glockd client: %s: websocket upgrade refused: HTTP %s", e.URL, e.Status)
	if e.StatusCode == 403 {
		msg += fmt.Sprintf(" (the server's origin policy, -ws-origin, does not allow the origin %s)", e.Origin)
	}
	return msg
}

// wsOrigin is the Origin a browser would send for a page on the server
// itself: scheme://host[:port], nothing after, http for ws and https for
// wss. The server compares it exactly with its -ws-origin list.
func wsOrigin(u *url.URL) string {
	scheme := "http"
	if u.Scheme == "wss" {
		scheme = "https"
	}
	return scheme + "://" + u.Host
}

// dialWebsocket connects to a ws:// or wss:// URL; wss uses tlsConf (nil:
// the system's roots). It dials the TCP connection itself rather than
// letting the websocket package do it, to keep its local address (the
// server's name for the connection) and to bound the handshakes by ctx.
func dialWebsocket(ctx context.Context, d *net.Dialer, tlsConf *tls.Config, rawURL string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	defaultPort := "80"
	switch u.Scheme {
	case "ws":
	case "wss":
		defaultPort = "443"
	default:
		return nil, fmt.Errorf("glockd client: %q: want a ws:// or wss:// URL", rawURL)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), defaultPort)
	}
	cfg, err := websocket.NewConfig(rawURL, wsOrigin(u))
	if err != nil {
		return nil, err
	}
	tcp, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil, err
	}
	var conn net.Conn = tcp
	if u.Scheme == "wss" {
		if conn, err = tlsHandshake(ctx, tcp, tlsConf, u.Hostname()); err != nil {
			return nil, err
		}
	}
	hc := &handshakeConn{Conn: conn, keep: true}
	stop := watch(ctx, conn)
	ws, err := websocket.NewClient(cfg, hc)
	stop()
	if err != nil {
		conn.Close()
		if errors.Is(err, websocket.ErrBadStatus) {
			code, status := hc.status()
			return nil, &UpgradeError{URL: rawURL, Origin: cfg.Origin.String(), StatusCode: code, Status: status}
		}
		return nil, contextError(ctx, err)
	}
	hc.keep, hc.head = false, nil
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, err
	}
	return newWebsocket(ws, tcp.LocalAddr()), nil
}

// handshakeConn keeps the first bytes the server sends, so that a refused
// upgrade can say with which status: the websocket package only says "bad
// status". It keeps nothing once the handshake is over.
type handshakeConn struct {
	net.Conn
	keep bool // until the handshake is over
	head []byte
}

// headMax is enough for any HTTP status line.
const headMax = 512

func (h *handshakeConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	if h.keep {
		h.head = append(h.head, p[:min(n, headMax-len(h.head))]...)
		h.keep = len(h.head) < headMax
	}
	return n, err
}

// status parses the status line kept: "HTTP/1.1 403 Forbidden" gives 403
// and "403 Forbidden".
func (h *handshakeConn) status() (int, string) {
	line, _, err := bufio.NewReader(bytes.NewReader(h.head)).ReadLine()
	if err != nil {
		return 0, ""
	}
	_, status, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return 0, ""
	}
	code, err := strconv.Atoi(string(bytes.SplitN(status, []byte(" "), 2)[0]))
	if err != nil {
		return 0, ""
	}
	return code, string(status)
}

// tlsHandshake runs a TLS client handshake on conn, bounded by ctx; the
// server name defaults to host. On error conn is closed.
func tlsHandshake(ctx context.Context, conn net.Conn, conf *tls.Config, host string) (net.Conn, error) {
	if conf == nil {
		conf = &tls.Config{}
	}
	if conf.ServerName == "" && !conf.InsecureSkipVerify {
		conf = conf.Clone()
		conf.ServerName = host
	}
	tc := tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, contextError(ctx, err)
	}
	return tc, nil
}
