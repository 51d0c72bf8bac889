package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/wire"
)

// permissions are what an identity may do, beyond auth and ping.
type permissions uint8

const (
	// permLock: take and release locks whose names match the patterns
	// (and i, si, t on them).
	permLock permissions = 1 << iota
	// permInspect: d, sd, dump, who, q, and i, si, t on any name.
	permInspect
	// permAdmin: kill and kill-holder.
	permAdmin

	permAll = permLock | permInspect | permAdmin
)

var permissionWords = []struct {
	word string
	perm permissions
}{{"lock", permLock}, {"inspect", permInspect}, {"admin", permAdmin}}

func parsePermission(word string) permissions {
	for _, w := range permissionWords {
		if w.word == word {
			return w.perm
		}
	}
	return 0
}

func (p permissions) String() string {
	var words []string
	for _, w := range permissionWords {
		if p&w.perm != 0 {
			words = append(words, w.word)
		}
	}
	if len(words) == 0 {
		return "-"
	}
	return strings.Join(words, ",")
}

// identity is who a connection is: a line of the ACL file, or, without one,
// the name in a verified client certificate (with every permission).
type identity struct {
	name  string
	cert  bool     // identified by a client certificate, not a token
	hash  [32]byte // SHA-256 of the token
	perms permissions
	// The patterns: exact names, and the prefixes of those ending in "*".
	exact    map[string]struct{}
	prefixes []string
	patterns []string // as written, for perms
}

// mayLock reports whether the identity may take and release the lock name.
func (id *identity) mayLock(name []byte) bool {
	if id.perms&permLock == 0 {
		return false
	}
	if _, ok := id.exact[string(name)]; ok {
		return true
	}
	for _, p := range id.prefixes {
		if bytes.HasPrefix(name, []byte(p)) {
			return true
		}
	}
	return false
}

// certIdentity is the identity of a verified client certificate when there
// is no ACL file: the certificate authority vouches for it, and that is all
// the operator asked for.
func certIdentity(name string) *identity {
	return &identity{name: name, cert: true, perms: permAll, prefixes: []string{""}, patterns: []string{"*"}}
}

// accessList is a parsed ACL file. It is never changed once loaded: a reload
// makes a new one, which the manager swaps in.
type accessList struct {
	identities []*identity
	byName     map[string]*identity
}

// loadACL reads and parses an ACL file.
func loadACL(path string) (*accessList, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	acl, err := parseACL(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return acl, nil
}

// parseACL parses the ACL file format: one identity per line,
//
//	IDENTITY SECRET PERMISSIONS [PATTERN...]
//
// SECRET is sha256:HEX (the SHA-256 of the identity's token) or "cert";
// PERMISSIONS a comma list of lock, inspect and admin; a PATTERN ending in
// "*" matches every name with that prefix, any other matches only itself.
// "#" starts a comment; blank lines are ignored.
func parseACL(r io.Reader) (*accessList, error) {
	acl := &accessList{byName: make(map[string]*identity)}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		id, err := parseIdentity(fields)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if acl.byName[id.name] != nil {
			return nil, fmt.Errorf("line %d: identity %q is defined twice", n, id.name)
		}
		if !id.cert {
			for _, other := range acl.identities {
				if !other.cert && other.hash == id.hash {
					return nil, fmt.Errorf("line %d: identity %q has the same token as %q: a token must tell who it is", n, id.name, other.name)
				}
			}
		}
		acl.byName[id.name] = id
		acl.identities = append(acl.identities, id)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return acl, nil
}

func parseIdentity(fields []string) (*identity, error) {
	if len(fields) < 3 {
		return nil, errors.New("want IDENTITY SECRET PERMISSIONS [PATTERN...]")
	}
	id := &identity{name: fields[0], exact: make(map[string]struct{})}
	switch secret := fields[1]; {
	case secret == "cert":
		id.cert = true
	case strings.HasPrefix(secret, "sha256:"):
		sum, err := hex.DecodeString(secret[len("sha256:"):])
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("identity %q: secret %q: want sha256: and 64 hex digits", id.name, secret)
		}
		id.hash = [32]byte(sum)
	default:
		return nil, fmt.Errorf("identity %q: secret %q: want sha256:HEX or cert (plaintext tokens are not stored)", id.name, secret)
	}
	for _, word := range strings.Split(fields[2], ",") {
		p := parsePermission(word)
		if p == 0 {
			return nil, fmt.Errorf("identity %q: unknown permission %q (want lock, inspect, admin)", id.name, word)
		}
		id.perms |= p
	}
	for _, p := range fields[3:] {
		id.patterns = append(id.patterns, p)
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			id.prefixes = append(id.prefixes, prefix)
		} else {
			id.exact[p] = struct{}{}
		}
	}
	return id, nil
}

// byToken finds the identity whose token this is. Every token identity is
// compared, in constant time, so that the time taken tells nothing of which
// one matched or how close a guess came.
func (acl *accessList) byToken(token []byte) *identity {
	sum := sha256.Sum256(token)
	var found *identity
	for _, id := range acl.identities {
		if !id.cert && subtle.ConstantTimeCompare(sum[:], id.hash[:]) == 1 {
			found = id
		}
	}
	return found
}

// byCert finds the identity of a verified client certificate's name.
func (acl *accessList) byCert(name string) *identity {
	if id := acl.byName[name]; id != nil && id.cert {
		return id
	}
	return nil
}

// denied answers a command that the connection may not run with an ACL file,
// and reports whether it did. What each verb needs is its access in the
// command table (commands.go); kill and kill-holder check admin themselves.
// Kept out of line: runCommand's frame is on every idle connection's stack
// (docs/design.md, "The idle-stack rule").
//
//go:noinline
func (m *manager) denied(c *connState, cmd *proto.Command, b *batch) bool {
	need := cmd.Verb.Access()
	if need == proto.AccessAnyone {
		return false
	}
	id := c.ident
	if id == nil {
		b.out = append(b.out, wire.AuthRequired...)
		return true
	}
	switch need {
	case proto.AccessLock:
		// A malformed gw or sgw does nothing, and says so.
		if cmd.Bad || id.mayLock(cmd.Name) {
			return false
		}
	case proto.AccessInspectName:
		if id.perms&permInspect != 0 || id.mayLock(cmd.Name) {
			return false
		}
	case proto.AccessInspect:
		if id.perms&permInspect != 0 {
			return false
		}
		b.out = append(b.out, wire.PermissionDenied...)
		return true
	default:
		return false
	}
	b.out = proto.AppendReply(b.out, 0, wire.PermissionDeniedText, cmd.Name)
	return true
}

// auth runs "auth TOKEN". A wrong token is answered by the connection, after
// a delay (see conn.failAuth), so that the manager never sleeps. An auth read
// while an earlier failure's delay ran (b.refuseAuth), or that finds the
// failure buckets of its address or of the server empty, is refused without
// the token being tried (authlimit.go).
func (m *manager) auth(c *connState, cmd *proto.Command, b *batch) bool {
	if m.sec.acl == nil {
		b.out = append(b.out, wire.Disabled...)
		return true
	}
	if b.refuseAuth {
		m.sec.authRefused.Inc()
		b.out = append(b.out, wire.AuthFailure...)
		return true
	}
	addr := sourceAddr(c)
	if !m.sec.limiter.allow(addr, m.now) {
		m.sec.authRefused.Inc()
		m.sec.authLog.warn("auth refused: too many failures", "conn", c.name, "transport", c.transport, "addr", addr)
		b.authFailed = authLimited
		return false
	}
	id := m.sec.acl.byToken(cmd.Name)
	if id == nil {
		m.sec.limiter.failed(addr, m.now)
		m.sec.authFailures.Inc()
		m.sec.authLog.warn("auth failure", "conn", c.name, "transport", c.transport)
		b.authFailed = authWrong
		return false
	}
	m.identify(c, id)
	b.out = append(b.out, wire.OK...)
	return true
}

// identify makes id the connection's identity. Its name is registered as the
// connection's name, so that d, sd, who and me show it.
func (m *manager) identify(c *connState, id *identity) {
	c.ident = id
	c.identified.Store(true)
	m.registry.register(c, id.name)
}

// appendPerms is the reply of perms: "1 IDENTITY PERMISSIONS PATTERN...", so
// that a client (the console) can tell what it may do before trying.
func (m *manager) appendPerms(c *connState, out []byte) []byte {
	if m.sec.acl == nil {
		return append(out, wire.Disabled...)
	}
	id := c.ident // denied() has answered for an unidentified connection
	out = append(out, "1 "...)
	out = append(out, id.name...)
	out = append(out, ' ')
	out = append(out, id.perms.String()...)
	for _, p := range id.patterns {
		out = append(out, ' ')
		out = append(out, p...)
	}
	return append(out, '\n')
}

// setACL swaps in a reloaded ACL file. Identified connections take the
// permissions of their identity's new line at once; one whose credential no
// longer identifies it is closed, as Redis does on ACL changes, so that it
// learns it by the disconnect and its locks are orphaned as on any other:
// its identity is gone, its token was changed (rotated: whoever holds the
// old one must not keep the identity), or it is no longer of the kind that
// identified it (a certificate identity that became a token, or the other
// way round).
func (m *manager) setACL(acl *accessList) {
	m.sec.acl = acl
	for c := range m.registry.members {
		if c.ident == nil {
			continue
		}
		id := acl.byName[c.ident.name]
		reason := ""
		switch {
		case id == nil:
			reason = "identity removed"
		case id.cert != c.ident.cert && id.cert:
			reason = "identity now needs a certificate"
		case id.cert != c.ident.cert:
			reason = "identity now needs a token"
		case !id.cert && id.hash != c.ident.hash:
			reason = "token changed"
		}
		if reason != "" {
			m.sec.log.Warn("reload: closing a connection whose credential the ACL file no longer accepts", "conn", c.name, "identity", c.ident.name, "reason", reason)
			c.ident = nil
			c.identified.Store(false)
			if c.kill != nil {
				c.kill()
			}
			continue
		}
		c.ident = id
	}
}
