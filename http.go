package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/glockd/glockd/internal/transport"
	"golang.org/x/net/websocket"
)

// The HTTP side of the -ws listener (and of -metrics): the routes, the
// websocket upgrade and its -ws-origin check, the bounds on HTTP
// connections, and the embedded console.

// consoleFiles is the web console: a static page that speaks the protocol
// to the server over a websocket on "/" through the JavaScript client,
// clients/js/glockd.js, served beside it as /console/glockd.js (so that
// every browser test runs that module). It has no build step and loads
// nothing from elsewhere.
//
//go:embed console clients/js/glockd.js
var consoleFiles embed.FS

// consoleSources maps each file served under /console/ to its embedded path.
var consoleSources = map[string]string{
	"index.html":  "console/index.html",
	"console.css": "console/console.css",
	"console.js":  "console/console.js",
	"glockd.js":   "clients/js/glockd.js",
}

// consoleAsset is one embedded file, ready to serve.
type consoleAsset struct {
	body        []byte
	contentType string
	etag        string
}

// consoleHandler serves the console: index.html on "/", its other files
// under /console/. The page's footer names the build.
func consoleHandler(build buildInfo) http.Handler {
	footer := strings.NewReplacer(
		"{{version}}", html.EscapeString(build.Version),
		"{{revision}}", html.EscapeString(build.Revision),
		"{{goversion}}", html.EscapeString(build.GoVersion))
	assets := make(map[string]consoleAsset)
	for name, src := range consoleSources {
		body, err := consoleFiles.ReadFile(src)
		if err != nil {
			panic(err) // embedded at build time: cannot happen
		}
		if name == "index.html" {
			body = []byte(footer.Replace(string(body)))
		}
		sum := sha256.Sum256(body)
		assets[name] = consoleAsset{
			body:        body,
			contentType: map[string]string{".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}[path.Ext(name)],
			etag:        `"` + hex.EncodeToString(sum[:8]) + `"`,
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := "index.html"
		if r.URL.Path != "/" {
			name = path.Base(r.URL.Path)
			if r.URL.Path != "/console/"+name || name == "index.html" {
				http.NotFound(w, r)
				return
			}
		}
		a, ok := assets[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Everything comes from this server; the websocket goes back to it.
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
	})
}

// checkOriginSyntax accepts "*" or an origin as browsers send it:
// scheme://host[:port], nothing after.
func checkOriginSyntax(origin string) error {
	if origin == "*" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("websocket origin %q: want scheme://host[:port] or *", origin)
	}
	return nil
}

// newHTTPServer serves h with every HTTP connection bounded in number (see
// httpBudget) and in time: one that sends no whole request, idle or not, is
// closed after HTTPIdleTimeout. Hijacking clears the deadlines, so a
// websocket is not cut by them.
func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	timeout := s.cfg.HTTPIdleTimeout
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		WriteTimeout:      timeout,
		IdleTimeout:       timeout,
		ConnState:         s.httpConns.ConnState,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
}

// httpHandler serves the -ws address: on "/", the websocket to a websocket
// upgrade and the console to a browser; the console's assets, /metrics and
// /healthz.
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	console := consoleHandler(s.build)
	mux.Handle("/{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.Header.Get("Upgrade") == "" {
			console.ServeHTTP(w, r)
			return
		}
		transport.ServeWebsocket(w, r, s.checkOrigin, s.cfg.MaxLine, s.serveWebsocket)
	}))
	mux.Handle("GET /console/", console)
	s.addMetricsRoutes(mux)
	return mux
}

// checkOrigin enforces -ws-origin. Requests without an Origin header come from
// programs, not browsers, and cross-site websocket hijacking needs a browser.
func (s *Server) checkOrigin(_ *websocket.Config, req *http.Request) error {
	origin := req.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	for _, allowed := range s.cfg.WSOrigins {
		if allowed == "*" || strings.EqualFold(allowed, origin) {
			return nil
		}
	}
	if len(s.cfg.WSOrigins) == 0 {
		return nil
	}
	return fmt.Errorf("origin %q not allowed", origin)
}

func (s *Server) serveWebsocket(ws *websocket.Conn, t *transport.Websocket) {
	c := newConn(s, ws.Request().RemoteAddr, "websocket", t)
	if tls := ws.Request().TLS; tls != nil {
		c.state.certName = peerName(*tls)
	}
	if s.admit(c) {
		s.serveAdmitted(c)
	}
}
