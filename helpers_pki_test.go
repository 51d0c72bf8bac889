package main

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// testCA is a certificate authority made by a test, writing its files into
// the test's temporary directory.
type testCA struct {
	t      testing.TB
	dir    string
	cert   *x509.Certificate
	key    crypto.Signer
	file   string // the CA certificate, PEM
	serial int64
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key, serial: 1}
	ca.file = ca.write(name+"-ca.pem", pemBlock("CERTIFICATE", der))
	return ca
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

func (ca *testCA) write(name string, data []byte) string {
	ca.t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return path
}

// issued is a certificate the CA signed, in memory and in files.
type issued struct {
	cert               tls.Certificate
	certFile, keyFile  string
	certPEM, keyPEM    []byte
	serial             int64
	notBefore, expires time.Time
}

type certOpts struct {
	cn       string
	dns      []string
	client   bool          // a client certificate, else a server one for 127.0.0.1 and localhost
	validFor time.Duration // 0: a day
	expired  bool
}

func (ca *testCA) issue(o certOpts) issued {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	ca.serial++
	notBefore, notAfter := time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if o.validFor > 0 {
		notAfter = time.Now().Add(o.validFor)
	}
	if o.expired {
		notBefore, notAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: o.cn},
		DNSNames:     o.dns,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if o.client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		tmpl.DNSNames = append(tmpl.DNSNames, "localhost")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	is := issued{serial: ca.serial, notBefore: notBefore, expires: notAfter}
	is.certPEM, is.keyPEM = pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER)
	name := o.cn
	if name == "" {
		name = o.dns[0]
	}
	name = strings.NewReplacer("/", "_", " ", "_").Replace(name)
	is.certFile = ca.write(name+"-"+big.NewInt(ca.serial).String()+".crt", is.certPEM)
	is.keyFile = ca.write(name+"-"+big.NewInt(ca.serial).String()+".key", is.keyPEM)
	is.cert, err = tls.X509KeyPair(is.certPEM, is.keyPEM)
	if err != nil {
		ca.t.Fatal(err)
	}
	return is
}

// pool is a pool holding only this CA.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// clientTLS is a client configuration that trusts ca, with the client
// certificates given.
func (ca *testCA) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1", Certificates: certs}
}

// tlsServer starts a server with the line protocol over TLS (and WSS on the
// websocket port) with a certificate of ca; edit may change the config.
func tlsServer(t testing.TB, ca *testCA, edit func(*Config)) (*Server, issued) {
	t.Helper()
	cert := ca.issue(certOpts{cn: "glockd test server"})
	srv := startServer(t, func(c *Config) {
		c.Security.TLSAddr = "127.0.0.1:0"
		c.Security.WSTLS = true
		c.Security.CertFile, c.Security.KeyFile = cert.certFile, cert.keyFile
		if edit != nil {
			edit(c)
		}
	})
	return srv, cert
}

// dialTLS opens a line-protocol connection over TLS and completes the
// handshake; with TLS 1.3 a refused client certificate shows only at the
// first read, so see expectRefused.
func dialTLS(t testing.TB, srv *Server, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	nc, err := d.Dial("tcp", srv.TLSAddr().String())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*tls.Conn), nil
}

// tlsClient is dialTLS as a test client.
func tlsClient(t testing.TB, srv *Server, cfg *tls.Config) *client {
	t.Helper()
	tc, err := dialTLS(t, srv, cfg)
	if err != nil {
		t.Fatalf("tls dial: %v", err)
	}
	return streamClient(t, tc)
}

// streamClient makes a test client of a connection already open.
func streamClient(t testing.TB, nc net.Conn) *client {
	c := &client{t: t, nc: nc, r: bufio.NewReader(nc)}
	t.Cleanup(func() { c.close() })
	c.name = nc.LocalAddr().String()
	return c
}

// wssClient opens a websocket over TLS on the server's -ws port.
func wssClient(t testing.TB, srv *Server, cfg *tls.Config) (*client, error) {
	t.Helper()
	wcfg, err := websocket.NewConfig("wss://"+srv.WSAddr().String()+"/", "https://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	wcfg.Header.Del("Origin")
	wcfg.TlsConfig = cfg
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", srv.WSAddr().String(), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	ws, err := websocket.NewClient(wcfg, nc)
	if err != nil {
		return nil, err
	}
	c := &client{t: t, nc: nc, ws: ws, name: nc.LocalAddr().String()}
	t.Cleanup(func() { c.close() })
	return c, nil
}

// tokenHash is the ACL file's secret of a token.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// writeFile writes a file in a temporary directory and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// logBuffer collects a server's log, safe for concurrent writes.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
