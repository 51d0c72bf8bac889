package ha

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/glockd/glockd/internal/tokens"
)

// reserveBlocks reserves the next block of tokens whenever the manager asks.
func (n *Node) reserveBlocks(ctx context.Context, t *Term) {
	for {
		select {
		case <-t.want:
		case <-t.over:
			return
		}
		for {
			b, err := n.reserveBlock(ctx, t.key, t.rev)
			if err == nil {
				select {
				case t.blocks <- b: // empty: the manager asks again only after taking the last
				case <-t.over:
					return
				}
				break
			}
			if errors.Is(err, errNotLeader) {
				t.End("the election key is no longer ours")
				return
			}
			if ctx.Err() != nil || t.Ended() {
				return
			}
			n.log.Warn("token block", "err", err)
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
}

var errNotLeader = errors.New("not the leader")

// reserveBlock reserves the next tokens.BlockSize tokens: it moves the
// counter in etcd, the end of the highest block ever reserved, by a
// transaction that succeeds only while key (created at rev) is still the
// leader's. A new leader therefore starts above every token an earlier
// one could hand out.
func (n *Node) reserveBlock(ctx context.Context, key string, rev int64) (tokens.Block, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
		b, done, err := n.tryReserveBlock(rctx, key, rev)
		cancel()
		if done || err != nil {
			return b, err
		}
	}
}

func (n *Node) tryReserveBlock(ctx context.Context, key string, rev int64) (b tokens.Block, done bool, err error) {
	get, err := n.client.Get(ctx, n.tokensKey)
	if err != nil {
		return b, false, err
	}
	var modRev int64
	if len(get.Kvs) == 0 {
		// The first block ever starts at the clock seed, above the tokens
		// of a single node that moves to -etcd.
		b.Start = tokens.ClockSeed(time.Now())
	} else {
		kv := get.Kvs[0]
		modRev = kv.ModRevision
		if b.Start, err = strconv.ParseUint(string(kv.Value), 10, 64); err != nil {
			return b, false, fmt.Errorf("%s holds %q: %w", n.tokensKey, kv.Value, err)
		}
	}
	if b.Start > tokens.Max {
		return b, false, fmt.Errorf("tokens exhausted: %s is %d", n.tokensKey, b.Start)
	}
	b.End = min(b.Start+tokens.BlockSize, tokens.Max+1)
	resp, err := n.client.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(key), "=", rev),
		clientv3.Compare(clientv3.ModRevision(n.tokensKey), "=", modRev),
	).Then(
		clientv3.OpPut(n.tokensKey, strconv.FormatUint(b.End, 10)),
	).Else(
		clientv3.OpGet(key),
	).Commit()
	if err != nil {
		return b, false, err
	}
	if resp.Succeeded {
		return b, true, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].CreateRevision != rev {
		return b, false, errNotLeader
	}
	return b, false, nil // the counter moved under us: read it again
}
