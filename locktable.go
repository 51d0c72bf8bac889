package main

import "hash/maphash"

// lockTable is the exclusive table: the held locks by name. It is a map
// built for the one case that matters most for its memory, a million locks
// held at once, at about 70 bytes a lock where a Go map[string]struct{...}
// plus the holder's list of names costs 120 to 170:
//
//   - The locks themselves live in a slab of fixed-size chunks, so that a
//     lock is one 40-byte record and is known elsewhere (in its holder's list,
//     in the index below) by a 4-byte reference. Freed records are reused.
//   - The index from name to record is extendible hashing: a directory of
//     buckets of 8-byte slots (32 bits of the name's hash, and the reference),
//     open addressing with linear probing. A full bucket splits in two, so
//     growth never copies more than one bucket: no long pause of the manager
//     at any size.
//
// A reference is the record's position in the slab; records never move.
type lockTable struct {
	seed maphash.Seed
	hashIndex
	count int // locks held

	chunks []*[lockChunk]exclusiveLock
	free   lockRef // first free record (a list through their index field), or noRef

	// The held locks in the order they were granted, through their records'
	// older and newer fields: the oldest hold is found without a scan.
	oldest, newest lockRef
}

// exclusiveLock is a held lock: a record of the table's slab.
type exclusiveLock struct {
	name  string
	owner *connState // nil while the record is free
	token uint64     // the fencing token of this acquisition
	index uint32     // position of the lock in owner.held; the next free record while free
	frag  uint32     // fragment of the name's hash: where its slot is
	since int64      // when it was granted, on the manager's clock
	older lockRef    // the lock granted before it that is still held, or noRef
	newer lockRef    // the lock granted after it that is still held, or noRef
}

// lockRef is a record's position in the slab.
type lockRef uint32

const (
	noRef lockRef = 1<<32 - 1

	// 1024 records of 56 bytes are 56 KiB: whole pages, no rounding.
	lockChunkBits = 10
	lockChunk     = 1 << lockChunkBits

	// A bucket is 8 KiB: 1022 slots and a 16-byte header.
	bucketSlots = 1022
	// A bucket splits past 3/4 full: linear probing stays short (about 2.5
	// probes for a hit, 8.5 for a miss at worst), and buckets are between 3/8
	// and 3/4 full, 11 to 22 bytes a lock.
	bucketMax = bucketSlots * 3 / 4
)

// hashIndex maps 32-bit hash fragments to references by extendible
// hashing. It stores no keys: a lookup compares a slot's record with what it
// looks for. The shared table (shared.go) uses it too.
type hashIndex struct {
	dir   []*lockBucket // by the low depth bits of a hash fragment
	depth uint8         // log2(len(dir))
}

func newHashIndex() hashIndex { return hashIndex{dir: []*lockBucket{{}}} }

// lockBucket holds slots: 0 is empty, else frag<<32 | ref+1.
type lockBucket struct {
	slots [bucketSlots]uint64
	count uint32
	depth uint8 // the bucket holds the fragments whose low depth bits are alike
}

func newLockTable() lockTable {
	return lockTable{seed: maphash.MakeSeed(), hashIndex: newHashIndex(), free: noRef, oldest: noRef, newest: noRef}
}

// age puts the lock ref, just granted at since, at the new end of the
// order of grants.
func (t *lockTable) age(ref lockRef, since int64) {
	l := t.record(ref)
	l.since, l.older, l.newer = since, t.newest, noRef
	if t.newest != noRef {
		t.record(t.newest).newer = ref
	} else {
		t.oldest = ref
	}
	t.newest = ref
}

// unage takes the lock ref out of the order of grants.
func (t *lockTable) unage(ref lockRef) {
	l := t.record(ref)
	if l.older != noRef {
		t.record(l.older).newer = l.newer
	} else {
		t.oldest = l.newer
	}
	if l.newer != noRef {
		t.record(l.newer).older = l.older
	} else {
		t.newest = l.older
	}
	l.older, l.newer = noRef, noRef
}

// oldestSince is when the oldest held lock was granted; ok is false when
// none is held.
func (t *lockTable) oldestSince() (since int64, ok bool) {
	if t.oldest == noRef {
		return 0, false
	}
	return t.record(t.oldest).since, true
}

// hashFragment is 32 bits of the hash of name. Its low bits pick the bucket,
// all of it (scaled) the home slot, so a bucket can split without hashing its
// names again.
func (t *lockTable) hashFragment(name []byte) uint32 {
	return uint32(maphash.Bytes(t.seed, name) >> 32)
}

func (x *hashIndex) bucket(frag uint32) *lockBucket {
	return x.dir[frag&(1<<x.depth-1)]
}

// home is the slot where the probe for frag starts.
func home(frag uint32) int { return int(uint64(frag) * bucketSlots >> 32) }

// find returns the reference indexed under frag for which is reports true,
// or noRef: the probe of the shared table's lookups (lockTable.get has its
// own copy, for speed).
func (x *hashIndex) find(frag uint32, is func(lockRef) bool) lockRef {
	b := x.bucket(frag)
	for i := home(frag); ; i++ {
		if i == bucketSlots {
			i = 0
		}
		s := b.slots[i]
		if s == 0 {
			return noRef
		}
		if uint32(s>>32) == frag {
			if ref := lockRef(s) - 1; is(ref) {
				return ref
			}
		}
	}
}

// get returns the record of name, or nil; frag is the name's hash fragment,
// for an insert that follows a miss.
func (t *lockTable) get(name []byte) (l *exclusiveLock, ref lockRef, frag uint32) {
	frag = t.hashFragment(name)
	// find's probe, written out: through its closure every exclusive
	// command costs 1.5 ns (4 %) more (BenchmarkManager).
	b := t.bucket(frag)
	for i := home(frag); ; i++ {
		if i == bucketSlots {
			i = 0
		}
		s := b.slots[i]
		if s == 0 {
			return nil, noRef, frag
		}
		if uint32(s>>32) == frag {
			ref = lockRef(s) - 1
			if l = t.record(ref); l.name == string(name) {
				return l, ref, frag
			}
		}
	}
}

func (t *lockTable) record(ref lockRef) *exclusiveLock {
	return &t.chunks[ref>>lockChunkBits][ref&(lockChunk-1)]
}

// insert adds name, which get has just missed with fragment frag, and returns
// its new record, with no owner yet.
func (t *lockTable) insert(name string, frag uint32) (*exclusiveLock, lockRef) {
	ref := t.alloc()
	l := t.record(ref)
	l.name, l.frag = name, frag
	t.add(frag, ref)
	t.count++
	return l, ref
}

// reserve readies an empty table for n locks: its index starts with
// buckets about as full as n locks granted one by one leave them (between
// 3/8 and 3/4), at most 9/16 on average, so that filling it splits next to
// none: a bucket overflows only some 8 standard deviations above the mean. A hand-over fills a new table so
// (upgrade_snapshot.go).
func (t *lockTable) reserve(n int) {
	if t.count == 0 {
		t.hashIndex.reserve(n)
	}
}

// reserve readies an empty index for n entries; see lockTable.reserve.
func (x *hashIndex) reserve(n int) {
	const target = bucketMax * 3 / 4 // entries a bucket, before rounding up to a power of two
	if n <= target {
		return
	}
	var depth uint8
	for 1<<depth*target < n && depth < 24 {
		depth++
	}
	dir := make([]*lockBucket, 1<<depth)
	for i := range dir {
		dir[i] = &lockBucket{depth: depth}
	}
	x.dir, x.depth = dir, depth
}

// insertUnindexed adds name with a new record, as insert does, but leaves
// it out of the index: indexAll indexes such records, many at once.
func (t *lockTable) insertUnindexed(name string) (*exclusiveLock, lockRef) {
	ref := t.alloc()
	l := t.record(ref)
	l.name, l.frag = name, uint32(maphash.String(t.seed, name)>>32)
	t.count++
	return l, ref
}

// indexAll indexes the records refs, which insertUnindexed added, bucket by
// bucket: a bucket is 8 KiB and a million locks' are 16 MiB, so indexing
// them in their order (a cache miss each) takes half as long again. It
// returns the first record whose name the table already had, or nil: the
// table is then fit only to be thrown away.
func (t *lockTable) indexAll(refs []lockRef) *exclusiveLock {
	// A counting sort by the bucket each will go to (reserve's, so that
	// few split meanwhile).
	mask := uint32(1)<<t.depth - 1
	starts := make([]int, mask+2)
	for _, ref := range refs {
		starts[t.record(ref).frag&mask+1]++
	}
	for i := 1; i < len(starts); i++ {
		starts[i] += starts[i-1]
	}
	sorted := make([]lockRef, len(refs))
	for _, ref := range refs {
		b := t.record(ref).frag & mask
		sorted[starts[b]] = ref
		starts[b]++
	}
	for _, ref := range sorted {
		l := t.record(ref)
		if found := t.find(l.frag, func(r lockRef) bool { return t.record(r).name == l.name }); found != noRef {
			return l
		}
		t.add(l.frag, ref)
	}
	return nil
}

// add indexes ref under frag.
func (x *hashIndex) add(frag uint32, ref lockRef) {
	b := x.bucket(frag)
	if b.count >= bucketMax {
		x.split(b)
		b = x.bucket(frag)
	}
	b.place(frag, ref)
}

// delete removes ref, indexed under frag.
func (x *hashIndex) delete(frag uint32, ref lockRef) {
	b := x.bucket(frag)
	i := home(frag)
	for lockRef(b.slots[i]) != ref+1 {
		if i++; i == bucketSlots {
			i = 0
		}
	}
	b.unplace(i)
}

func (b *lockBucket) place(frag uint32, ref lockRef) {
	i := home(frag)
	for b.slots[i] != 0 {
		if i++; i == bucketSlots {
			i = 0
		}
	}
	b.slots[i] = uint64(frag)<<32 | uint64(ref+1)
	b.count++
}

// alloc takes a free record, adding a chunk to the slab when there is none.
func (t *lockTable) alloc() lockRef {
	if t.free == noRef {
		first := lockRef(len(t.chunks)) << lockChunkBits
		t.chunks = append(t.chunks, new([lockChunk]exclusiveLock))
		// Chain the new records, first one first.
		for i := range lockChunk {
			t.chunks[len(t.chunks)-1][i].index = uint32(first + lockRef(i) + 1)
		}
		t.chunks[len(t.chunks)-1][lockChunk-1].index = uint32(noRef)
		t.free = first
	}
	ref := t.free
	t.free = lockRef(t.record(ref).index)
	return ref
}

// remove deletes the lock ref from the table and frees its record.
func (t *lockTable) remove(ref lockRef) {
	l := t.record(ref)
	t.delete(l.frag, ref)
	*l = exclusiveLock{index: uint32(t.free)}
	t.free = ref
	t.count--
	if t.count == 0 && len(t.chunks) > 1 {
		// A burst of locks is over: give its memory back.
		*t = lockTable{seed: t.seed, hashIndex: newHashIndex(), free: noRef, oldest: noRef, newest: noRef}
	}
}

// unplace empties slot i, moving later slots of the same probe run back so
// that every entry stays reachable from its home without tombstones.
func (b *lockBucket) unplace(i int) {
	b.count--
	for j := i; ; {
		if j++; j == bucketSlots {
			j = 0
		}
		s := b.slots[j]
		if s == 0 {
			break
		}
		// The entry at j may move to i unless its home lies cyclically in
		// (i, j]: then i is before its home.
		h := home(uint32(s >> 32))
		if (i < j && (h <= i || h > j)) || (i > j && h <= i && h > j) {
			b.slots[i] = s
			i = j
		}
	}
	b.slots[i] = 0
}

// split divides a full bucket by one more bit of the fragments, doubling the
// directory when the bucket already uses all of its bits.
func (x *hashIndex) split(b *lockBucket) {
	if b.depth == x.depth {
		x.dir = append(x.dir, x.dir...)
		x.depth++
	}
	bit := uint32(1) << b.depth
	old := b.slots
	b.slots, b.count = [bucketSlots]uint64{}, 0
	b.depth++
	hi := &lockBucket{depth: b.depth}
	for _, s := range old {
		if s == 0 {
			continue
		}
		frag := uint32(s >> 32)
		if frag&bit == 0 {
			b.place(frag, lockRef(s)-1)
		} else {
			hi.place(frag, lockRef(s)-1)
		}
	}
	for i, d := range x.dir {
		if d == b && uint32(i)&bit != 0 {
			x.dir[i] = hi
		}
	}
}

// each calls fn with every held lock, in no particular order.
func (t *lockTable) each(fn func(l *exclusiveLock)) {
	for _, chunk := range t.chunks {
		for i := range chunk {
			if chunk[i].owner != nil {
				fn(&chunk[i])
			}
		}
	}
}
