// Package acl is the -acl-file format: identities, their tokens' hashes or
// client certificates, their permissions and the lock name patterns they
// may use; and the failure token buckets that limit guessing tokens. The
// checks per command are the manager's (the root's admin.go): this package
// only answers who a token or certificate is, and what that identity may do.
package acl

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
)

// Permissions are what an identity may do, beyond auth and ping.
type Permissions uint8

const (
	// PermLock: take and release locks whose names match the patterns
	// (and i, si, t on them).
	PermLock Permissions = 1 << iota
	// PermInspect: d, sd, dump, who, q, and i, si, t on any name.
	PermInspect
	// PermAdmin: kill and kill-holder.
	PermAdmin

	PermAll = PermLock | PermInspect | PermAdmin
)

var permissionWords = []struct {
	word string
	perm Permissions
}{{"lock", PermLock}, {"inspect", PermInspect}, {"admin", PermAdmin}}

func parsePermission(word string) Permissions {
	for _, w := range permissionWords {
		if w.word == word {
			return w.perm
		}
	}
	return 0
}

func (p Permissions) String() string {
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

// Identity is who a connection is: a line of the ACL file, or, without one,
// the name in a verified client certificate (with every permission).
type Identity struct {
	Name  string
	Cert  bool     // identified by a client certificate, not a token
	Hash  [32]byte // SHA-256 of the token
	Perms Permissions
	// The patterns: exact names, and the prefixes of those ending in "*".
	exact    map[string]struct{}
	prefixes []string
	Patterns []string // as written, for the perms command
}

// MayLock reports whether the identity may take and release the lock name.
func (id *Identity) MayLock(name []byte) bool {
	if id.Perms&PermLock == 0 {
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

// CertIdentity is the identity of a verified client certificate when there
// is no ACL file: the certificate authority vouches for it, and that is all
// the operator asked for.
func CertIdentity(name string) *Identity {
	return &Identity{Name: name, Cert: true, Perms: PermAll, prefixes: []string{""}, Patterns: []string{"*"}}
}

// List is a parsed ACL file. It is never changed once loaded: a reload
// makes a new one, which the manager swaps in.
type List struct {
	identities []*Identity
	byName     map[string]*Identity
}

// Load reads and parses an ACL file.
func Load(path string) (*List, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	acl, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return acl, nil
}

// Parse parses the ACL file format: one identity per line,
//
//	IDENTITY SECRET PERMISSIONS [PATTERN...]
//
// SECRET is sha256:HEX (the SHA-256 of the identity's token) or "cert";
// PERMISSIONS a comma list of lock, inspect and admin; a PATTERN ending in
// "*" matches every name with that prefix, any other matches only itself.
// "#" starts a comment; blank lines are ignored.
func Parse(r io.Reader) (*List, error) {
	acl := &List{byName: make(map[string]*Identity)}
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
		if acl.byName[id.Name] != nil {
			return nil, fmt.Errorf("line %d: identity %q is defined twice", n, id.Name)
		}
		if !id.Cert {
			for _, other := range acl.identities {
				if !other.Cert && other.Hash == id.Hash {
					return nil, fmt.Errorf("line %d: identity %q has the same token as %q: a token must tell who it is", n, id.Name, other.Name)
				}
			}
		}
		acl.byName[id.Name] = id
		acl.identities = append(acl.identities, id)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return acl, nil
}

func parseIdentity(fields []string) (*Identity, error) {
	if len(fields) < 3 {
		return nil, errors.New("want IDENTITY SECRET PERMISSIONS [PATTERN...]")
	}
	id := &Identity{Name: fields[0], exact: make(map[string]struct{})}
	switch secret := fields[1]; {
	case secret == "cert":
		id.Cert = true
	case strings.HasPrefix(secret, "sha256:"):
		sum, err := hex.DecodeString(secret[len("sha256:"):])
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("identity %q: secret %q: want sha256: and 64 hex digits", id.Name, secret)
		}
		id.Hash = [32]byte(sum)
	default:
		return nil, fmt.Errorf("identity %q: secret %q: want sha256:HEX or cert (plaintext tokens are not stored)", id.Name, secret)
	}
	for _, word := range strings.Split(fields[2], ",") {
		p := parsePermission(word)
		if p == 0 {
			return nil, fmt.Errorf("identity %q: unknown permission %q (want lock, inspect, admin)", id.Name, word)
		}
		id.Perms |= p
	}
	for _, p := range fields[3:] {
		id.Patterns = append(id.Patterns, p)
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			id.prefixes = append(id.prefixes, prefix)
		} else {
			id.exact[p] = struct{}{}
		}
	}
	return id, nil
}

// ByToken finds the identity whose token this is. Every token identity is
// compared, in constant time, so that the time taken tells nothing of which
// one matched or how close a guess came.
func (acl *List) ByToken(token []byte) *Identity {
	sum := sha256.Sum256(token)
	var found *Identity
	for _, id := range acl.identities {
		if !id.Cert && subtle.ConstantTimeCompare(sum[:], id.Hash[:]) == 1 {
			found = id
		}
	}
	return found
}

// ByCert finds the identity of a verified client certificate's name.
func (acl *List) ByCert(name string) *Identity {
	if id := acl.byName[name]; id != nil && id.Cert {
		return id
	}
	return nil
}

// ByName finds the identity of that name, whatever its credential; nil if
// the file has none.
func (acl *List) ByName(name string) *Identity { return acl.byName[name] }

// Len is the number of identities in the file.
func (acl *List) Len() int { return len(acl.identities) }
