#!/usr/bin/env bash
# Builds the release artefacts of glockd VERSION into dist/VERSION/:
#
#   glockd-VERSION-linux-amd64, -linux-arm64, -darwin-arm64   static binaries
#   SHA256SUMS                                                of the files above and below
#   glockd_VERSION_amd64.deb, glockd_VERSION_arm64.deb        (nfpm)
#   glockd-VERSION-1.x86_64.rpm, glockd-VERSION-1.aarch64.rpm (nfpm)
#
# and the Docker image glockd:VERSION when docker is installed. Usage:
#
#   scripts/release.sh 0.3.1
#
# Tag the release first (git tag v0.3.1; the client module: client/v0.3.1),
# so that the binaries' revision is the tag's commit; a tree with
# uncommitted changes gives a revision ending in "-dirty". RELEASE_PLATFORMS
# and RELEASE_PACKAGES restrict what is built, RELEASE_DOCKER=0 skips the
# image (.ci/run builds only the .deb of its own architecture):
# RELEASE_PLATFORMS=linux/amd64 RELEASE_PACKAGES=deb RELEASE_DOCKER=0.
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: scripts/release.sh VERSION, e.g. 0.3.1}
version=${version#v}
if ! [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
	echo "release.sh: $version is not a semantic version (X.Y.Z or X.Y.Z-pre)" >&2
	exit 2
fi
platforms=${RELEASE_PLATFORMS:-linux/amd64 linux/arm64 darwin/arm64}
packages=${RELEASE_PACKAGES:-deb rpm}

revision=unknown
if git rev-parse --git-dir >/dev/null 2>&1; then
	revision=$(git rev-parse HEAD)
	if ! git diff --quiet HEAD --; then
		revision+=-dirty
	fi
fi

out=dist/$version
rm -rf "$out"
mkdir -p "$out"
ldflags="-s -w -X main.version=$version -X main.revision=$revision"

# The packaged unit is contrib/glockd.service with the package's paths: the
# binary in /usr/bin, its flags from /etc/default/glockd, the glockd user
# (the packages create it) in place of a dynamic one.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
{
	echo "# glockd under systemd, installed by the glockd package. Flags: /etc/default/glockd."
	echo "# docs/operating.md (\"Running under systemd\") explains the settings."
	sed -n '/^\[Unit\]/,$p' contrib/glockd.service |
		sed -e 's#^ExecStart=.*#EnvironmentFile=-/etc/default/glockd\nExecStart=/usr/bin/glockd $GLOCKD_OPTS#' \
			-e 's#^DynamicUser=yes#User=glockd\nGroup=glockd#'
} >"$stage/glockd.service"

for platform in $platforms; do
	goos=${platform%/*}
	goarch=${platform#*/}
	bin=$out/glockd-$version-$goos-$goarch
	echo "== $bin"
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch go build -trimpath -ldflags "$ldflags" -o "$bin" .
	if [ "$goos" != linux ]; then
		continue
	fi
	for packager in $packages; do
		echo "== $packager $goarch"
		# nfpm is a tool dependency of its own module, tools/go.mod, so that
		# its eighty-odd dependencies stay out of the daemon's go.mod.
		sed -e "s#@VERSION@#$version#g" -e "s#@GOARCH@#$goarch#g" -e "s#@BINARY@#$bin#g" \
			-e "s#@UNIT@#$stage/glockd.service#g" packaging/nfpm.yaml >"$stage/nfpm.yaml"
		go tool -modfile=tools/go.mod nfpm package --config "$stage/nfpm.yaml" --packager "$packager" --target "$out/"
	done
done
(cd "$out" && sha256sum -- * >SHA256SUMS)
echo "== $out"
ls -l "$out"

if [ "${RELEASE_DOCKER:-1}" = 1 ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
	echo "== docker image glockd:$version"
	docker build --build-arg VERSION="$version" --build-arg REVISION="$revision" -t "glockd:$version" .
else
	echo "== docker image not built here: build it with"
	echo "   docker build --build-arg VERSION=$version --build-arg REVISION=$revision -t glockd:$version ."
fi
