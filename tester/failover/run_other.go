//go:build !unix

package failover

import (
	"context"
	"errors"
)

// ErrNoEtcd is returned when the etcd binary cannot be found.
var ErrNoEtcd = errors.New("etcd is not installed")

// Run needs signals (SIGSTOP, SIGCONT) that only unix systems have.
func Run(ctx context.Context, opts Options) (Result, error) {
	return Result{}, errors.New("tester failover needs a unix system")
}
