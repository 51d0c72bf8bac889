#!/bin/sh
# On removal (not on upgrade) stop and disable the service. dpkg passes
# "remove" (or "upgrade"), rpm the number of versions left (0 on removal).
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now glockd.service || true
	fi
	;;
esac
