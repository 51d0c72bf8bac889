package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html"
	"net/http"
	"path"
	"strings"
	"time"
)

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
