package main

import "sort"

// registry holds the names connections gave themselves with iam.
type registry struct {
	members map[*connState]struct{}
	lastSeq uint64 // registration order, for who
	// order lists the registrations in their order, for who to walk in
	// steps. An entry whose connection has since gone or registered again
	// (its regSeq is no longer the entry's) is stale: skipped, and dropped
	// once stale ones are half of the list.
	order []registration
	stale int
}

type registration struct {
	c   *connState
	seq uint64
}

func newRegistry() registry {
	return registry{members: make(map[*connState]struct{})}
}

// register names c. Registering again moves c to the end of who's order,
// which a published client's test expects.
func (r *registry) register(c *connState, name string) {
	if c.regSeq != 0 {
		r.stale++
	}
	r.lastSeq++
	c.regName, c.regSeq = name, r.lastSeq
	r.members[c] = struct{}{}
	r.order = append(r.order, registration{c, c.regSeq})
	r.compact()
}

func (r *registry) remove(c *connState) {
	if c.regSeq == 0 {
		return
	}
	delete(r.members, c)
	c.regName, c.regSeq = "", 0
	r.stale++
	r.compact()
}

// compact drops the stale entries once they are half of the list, keeping
// the order.
func (r *registry) compact() {
	if r.stale < 64 || 2*r.stale < len(r.order) {
		return
	}
	live := r.order[:0]
	for _, e := range r.order {
		if e.c.regSeq == e.seq {
			live = append(live, e)
		}
	}
	clear(r.order[len(live):])
	r.order, r.stale = live, 0
}

// steps walks the registrations in their order, calling add with each
// connection; a step ends once n entries have gone by. A connection
// registered throughout is listed once, whatever changes between steps: the
// walk resumes after the last sequence number it saw, and the list stays
// sorted by sequence number.
func (r *registry) steps(add func(*connState)) func(n int) bool {
	var last uint64
	return func(n int) bool {
		i := sort.Search(len(r.order), func(i int) bool { return r.order[i].seq > last })
		for ; i < len(r.order) && n > 0; i, n = i+1, n-1 {
			e := r.order[i]
			last = e.seq
			if e.c.regSeq == e.seq {
				add(e.c)
			}
		}
		return i >= len(r.order)
	}
}
