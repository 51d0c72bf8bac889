package main

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
