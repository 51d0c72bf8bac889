package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"net"
	"os"

	"github.com/glockd/glockd/tester/load"
)

// secureFlags registers the load generator's TLS and auth flags; the
// function returned completes opts once the flags are parsed.
func secureFlags(fs *flag.FlagSet, opts *load.Options) func() error {
	caFile := fs.String("tls-ca", "", "speak TLS to -host (the server's -tls-port), trusting the CA certificates in this PEM `file`")
	certFile := fs.String("tls-cert", "", "client certificate (PEM) for a server with -tls-client-ca")
	keyFile := fs.String("tls-key", "", "key of -tls-cert")
	fs.StringVar(&opts.Auth, "auth", "", "`token` each connection sends with auth first (a server with -acl-file)")
	return func() error {
		if *caFile == "" {
			if *certFile != "" || *keyFile != "" {
				return errors.New("-tls-cert and -tls-key need -tls-ca")
			}
			return nil
		}
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New(*caFile + " holds no PEM certificate")
		}
		host, _, err := net.SplitHostPort(opts.Addrs[0])
		if err != nil {
			return err
		}
		opts.TLS = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
		if *certFile != "" {
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				return err
			}
			opts.TLS.Certificates = []tls.Certificate{cert}
		}
		return nil
	}
}
