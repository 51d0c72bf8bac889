package main

import (
	"log/slog"
	"slices"
	"time"

	"github.com/glockd/glockd/internal/acl"
	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// managerSecurity is the manager's share of access control: all of it owned
// by the manager goroutine, and all of it off (enabled false) without the
// security flags, so that a plain server pays one test per connect.
type managerSecurity struct {
	enabled   bool         // any of the below is on: connects and disconnects are seen here
	acl       *acl.List    // -acl-file; nil without one
	adminUnix bool         // -admin: kill on the unix socket without an ACL file
	log       *slog.Logger // kills, reloads: logged whatever -verbose says
	// byName finds a connection for kill; kept only when kill can be used.
	byName map[string]*connState
	// kills are the kill and kill-holder commands waiting for their
	// victim's locks to be released; rare, so a slice.
	kills     []*pendingKill
	killBound time.Duration // SecurityConfig.KillBound

	// Failed auths (auth.go, internal/acl): their buckets, their sampled log and
	// their counters (set by NewServer once the metrics exist).
	limiter                   *acl.Limiter
	authLog                   *logSampler
	authFailures, authRefused prometheus.Counter
}

// DefaultKillBound is how long kill and kill-holder wait for the victim's
// locks to be released before answering that the release is still pending.
const DefaultKillBound = time.Second

// pendingKill is a kill waiting for its victim's release. The killer's
// connection waits for its batch meanwhile, as during a dump in steps.
type pendingKill struct {
	killer *connState
	b      *batch
	victim *connState
	arg    []byte      // the command's argument, for the reply at the bound
	timer  *time.Timer // answers at the kill bound
}

func newManagerSecurity(cfg Config, list *acl.List) managerSecurity {
	sec := managerSecurity{acl: list, adminUnix: cfg.Security.Admin, log: cfg.Logger,
		limiter:   acl.NewLimiter(cfg.Security.AuthFailuresPerAddr, cfg.Security.AuthFailuresPerSecond),
		authLog:   newLogSampler(cfg.Logger, "auth failures not logged", authLogFirst, authLogInterval),
		killBound: cfg.Security.KillBound,
	}
	if list != nil || sec.adminUnix {
		sec.byName = make(map[string]*connState)
	}
	sec.enabled = sec.byName != nil || cfg.Security.ClientCAFile != ""
	return sec
}

// secureConnect notes a new connection for kill and identifies it by its
// client certificate, if it has one.
func (m *manager) secureConnect(c *connState) {
	if m.sec.byName != nil {
		m.sec.byName[c.name] = c
	}
	if c.certName == "" {
		return
	}
	switch {
	case m.sec.acl == nil:
		m.identify(c, acl.CertIdentity(c.certName))
	default:
		if id := m.sec.acl.ByCert(c.certName); id != nil {
			m.identify(c, id)
		} else {
			// It may still identify itself with a token.
			m.logEvent("certificate without an ACL identity", c, "cert", c.certName)
		}
	}
}

func (m *manager) secureDisconnect(c *connState) {
	if m.sec.byName != nil && m.sec.byName[c.name] == c {
		delete(m.sec.byName, c.name)
	}
}

// kill runs kill CONN and kill-holder NAME: it asks the victim's connection
// to close, and the victim's own goroutine then ends it as on any disconnect,
// which orphans its locks. A lock is never taken from a live holder behind
// its back: the holder learns by the disconnect. The reply waits until the
// manager has seen that disconnect and released the victim's locks, so that
// a command pipelined after the kill sees them free; it reports false when
// the reply is left pending that way (see killReleased and DefaultKillBound).
func (m *manager) kill(c *connState, cmd *proto.Command, b *batch) bool {
	switch {
	case m.sec.acl != nil:
		if c.ident.Perms&acl.PermAdmin == 0 { // denied() has answered an unidentified one
			b.out = append(b.out, wire.PermissionDenied...)
			return true
		}
	case !m.sec.adminUnix:
		b.out = append(b.out, wire.Disabled...)
		return true
	case c.transport != "unix":
		b.out = append(b.out, wire.PermissionDenied...)
		return true
	}
	var victim *connState
	if cmd.Verb == proto.VerbKill {
		if victim = m.sec.byName[string(cmd.Name)]; victim == nil {
			b.out = proto.AppendReply(b.out, 0, wire.NoSuchConnection, cmd.Name)
			return true
		}
	} else {
		l, held := m.inspect(cmd.Name)
		if !held {
			b.out = proto.AppendReply(b.out, 0, wire.NotLocked, cmd.Name)
			return true
		}
		victim = l.owner
	}
	args := []any{"by", c.name, "victim", victim.name, "victim_shows_as", victim.displayName(),
		"locks", len(victim.held), "shared_locks", len(victim.sharedHeld)}
	if c.ident != nil {
		args = append(args, "by_identity", c.ident.Name)
	}
	if cmd.Verb == proto.VerbKillHolder {
		args = append(args, "holder_of", string(cmd.Name))
	}
	m.sec.log.Warn("kill", args...)
	// A connection that kills itself cannot see its own disconnect while
	// it waits for this reply, and one that cannot be cut short never ends.
	if victim == c || victim.kill == nil {
		if victim.kill != nil {
			victim.kill()
		}
		b.out = append(b.out, wire.OK...)
		return true
	}
	victim.kill()
	pk := &pendingKill{killer: c, b: b, victim: victim, arg: append([]byte(nil), cmd.Name...)}
	pk.timer = time.AfterFunc(m.sec.killBound, func() {
		select {
		case m.requests <- request{kind: requestCall, fn: func(m *manager) { m.answerKill(pk, false) }}:
		case <-m.stopped:
		}
	})
	m.sec.kills = append(m.sec.kills, pk)
	b.killPending = true
	return false
}

// killReleased answers the kills of c, whose locks have all been released
// after its disconnect.
func (m *manager) killReleased(c *connState) {
	for i := 0; i < len(m.sec.kills); {
		if pk := m.sec.kills[i]; pk.victim == c {
			m.answerKill(pk, true) // removes it from kills
			continue
		}
		i++
	}
}

// answerKill ends a pending kill: "1 ok" once the victim's locks are
// released, "1 Kill Pending: ARG" at the kill bound. It does nothing if the kill
// was answered already.
func (m *manager) answerKill(pk *pendingKill, released bool) {
	i := slices.Index(m.sec.kills, pk)
	if i < 0 {
		return
	}
	m.sec.kills = slices.Delete(m.sec.kills, i, i+1)
	pk.timer.Stop()
	b := pk.b
	if released {
		b.out = append(b.out, wire.OK...)
	} else {
		b.out = proto.AppendReply(b.out, 1, wire.KillPending, pk.arg)
	}
	b.ends = append(b.ends, len(b.out))
	pk.killer.answered()
}

// needsKill reports whether connections must be killable: kill is enabled,
// or a reloaded ACL file may drop an identity.
func (s *Server) needsKill() bool {
	return s.cfg.Security.ACLFile != "" || s.cfg.Security.Admin
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
		if cmd.Bad || id.MayLock(cmd.Name) {
			return false
		}
	case proto.AccessInspectName:
		if id.Perms&acl.PermInspect != 0 || id.MayLock(cmd.Name) {
			return false
		}
	case proto.AccessInspect:
		if id.Perms&acl.PermInspect != 0 {
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
// the token being tried (auth.go).
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
	if !m.sec.limiter.Allow(addr, m.now) {
		m.sec.authRefused.Inc()
		m.sec.authLog.warn("auth refused: too many failures", "conn", c.name, "transport", c.transport, "addr", addr)
		b.authFailed = authLimited
		return false
	}
	id := m.sec.acl.ByToken(cmd.Name)
	if id == nil {
		m.sec.limiter.Failed(addr, m.now)
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
func (m *manager) identify(c *connState, id *acl.Identity) {
	c.ident = id
	c.identified.Store(true)
	m.registry.register(c, id.Name)
}

// appendPerms is the reply of perms: "1 IDENTITY PERMISSIONS PATTERN...", so
// that a client (the console) can tell what it may do before trying.
func (m *manager) appendPerms(c *connState, out []byte) []byte {
	if m.sec.acl == nil {
		return append(out, wire.Disabled...)
	}
	id := c.ident // denied() has answered for an unidentified connection
	out = append(out, "1 "...)
	out = append(out, id.Name...)
	out = append(out, ' ')
	out = append(out, id.Perms.String()...)
	for _, p := range id.Patterns {
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
func (m *manager) setACL(list *acl.List) {
	m.sec.acl = list
	for c := range m.registry.members {
		if c.ident == nil {
			continue
		}
		id := list.ByName(c.ident.Name)
		reason := ""
		switch {
		case id == nil:
			reason = "identity removed"
		case id.Cert != c.ident.Cert && id.Cert:
			reason = "identity now needs a certificate"
		case id.Cert != c.ident.Cert:
			reason = "identity now needs a token"
		case !id.Cert && id.Hash != c.ident.Hash:
			reason = "token changed"
		}
		if reason != "" {
			m.sec.log.Warn("reload: closing a connection whose credential the ACL file no longer accepts", "conn", c.name, "identity", c.ident.Name, "reason", reason)
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
