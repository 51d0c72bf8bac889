package load

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/glockd/glockd/client"
)

// dialSecure connects over TLS and/or identifies the connection with a
// token, as Options.TLS and Options.Auth say.
func (r *run) dialSecure(ctx context.Context) (*client.Client, error) {
	var c *client.Client
	if r.opts.TLS != nil {
		if r.opts.Network != "tcp" || len(r.opts.Addrs) != 1 {
			return nil, errors.New("load: TLS is for one -host target (the line protocol over TLS)")
		}
		d := tls.Dialer{Config: r.opts.TLS}
		conn, err := d.DialContext(ctx, "tcp", r.opts.Addrs[0])
		if err != nil {
			return nil, err
		}
		c = client.New(conn)
	} else {
		var err error
		if c, err = client.Dial(ctx, r.opts.Network, r.opts.Addrs...); err != nil {
			return nil, err
		}
	}
	if r.opts.Auth != "" {
		reply, err := c.Do(ctx, "auth "+r.opts.Auth)
		if err == nil && reply != "1 ok" {
			err = fmt.Errorf("auth: %q", reply)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}
