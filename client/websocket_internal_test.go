package client

import (
	"net/url"
	"testing"
)

func TestWebsocketOrigin(t *testing.T) {
	for raw, want := range map[string]string{
		"ws://127.0.0.1:9998/":      "http://127.0.0.1:9998",
		"ws://localhost:9998/path":  "http://localhost:9998",
		"wss://glockd.example:443/": "https://glockd.example:443",
		"ws://[::1]:9998":           "http://[::1]:9998",
		"wss://glockd.example/":     "https://glockd.example",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := wsOrigin(u); got != want {
			t.Errorf("origin of %s: %q, want %q", raw, got, want)
		}
	}
}

func TestHandshakeStatus(t *testing.T) {
	for head, want := range map[string]int{
		"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n": 403,
		"HTTP/1.1 400 Bad Request\r\n":                        400,
		"HTTP/1.1 503 Service Unavailable":                    503,
		"garbage":                                             0,
		"":                                                    0,
	} {
		h := &handshakeConn{head: []byte(head)}
		if code, _ := h.status(); code != want {
			t.Errorf("status of %q: %d, want %d", head, code, want)
		}
	}
}
