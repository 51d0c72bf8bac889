//go:build unix

package failover

import (
	"context"
	"sync"
	"time"
)

// monitor follows the nodes' roles through their /healthz and counts
// failovers: a node starting to serve after another node, or itself in an
// earlier term, had served. A node that does not answer (paused, down,
// slow) keeps the role it was last seen in, so a slow answer is not taken
// for a step-down.
type monitor struct {
	nodes []*node

	mu      sync.Mutex
	roles   map[*node]role // last known, never unknown
	current *node          // the node last seen serving
	count   int
	serving *node // seen serving in the latest round, nil if none
}

func newMonitor(nodes []*node) *monitor {
	return &monitor{nodes: nodes, roles: map[*node]role{}}
}

const monitorEvery = 50 * time.Millisecond

func (m *monitor) run(ctx context.Context) {
	hc := newHTTPClient(500 * time.Millisecond)
	t := time.NewTicker(monitorEvery)
	defer t.Stop()
	seen := make([]role, len(m.nodes))
	for {
		var wg sync.WaitGroup
		for i, n := range m.nodes {
			wg.Go(func() { seen[i] = n.role(hc) })
		}
		wg.Wait()
		m.update(seen)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *monitor) update(seen []role) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.serving = nil
	for i, n := range m.nodes {
		r := seen[i]
		if r == unknown {
			continue
		}
		if r == leader {
			m.serving = n
			if m.roles[n] != leader && m.current != nil {
				m.count++
			}
			m.current = n
		}
		m.roles[n] = r
	}
}

// leader returns the node seen serving in the latest round, or nil.
func (m *monitor) leader() *node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.serving
}

func (m *monitor) failovers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count
}
