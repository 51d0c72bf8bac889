#!/usr/bin/env bash
# The tests of the Python and PHP clients (clients/python, clients/php),
# against a glockd built from this repository. Each suite starts its own
# daemons on loopback ports and kills them (kill -9, SIGSTOP).
#
#   scripts/test-clients.sh [python] [php]     (default: both)
#
# Python: Debian's /usr/bin/python3 with python3-venv, python3-setuptools
# and python3-wheel; the package is installed offline into a venv, as a
# user would, and the tests import that installed copy. PHP: php-cli and
# Debian's phpunit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

go build -o "$tmp/glockd" .
export GLOCKD_BIN="$tmp/glockd"

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(python php)

for suite in "${suites[@]}"; do
	case $suite in
	python)
		echo "== clients/python"
		# A copy, so that the build leaves nothing in the tree.
		cp -r clients/python "$tmp/python"
		/usr/bin/python3 -m venv --system-site-packages "$tmp/venv"
		"$tmp/venv/bin/pip" install --quiet --no-build-isolation --no-index "$tmp/python"
		# From the tests' directory, `import glockd` finds the installed package only.
		(cd clients/python/tests &&
			"$tmp/venv/bin/python" -c 'import glockd; print("glockd", glockd.__version__, "from", glockd.__file__)' &&
			"$tmp/venv/bin/python" -X dev -m unittest -v 2>&1)
		;;
	php)
		echo "== clients/php"
		(cd clients/php && phpunit --colors=never)
		;;
	*)
		echo "unknown suite $suite (python, php)" >&2
		exit 2
		;;
	esac
done
echo "clients: ok ($root)"
