package main

import (
	"cmp"
	"slices"
)

// registry holds the names connections gave themselves with iam.
type registry struct {
	members map[*connState]struct{}
	lastSeq uint64 // registration order, for who
}

func newRegistry() registry {
	return registry{members: make(map[*connState]struct{})}
}

// register names c. Registering again moves c to the end of who's order,
// which a published client's test expects.
func (r *registry) register(c *connState, name string) {
	r.lastSeq++
	c.regName, c.regSeq = name, r.lastSeq
	r.members[c] = struct{}{}
}

func (r *registry) remove(c *connState) {
	if c.regSeq == 0 {
		return
	}
	delete(r.members, c)
	c.regName, c.regSeq = "", 0
}

// entries lists "CONNNAME: REGNAME" pairs, oldest registration first, of the
// connections registered as filter (all of them when filter is empty).
func (r *registry) entries(filter []byte) []dumpEntry {
	members := make([]*connState, 0, len(r.members))
	for c := range r.members {
		if len(filter) == 0 || c.regName == string(filter) {
			members = append(members, c)
		}
	}
	slices.SortFunc(members, func(a, b *connState) int {
		return cmp.Compare(a.regSeq, b.regSeq)
	})
	entries := make([]dumpEntry, len(members))
	for i, c := range members {
		entries[i] = dumpEntry{key: c.name, value: c.regName}
	}
	return entries
}
