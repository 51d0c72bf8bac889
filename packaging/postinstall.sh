#!/bin/sh
# The service is installed, not started: see /etc/default/glockd, then
#   systemctl enable --now glockd
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	# An upgrade restarts a running daemon on the new binary.
	if systemctl is-active --quiet glockd.service; then
		systemctl restart glockd.service || true
	fi
fi
