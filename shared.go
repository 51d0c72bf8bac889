package main

import "hash/maphash"

// sharedTable holds the shared locks, built like the exclusive table
// (locktable.go) for a million names held at once: records in slabs of
// fixed-size chunks, known by 4-byte references, and found through
// extendible-hashing indexes.
//
//   - A name is a 32-byte sharedName: the name, its holders' list (first
//     and last) and their count.
//   - A holder is a 40-byte sharedHolder: the connection, when it was
//     granted, the name, its place in the name's list of holders (in the
//     order they took the lock, as sd, "dump shared" and dl list them), its
//     place in the order of grants of every shared holder (so that the
//     oldest shared hold is found without a scan) and its place in its
//     connection's list of shared locks (connState.sharedHeld, for release
//     and orphaning).
//   - names indexes names by their hash; holders indexes the holders of
//     names with more than indexedHolders by their name and connection, so
//     that a connection's hold on a name is found in O(1) however many locks
//     it holds and however many hold the name.
//
// Taking or releasing a shared lock allocates nothing once the chunks
// exist, but the name's string when the name is new.
type sharedTable struct {
	seed    maphash.Seed
	names   hashIndex // by hashFragment of the name
	holders hashIndex // by holderFragment of the name's reference and the connection
	count   int       // names held

	nameChunks   []*[lockChunk]sharedName
	holderChunks []*[lockChunk]sharedHolder
	freeName     lockRef // first free name record (a list through head), or noRef
	freeHolder   lockRef // first free holder record (a list through index), or noRef

	// Every shared holder in the order of grants, through older and newer.
	oldest, newest lockRef
}

// sharedName is a shared lock with at least one holder.
type sharedName struct {
	name       string
	head, tail lockRef // its holders, first granted first; head is the next free record while free
	count      uint32  // holders; 0 while the record is free
	frag       uint32  // the name's hash fragment: where its slot is
}

// sharedHolder is one connection's hold on a shared lock.
type sharedHolder struct {
	conn         *connState // nil while the record is free
	since        int64      // when it was granted, on the manager's clock
	lock         lockRef    // the sharedName
	prev, next   lockRef    // the lock's holders granted before and after it
	older, newer lockRef    // every shared holder granted before and after it
	index        uint32     // position in conn.sharedHeld; the next free record while free
}

func newSharedTable() sharedTable {
	return sharedTable{seed: maphash.MakeSeed(), names: newHashIndex(), holders: newHashIndex(),
		freeName: noRef, freeHolder: noRef, oldest: noRef, newest: noRef}
}

func (t *sharedTable) name(ref lockRef) *sharedName {
	return &t.nameChunks[ref>>lockChunkBits][ref&(lockChunk-1)]
}

func (t *sharedTable) holder(ref lockRef) *sharedHolder {
	return &t.holderChunks[ref>>lockChunkBits][ref&(lockChunk-1)]
}

// find returns the reference of name, or noRef; frag is the name's hash
// fragment, for an insert that follows a miss.
func (t *sharedTable) find(name []byte) (ref lockRef, frag uint32) {
	frag = uint32(maphash.Bytes(t.seed, name) >> 32)
	return t.probe(frag, func(n *sharedName) bool { return n.name == string(name) }), frag
}

// findString is find for a name already a string.
func (t *sharedTable) findString(name string) lockRef {
	frag := uint32(maphash.String(t.seed, name) >> 32)
	return t.probe(frag, func(n *sharedName) bool { return n.name == name })
}

func (t *sharedTable) probe(frag uint32, is func(*sharedName) bool) lockRef {
	return t.names.find(frag, func(r lockRef) bool { return is(t.name(r)) })
}

// holderFragment is the holder index's hash of a connection's hold on the
// name ref: a mix of the two, keyed by the connection's random key, so that
// no client can choose where its holds go.
func holderFragment(c *connState, ref lockRef) uint32 {
	x := c.key ^ uint64(ref)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return uint32(x)
}

// indexedHolders is the number of holders over which a name's holders are
// in the holder index. With fewer, a connection's hold is found by walking
// the name's list: most shared locks have a few holders, and the index
// would cost them about 17 bytes a holder.
const indexedHolders = 8

// heldBy returns c's holder record on the name ref, or noRef.
func (t *sharedTable) heldBy(c *connState, ref lockRef) lockRef {
	if t.name(ref).count <= indexedHolders {
		for h := t.name(ref).head; h != noRef; h = t.holder(h).next {
			if t.holder(h).conn == c {
				return h
			}
		}
		return noRef
	}
	return t.holders.find(holderFragment(c, ref), func(h lockRef) bool {
		return t.holder(h).lock == ref && t.holder(h).conn == c
	})
}

// indexHolders adds the holders of the name ref to the holder index, or
// takes them out of it: a name's holders are in the index while it has
// more than indexedHolders.
func (t *sharedTable) indexHolders(ref lockRef, in bool) {
	for h := t.name(ref).head; h != noRef; h = t.holder(h).next {
		frag := holderFragment(t.holder(h).conn, ref)
		if in {
			t.holders.add(frag, h)
		} else {
			t.holders.delete(frag, h)
		}
	}
}

// addName adds name, which find has just missed with fragment frag, with no
// holders yet.
func (t *sharedTable) addName(name string, frag uint32) lockRef {
	if t.freeName == noRef {
		first := lockRef(len(t.nameChunks)) << lockChunkBits
		chunk := new([lockChunk]sharedName)
		for i := range chunk {
			chunk[i].head = first + lockRef(i) + 1
		}
		chunk[lockChunk-1].head = noRef
		t.nameChunks = append(t.nameChunks, chunk)
		t.freeName = first
	}
	ref := t.freeName
	n := t.name(ref)
	t.freeName = n.head
	*n = sharedName{name: name, head: noRef, tail: noRef, frag: frag}
	t.names.add(frag, ref)
	t.count++
	return ref
}

// removeName deletes the name ref, which has no holders left.
func (t *sharedTable) removeName(ref lockRef) {
	n := t.name(ref)
	t.names.delete(n.frag, ref)
	*n = sharedName{head: t.freeName}
	t.freeName = ref
	t.count--
	if t.count == 0 && (len(t.nameChunks) > 1 || len(t.holderChunks) > 1) {
		// A burst of shared locks is over: give its memory back.
		*t = sharedTable{seed: t.seed, names: newHashIndex(), holders: newHashIndex(),
			freeName: noRef, freeHolder: noRef, oldest: noRef, newest: noRef}
	}
}

// addHolder makes c a holder of the name ref, granted at since, last in the
// name's order and in the order of grants.
func (t *sharedTable) addHolder(c *connState, ref lockRef, since int64) {
	if t.freeHolder == noRef {
		first := lockRef(len(t.holderChunks)) << lockChunkBits
		chunk := new([lockChunk]sharedHolder)
		for i := range chunk {
			chunk[i].index = uint32(first + lockRef(i) + 1)
		}
		chunk[lockChunk-1].index = uint32(noRef)
		t.holderChunks = append(t.holderChunks, chunk)
		t.freeHolder = first
	}
	h := t.freeHolder
	r := t.holder(h)
	t.freeHolder = lockRef(r.index)
	n := t.name(ref)
	*r = sharedHolder{conn: c, since: since, lock: ref, prev: n.tail, next: noRef,
		older: t.newest, newer: noRef, index: uint32(len(c.sharedHeld))}
	if n.tail != noRef {
		t.holder(n.tail).next = h
	} else {
		n.head = h
	}
	n.tail = h
	n.count++
	if t.newest != noRef {
		t.holder(t.newest).newer = h
	} else {
		t.oldest = h
	}
	t.newest = h
	c.sharedHeld = append(c.sharedHeld, h)
	switch {
	case n.count == indexedHolders+1:
		t.indexHolders(ref, true)
	case n.count > indexedHolders+1:
		t.holders.add(holderFragment(c, ref), h)
	}
}

// removeHolder takes the holder h out of every list and frees its record.
// Its name stays, even with no holder left.
func (t *sharedTable) removeHolder(h lockRef) {
	r := t.holder(h)
	c, n := r.conn, t.name(r.lock)
	if n.count > indexedHolders {
		t.holders.delete(holderFragment(c, r.lock), h)
	}
	if r.prev != noRef {
		t.holder(r.prev).next = r.next
	} else {
		n.head = r.next
	}
	if r.next != noRef {
		t.holder(r.next).prev = r.prev
	} else {
		n.tail = r.prev
	}
	if n.count--; n.count == indexedHolders {
		t.indexHolders(r.lock, false)
	}
	if r.older != noRef {
		t.holder(r.older).newer = r.newer
	} else {
		t.oldest = r.newer
	}
	if r.newer != noRef {
		t.holder(r.newer).older = r.older
	} else {
		t.newest = r.older
	}
	last := len(c.sharedHeld) - 1
	if int(r.index) != last {
		moved := c.sharedHeld[last]
		c.sharedHeld[r.index] = moved
		t.holder(moved).index = r.index
	}
	c.sharedHeld = shrink(c.sharedHeld[:last])
	*r = sharedHolder{index: uint32(t.freeHolder)}
	t.freeHolder = h
}

// oldestSince is when the oldest shared hold was granted; ok is false when
// there is none.
func (t *sharedTable) oldestSince() (since int64, ok bool) {
	if t.oldest == noRef {
		return 0, false
	}
	return t.holder(t.oldest).since, true
}

// eachHolder calls fn with each holder of the name ref, first granted first.
func (t *sharedTable) eachHolder(ref lockRef, fn func(*sharedHolder)) {
	for h := t.name(ref).head; h != noRef; h = t.holder(h).next {
		fn(t.holder(h))
	}
}

// takeShared adds c to the holders of name and returns how many there are
// (lockTaken), or lockTooMany when c is at its limit of locks.
func (m *manager) takeShared(c *connState, name []byte) (holders int, res lockResult) {
	ref, frag := m.shared.find(name)
	if ref != noRef && m.shared.heldBy(c, ref) != noRef {
		return int(m.shared.name(ref).count), lockTaken
	}
	if c.lockCount() >= m.maxLocksPerConn {
		return 0, lockTooMany
	}
	if ref == noRef {
		ref = m.shared.addName(string(name), frag)
	}
	n := m.sharedGrant(c, ref)
	if c.blocked() {
		// Its own !sgw on the name, if any, is granted first: it must
		// not count as a wait for itself.
		m.tookShared(c, name, n)
		m.holderChanged(c, m.shared.name(ref).name, true)
	}
	return n, lockTaken
}

// sharedGrant makes c a holder of the name ref and returns how many there
// are.
func (m *manager) sharedGrant(c *connState, ref lockRef) int {
	m.shared.addHolder(c, ref, m.now)
	n := m.shared.name(ref)
	if m.log != nil {
		m.logEvent("acquire shared", c, "lock", n.name, "holders", n.count)
	}
	return int(n.count)
}

// sharedGrantName is sharedGrant for a name that may not be held yet.
func (m *manager) sharedGrantName(c *connState, name []byte) int {
	ref, frag := m.shared.find(name)
	if ref == noRef {
		ref = m.shared.addName(string(name), frag)
	}
	return m.sharedGrant(c, ref)
}

// sharedHeldBy reports whether c holds the shared lock name, and how many
// hold it.
func (m *manager) sharedHeldBy(c *connState, name []byte) (holders int, held bool) {
	ref, _ := m.shared.find(name)
	if ref == noRef || m.shared.heldBy(c, ref) == noRef {
		return 0, false
	}
	return int(m.shared.name(ref).count), true
}

// sharedUnlock releases c's hold on name, if it has one.
func (m *manager) sharedUnlock(c *connState, name []byte) bool {
	ref, _ := m.shared.find(name)
	if ref == noRef {
		return false
	}
	h := m.shared.heldBy(c, ref)
	if h == noRef {
		return false
	}
	if m.log != nil {
		m.logEvent("release shared", c, "lock", m.shared.name(ref).name)
	}
	m.dropHolder(h)
	return true
}

// dropHolder ends the hold h: the waiters it made room for are admitted,
// and the name goes when nobody holds it.
func (m *manager) dropHolder(h lockRef) {
	r := m.shared.holder(h)
	ref := r.lock
	m.holds[sharedHold].observe(m.now - r.since)
	m.shared.removeHolder(h)
	name := m.shared.name(ref).name
	m.admitSharedWaiters(name)
	if m.shared.name(ref).count == 0 {
		m.shared.removeName(ref)
	}
}

// admitSharedWaiters grants the shared lock to its oldest waiters while the
// oldest one's MAX allows another holder. A waiter whose MAX is full blocks
// the ones behind it: strict FIFO, no overtaking.
// It runs whenever the count drops or the head leaves the queue.
func (m *manager) admitSharedWaiters(name string) {
	q := m.sharedWaiters[name]
	if q == nil {
		return
	}
	ref := m.shared.findString(name)
	for !q.empty() && (ref == noRef || int(m.shared.name(ref).count) < q.head.max) && m.mayGrant() {
		w := popWaiter(m.sharedWaiters, q, name)
		if !m.mayTake(w) {
			continue
		}
		if ref == noRef {
			ref = m.shared.addName(name, uint32(maphash.String(m.shared.seed, name)>>32))
		}
		holders := m.sharedGrant(w.conn, ref)
		m.resolve(w, waitResult{granted: true, holders: holders})
		m.holderChanged(w.conn, name, true)
	}
}

// sharedCount is the number of holders of name.
func (m *manager) sharedCount(name []byte) int {
	if ref, _ := m.shared.find(name); ref != noRef {
		return int(m.shared.name(ref).count)
	}
	return 0
}

// sharedQueueEmpty reports whether nobody waits for the shared lock name.
func (m *manager) sharedQueueEmpty(name []byte) bool {
	q := m.sharedWaiters[string(name)]
	return q == nil || q.empty()
}
