package ha

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// newClient makes the etcd client of a node.
func newClient(cfg Config, log *slog.Logger) (*clientv3.Client, error) {
	tlsConfig, err := etcdTLS(cfg)
	if err != nil {
		return nil, err
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         tlsConfig,
		DialTimeout: cfg.LeaseTTL,
		// A connection to etcd that went silent (a partition that drops
		// packets) is replaced rather than waited on; 10 s is gRPC's least.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: cfg.LeaseTTL,
		Logger:               etcdLogger(log),
		// gRPC's reconnection backoff grows to 2 minutes: a node would
		// then notice etcd's return long after it came back.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.LeaseTTL,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return client, nil
}

// etcdLogger passes the etcd client's warnings and errors to our log (a
// failed TLS handshake, say, which our own errors only show as a timeout),
// each kind at most once every 10 seconds: while etcd is down the client
// warns at every retry.
func etcdLogger(log *slog.Logger) *zap.Logger {
	return zap.New(zapcore.NewSamplerWithOptions(zapToSlog{log: log}, 10*time.Second, 1, 0))
}

// zapToSlog is a zapcore.Core writing to a slog.Logger.
type zapToSlog struct {
	log    *slog.Logger
	fields []zapcore.Field
}

func (z zapToSlog) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (z zapToSlog) With(fields []zapcore.Field) zapcore.Core {
	return zapToSlog{log: z.log, fields: append(slices.Clip(z.fields), fields...)}
}

func (z zapToSlog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if z.Enabled(e.Level) {
		return ce.AddCore(e, z)
	}
	return ce
}

func (z zapToSlog) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(slices.Clip(z.fields), fields...) {
		f.AddTo(enc)
	}
	keys := slices.Sorted(maps.Keys(enc.Fields))
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, enc.Fields[k])
	}
	level := slog.LevelWarn
	if e.Level >= zapcore.ErrorLevel {
		level = slog.LevelError
	}
	z.log.Log(context.Background(), level, "etcd client: "+e.Message, args...)
	return nil
}

func (z zapToSlog) Sync() error { return nil }

// etcdTLS is the TLS config of the etcd client: nil for plain
// connections.
func etcdTLS(cfg Config) (*tls.Config, error) {
	if cfg.CertFile == "" && cfg.CAFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("-etcd-cert/-etcd-key: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("-etcd-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-etcd-ca %s: no certificate", cfg.CAFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}
