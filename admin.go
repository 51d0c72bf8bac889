package main

import (
	"log/slog"
	"slices"
	"time"

	"github.com/glockd/glockd/internal/proto"
	"github.com/glockd/glockd/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// managerSecurity is the manager's share of access control: all of it owned
// by the manager goroutine, and all of it off (enabled false) without the
// security flags, so that a plain server pays one test per connect.
type managerSecurity struct {
	enabled   bool         // any of the below is on: connects and disconnects are seen here
	acl       *accessList  // -acl-file; nil without one
	adminUnix bool         // -admin: kill on the unix socket without an ACL file
	log       *slog.Logger // kills, reloads: logged whatever -verbose says
	// byName finds a connection for kill; kept only when kill can be used.
	byName map[string]*connState
	// kills are the kill and kill-holder commands waiting for their
	// victim's locks to be released; rare, so a slice.
	kills     []*pendingKill
	killBound time.Duration // SecurityConfig.KillBound

	// Failed auths (authlimit.go): their buckets, their sampled log and
	// their counters (set by NewServer once the metrics exist).
	limiter                   *authLimiter
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

func newManagerSecurity(cfg Config, acl *accessList) managerSecurity {
	sec := managerSecurity{acl: acl, adminUnix: cfg.Security.Admin, log: cfg.Logger,
		limiter:   newAuthLimiter(cfg.Security.AuthFailuresPerAddr, cfg.Security.AuthFailuresPerSecond),
		authLog:   newLogSampler(cfg.Logger, "auth failures not logged", authLogFirst, authLogInterval),
		killBound: cfg.Security.KillBound,
	}
	if acl != nil || sec.adminUnix {
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
		m.identify(c, certIdentity(c.certName))
	default:
		if id := m.sec.acl.byCert(c.certName); id != nil {
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
		if c.ident.perms&permAdmin == 0 { // denied() has answered an unidentified one
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
		args = append(args, "by_identity", c.ident.name)
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
	pk.killer.done <- struct{}{}
}

// needsKill reports whether connections must be killable: kill is enabled,
// or a reloaded ACL file may drop an identity.
func (s *Server) needsKill() bool {
	return s.cfg.Security.ACLFile != "" || s.cfg.Security.Admin
}
