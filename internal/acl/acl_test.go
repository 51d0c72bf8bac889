package acl

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

// tokenHash is the ACL file's secret of a token.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestParseACL(t *testing.T) {
	good := tokenHash("x")
	for _, tt := range []struct {
		file, err string
	}{
		{"", ""},
		{"# only a comment\n\n   \n", ""},
		{"a " + good + " lock *", ""},
		{"a " + good + " lock,inspect,admin", ""},
		{"a cert inspect", ""},
		{"a " + good, "line 1: want IDENTITY SECRET PERMISSIONS"},
		{"a plaintext lock x", "plaintext tokens are not stored"},
		{"a sha256:abc lock x", "64 hex digits"},
		{"a " + good + " lock,write x", `unknown permission "write"`},
		{"a " + good + " lock x\na cert lock y", `line 2: identity "a" is defined twice`},
		{"a " + good + " lock x\nb " + good + " lock y", "same token"},
	} {
		_, err := Parse(strings.NewReader(tt.file))
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%q: %v, want %q", tt.file, err, tt.err)
		}
	}
}

func TestPatternEdges(t *testing.T) {
	list, err := Parse(strings.NewReader("p " + tokenHash("p") + " lock billing/* billing a*b x\n" +
		"s " + tokenHash("s") + " lock *\n" +
		"q " + tokenHash("q") + " lock billing/*\nr " + tokenHash("r") + " inspect billing/*\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, q, r, all := list.ByName("p"), list.ByName("q"), list.ByName("r"), list.ByName("s")
	for _, tt := range []struct {
		id   *Identity
		name string
		ok   bool
	}{
		{q, "billing/x", true}, {q, "billing/", true}, {q, "billing/a b", true},
		{q, "billing", false}, {q, "billingX", false}, {q, "billing*", false}, {q, "", false},
		{q, "xbilling/x", false}, {q, "BILLING/x", false},
		{p, "billing", true}, {p, "a*b", true}, {p, "axb", false}, {p, "a", false}, {p, "ab", false}, {p, "x", true},
		{all, "anything", true}, {all, "", true},
		{r, "billing/x", false}, // inspect alone locks nothing
	} {
		if got := tt.id.MayLock([]byte(tt.name)); got != tt.ok {
			t.Errorf("%s may lock %q: %v, want %v", tt.id.Name, tt.name, got, tt.ok)
		}
	}
	if id := list.ByToken([]byte("q")); id != q {
		t.Errorf("token q: %v", id)
	}
	if id := list.ByToken([]byte("Q")); id != nil {
		t.Errorf("token Q: %v", id)
	}
}
