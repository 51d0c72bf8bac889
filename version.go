package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// version and revision are the release's, set by release builds
// (scripts/release.sh):
//
//	go build -ldflags "-X main.version=0.3.1 -X main.revision=$(git rev-parse HEAD)"
//
// They are written by the linker only, never at run time. Without -X, the
// version is the source's own (bumped with each release, as CHANGELOG.md
// records) and the revision the one the go command stamps into the binary
// from the repository it was built in.
var (
	version  = "0.3.0"
	revision = ""
)

// buildInfo says what a binary is: glockd -version, the glockd_build_info
// metric, the start-up log line and the console's footer.
type buildInfo struct {
	Version   string // semantic version, without the leading "v"
	Revision  string // VCS commit, "-dirty" appended for uncommitted changes; "unknown" if not recorded
	GoVersion string // the toolchain that built it, e.g. go1.26.8
}

// readBuildInfo returns the build's information: the -X values where set,
// else what runtime/debug records.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: strings.TrimPrefix(version, "v"), Revision: revision, GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok && b.Revision == "" {
		var modified bool
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if b.Revision != "" && modified {
			b.Revision += "-dirty"
		}
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	return b
}

// String is what glockd -version prints.
func (b buildInfo) String() string {
	return fmt.Sprintf("glockd %s\nrevision %s\n%s %s/%s\n", b.Version, b.Revision, b.GoVersion, runtime.GOOS, runtime.GOARCH)
}

// logAttrs are the start-up log line's fields.
func (b buildInfo) logAttrs() []any {
	return []any{"version", b.Version, "revision", b.Revision, "go", b.GoVersion}
}

// collector is the glockd_build_info gauge, 1, labelled with the build.
func (b buildInfo) collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "glockd_build_info",
		Help:        "Always 1; the labels say which build of glockd runs: version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}
