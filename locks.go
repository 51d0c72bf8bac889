package main

// Exclusive locks: taking, releasing and handing them over, with their
// fencing tokens. The table itself is in locktable.go.

// lockResult is what an attempt to take a lock came to.
type lockResult uint8

const (
	lockTaken   lockResult = iota // the caller holds it (now, or already)
	lockBusy                      // another connection holds it
	lockTooMany                   // the caller is at its limit of locks
)

// lock takes the exclusive lock name for c.
func (m *manager) lock(c *connState, name []byte) lockResult {
	l, _, frag := m.exclusive.get(name)
	if l != nil {
		if l.owner == c {
			return lockTaken
		}
		return lockBusy
	}
	if c.lockCount() >= m.maxLocksPerConn {
		return lockTooMany
	}
	_, ref := m.exclusive.insert(string(name), frag)
	m.grant(c, ref)
	return lockTaken
}

// grant makes c the holder of the lock ref, with a new fencing token.
func (m *manager) grant(c *connState, ref lockRef) {
	l := m.exclusive.record(ref)
	l.owner, l.token, l.index = c, m.tokens.Take(), uint32(len(c.held))
	m.exclusive.age(ref, m.now)
	c.held = append(c.held, ref)
	if m.log != nil {
		m.logEvent("acquire", c, "lock", l.name)
	}
}

// unlock releases name if c holds it.
func (m *manager) unlock(c *connState, name []byte) bool {
	l, ref, _ := m.exclusive.get(name)
	if l == nil || l.owner != c {
		return false
	}
	m.forgetHeld(c, l.index)
	if m.log != nil {
		m.logEvent("release", c, "lock", l.name)
	}
	m.passOn(ref)
	return true
}

// forgetHeld removes c.held[i], moving the last lock into its place.
func (m *manager) forgetHeld(c *connState, i uint32) {
	last := len(c.held) - 1
	if int(i) != last {
		moved := c.held[last]
		c.held[i] = moved
		m.exclusive.record(moved).index = i
	}
	c.held = shrink(c.held[:last])
}

// passOn frees a lock that its holder has given up: the oldest waiter gets
// it at once, or it is deleted.
func (m *manager) passOn(ref lockRef) {
	l := m.exclusive.record(ref)
	m.holds[exclusiveHold].observe(m.now - l.since)
	m.exclusive.unage(ref)
	name := l.name
	for q := m.waiters[name]; q != nil && m.mayGrant(); q = m.waiters[name] {
		w := popWaiter(m.waiters, q, name)
		if !m.mayTake(w) {
			continue
		}
		m.grant(w.conn, ref)
		m.resolve(w, waitResult{granted: true, holders: 1, token: l.token})
		m.holderChanged(w.conn, name, false)
		return
	}
	m.exclusive.remove(ref)
}

// inspect reports whether name is held, and by whom.
func (m *manager) inspect(name []byte) (*exclusiveLock, bool) {
	l, _, _ := m.exclusive.get(name)
	return l, l != nil
}

// shrink gives back the memory of a list that once held many more locks.
func shrink[T any](list []T) []T {
	if cap(list) > 1024 && len(list) < cap(list)/4 {
		return append([]T(nil), list...)
	}
	return list
}
