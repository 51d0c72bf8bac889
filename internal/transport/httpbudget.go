package transport

import (
	"container/list"
	"net"
	"net/http"
	"sync"
)

// HTTPBudget bounds the HTTP connections that are not websockets, over
// every HTTP listener of a server: a browser, a scraper or a flood of idle
// connections must not use up the file descriptors that lock clients need.
// It follows each connection through http.Server.ConnState. Over the bound
// the connection idle the longest is closed (one that has not sent a whole
// request yet counts as idle): a flood of idle connections then only churns
// itself, and a websocket client, which sends its upgrade at once, still
// gets through. Only when every connection is busy with a request is the
// new one closed. A websocket leaves the budget when it is hijacked and
// counts in -max-conns instead.
type HTTPBudget struct {
	max int

	mu    sync.Mutex
	conns map[net.Conn]*httpConn
	idle  list.List // of net.Conn, the longest idle at the front
	live  int       // connections neither closed, hijacked nor evicted
}

type httpConn struct {
	idle    *list.Element // nil while serving a request
	evicted bool
}

func NewHTTPBudget(maxConns int) *HTTPBudget {
	return &HTTPBudget{max: maxConns, conns: make(map[net.Conn]*httpConn)}
}

// ConnState is an http.Server's ConnState hook.
func (b *HTTPBudget) ConnState(nc net.Conn, state http.ConnState) {
	b.mu.Lock()
	var evict net.Conn
	switch state {
	case http.StateNew:
		c := &httpConn{idle: b.idle.PushBack(nc)}
		b.conns[nc] = c
		b.live++
		if b.live > b.max {
			evict = b.evictLocked()
		}
	case http.StateActive:
		if c := b.conns[nc]; c != nil && c.idle != nil {
			b.idle.Remove(c.idle)
			c.idle = nil
		}
	case http.StateIdle:
		if c := b.conns[nc]; c != nil && !c.evicted && c.idle == nil {
			c.idle = b.idle.PushBack(nc)
		}
	case http.StateHijacked, http.StateClosed:
		if c := b.conns[nc]; c != nil {
			if c.idle != nil {
				b.idle.Remove(c.idle)
			}
			if !c.evicted {
				b.live--
			}
			delete(b.conns, nc)
		}
	}
	b.mu.Unlock()
	if evict != nil {
		// The server's goroutine for it sees the close and reports
		// StateClosed, which forgets it.
		evict.Close()
	}
}

// evictLocked picks the connection idle the longest, the new one at worst,
// and takes it out of the count.
func (b *HTTPBudget) evictLocked() net.Conn {
	front := b.idle.Front()
	if front == nil {
		return nil // cannot happen: the new connection is idle
	}
	nc := b.idle.Remove(front).(net.Conn)
	c := b.conns[nc]
	c.idle, c.evicted = nil, true
	b.live--
	return nc
}

// Open is how many connections count against the budget now.
func (b *HTTPBudget) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.live
}
