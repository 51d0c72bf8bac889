package main

// sharedLock is one name of the shared table: its holders in the order they
// took it, as sd and "dump shared" list them.
type sharedLock struct {
	name       string
	head, tail *sharedHolder
	count      int
}

// sharedHolder is one connection's hold on a shared lock, linked both into
// the lock's list and (by name) into the connection's map, so that release by
// either side is O(1).
type sharedHolder struct {
	conn       *connState
	lock       *sharedLock
	prev, next *sharedHolder
	since      int64 // when it was granted, on the manager's clock
	// older and newer link every shared holder in the order of grants.
	older, newer *sharedHolder
}

// holderAges is the order of grants of every shared holder, so that the
// oldest shared hold is found without a scan.
type holderAges struct{ oldest, newest *sharedHolder }

func (a *holderAges) push(h *sharedHolder) {
	h.older = a.newest
	if a.newest != nil {
		a.newest.newer = h
	} else {
		a.oldest = h
	}
	a.newest = h
}

func (a *holderAges) remove(h *sharedHolder) {
	if h.older != nil {
		h.older.newer = h.newer
	} else {
		a.oldest = h.newer
	}
	if h.newer != nil {
		h.newer.older = h.older
	} else {
		a.newest = h.older
	}
	h.older, h.newer = nil, nil
}

// takeShared adds c to the holders of name and returns how many there are
// (lockTaken), or lockTooMany when c is at its limit of locks.
func (m *manager) takeShared(c *connState, name []byte) (holders int, res lockResult) {
	if h := c.sharedHeld[string(name)]; h != nil {
		return h.lock.count, lockTaken
	}
	if c.lockCount() >= m.maxLocksPerConn {
		return 0, lockTooMany
	}
	return m.sharedGrant(c, string(name)), lockTaken
}

func (m *manager) sharedGrant(c *connState, name string) int {
	l := m.shared[name]
	if l == nil {
		l = &sharedLock{name: name}
		m.shared[name] = l
	}
	h := &sharedHolder{conn: c, lock: l, prev: l.tail, since: m.now}
	m.sharedAges.push(h)
	if l.tail != nil {
		l.tail.next = h
	} else {
		l.head = h
	}
	l.tail = h
	l.count++
	if c.sharedHeld == nil {
		c.sharedHeld = make(map[string]*sharedHolder)
	}
	c.sharedHeld[l.name] = h
	if m.log != nil {
		m.logf("acquire shared", c, "lock", l.name, "holders", l.count)
	}
	return l.count
}

// sharedUnlock releases c's hold on name, if it has one.
func (m *manager) sharedUnlock(c *connState, name []byte) bool {
	h := c.sharedHeld[string(name)]
	if h == nil {
		return false
	}
	if m.log != nil {
		m.logf("release shared", c, "lock", h.lock.name)
	}
	m.dropHolder(h)
	return true
}

// sharedRelease drops c's hold on name, for orphaning.
func (m *manager) sharedRelease(c *connState, name string) {
	if h := c.sharedHeld[name]; h != nil {
		m.dropHolder(h)
	}
}

func (m *manager) dropHolder(h *sharedHolder) {
	l := h.lock
	m.holds[sharedHold].observe(m.now - h.since)
	m.sharedAges.remove(h)
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		l.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	} else {
		l.tail = h.prev
	}
	l.count--
	delete(h.conn.sharedHeld, l.name)
	if len(h.conn.sharedHeld) == 0 {
		h.conn.sharedHeld = nil
	}
	m.admitSharedWaiters(l.name)
	if l.count == 0 {
		delete(m.shared, l.name)
	}
}

// admitSharedWaiters grants the shared lock to its oldest waiters while the
// oldest one's MAX allows another holder. A waiter whose MAX is full blocks
// the ones behind it: strict FIFO, no overtaking.
// It runs whenever the count drops or the head leaves the queue.
func (m *manager) admitSharedWaiters(name string) {
	q := m.sharedWaiters[name]
	for q != nil && !q.empty() && m.sharedHolders(name) < q.head.max {
		w := popWaiter(m.sharedWaiters, q, name)
		holders := m.sharedGrant(w.conn, name)
		m.resolve(w, waitResult{granted: true, holders: holders})
	}
}

// sharedHolders is sharedCount for a name already a string.
func (m *manager) sharedHolders(name string) int {
	if l := m.shared[name]; l != nil {
		return l.count
	}
	return 0
}

// sharedCount is the number of holders of name.
func (m *manager) sharedCount(name []byte) int {
	if l := m.shared[string(name)]; l != nil {
		return l.count
	}
	return 0
}

// sharedQueueEmpty reports whether nobody waits for the shared lock name.
func (m *manager) sharedQueueEmpty(name []byte) bool {
	q := m.sharedWaiters[string(name)]
	return q == nil || q.empty()
}
