package main

import (
	"log/slog"
	"time"

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

	// Failed auths (authlimit.go): their buckets, their sampled log and
	// their counters (set by NewServer once the metrics exist).
	limiter                   *authLimiter
	authLog                   *logSampler
	authFailures, authRefused prometheus.Counter
}

func newManagerSecurity(cfg Config, acl *accessList) managerSecurity {
	sec := managerSecurity{acl: acl, adminUnix: cfg.Security.Admin, log: cfg.Logger,
		limiter: newAuthLimiter(cfg.Security.AuthFailuresPerAddr, cfg.Security.AuthFailuresPerSecond),
		authLog: newLogSampler(cfg.Logger, "auth failures not logged", authLogFirst, authLogInterval),
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
// its back: the holder learns by the disconnect.
func (m *manager) kill(c *connState, cmd *command, out []byte) []byte {
	switch {
	case m.sec.acl != nil:
		if c.ident.perms&permAdmin == 0 { // denied() has answered an unidentified one
			return append(out, replyPermissionDenied...)
		}
	case !m.sec.adminUnix:
		return append(out, replyDisabled...)
	case c.transport != "unix":
		return append(out, replyPermissionDenied...)
	}
	var victim *connState
	if cmd.verb == verbKill {
		if victim = m.sec.byName[string(cmd.name)]; victim == nil {
			return appendReply(out, 0, textNoSuchConnection, cmd.name)
		}
	} else {
		l, held := m.inspect(cmd.name)
		if !held {
			return appendReply(out, 0, textNotLocked, cmd.name)
		}
		victim = l.owner
	}
	args := []any{"by", c.name, "victim", victim.name, "victim_shows_as", victim.displayName(),
		"locks", len(victim.held), "shared_locks", len(victim.sharedHeld)}
	if c.ident != nil {
		args = append(args, "by_identity", c.ident.name)
	}
	if cmd.verb == verbKillHolder {
		args = append(args, "holder_of", string(cmd.name))
	}
	m.sec.log.Warn("kill", args...)
	if victim.kill != nil {
		victim.kill()
	}
	return append(out, replyOK...)
}

// abortFunc returns what cuts a connection short from another goroutine
// without blocking: a deadline in the past wakes its blocked read (and any
// write stuck on a client that does not read), and its goroutine then ends
// it the usual way. Closing it here instead could block the manager on a
// TLS close_notify or a websocket close frame.
func abortFunc(t transport) func() {
	var setDeadline func(time.Time) error
	switch t := t.(type) {
	case *streamTransport:
		setDeadline = t.nc.SetDeadline
	case *websocketTransport:
		setDeadline = t.nc.SetDeadline
	default:
		return nil
	}
	return func() { setDeadline(time.Unix(1, 0)) }
}

// needsKill reports whether connections must be killable: kill is enabled,
// or a reloaded ACL file may drop an identity.
func (s *Server) needsKill() bool {
	return s.cfg.Security.ACLFile != "" || s.cfg.Security.Admin
}
