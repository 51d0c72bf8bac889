#!/bin/sh
# Makes a small private CA and the certificates of docs/security.md's worked
# setup, with openssl only:
#
#   ca.crt ca.key            the CA (keep ca.key offline)
#   server.crt server.key    glockd's certificate, for the names given
#   billing.crt billing.key  a client that may lock billing/*
#   monitor.crt monitor.key  a read-only client
#
# Usage: scripts/make-certs.sh DIR [SERVER_NAME...]   (default: localhost)
# The server certificate covers each SERVER_NAME (an IP address or a DNS
# name) and always 127.0.0.1 and localhost. The tests run this script.
set -eu
dir=${1:?usage: make-certs.sh DIR [SERVER_NAME...]}
shift
mkdir -p "$dir"
cd "$dir"
umask 077

san="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
	case $name in
	*[!0-9.]*) san="$san,DNS:$name" ;;
	*) san="$san,IP:$name" ;;
	esac
done

# The CA: a P-256 key and a self-signed certificate allowed to sign others.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout ca.key -out ca.crt -days 3650 -subj "/CN=glockd example CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign"

# issue NAME USAGE SAN: a key, a request, and the CA's signature on it.
issue() {
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
	printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$2" "$3" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
		-days 365 -extfile "$1.ext" -out "$1.crt"
	rm "$1.csr" "$1.ext"
}

issue server serverAuth "$san"
# A client's identity is its certificate's first DNS name.
issue billing clientAuth DNS:billing
issue monitor clientAuth DNS:monitor
chmod 644 ca.crt server.crt billing.crt monitor.crt
