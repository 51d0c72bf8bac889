#!/bin/sh
# The glockd system user and group, which the unit runs as. Kept on
# removal, as Debian and Fedora keep system users.
set -e
if ! getent group glockd >/dev/null; then
	groupadd --system glockd
fi
if ! getent passwd glockd >/dev/null; then
	useradd --system --gid glockd --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin --comment "glockd lock daemon" glockd
fi
