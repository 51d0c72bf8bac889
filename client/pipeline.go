package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

var errNotExecuted = errors.New("glockd client: pipeline not executed yet")

// Reply is the reply to one command of a [Pipeline], available once the
// pipeline has been executed.
type Reply[T any] struct {
	val T
	err error
}

// Result returns the parsed reply, or why there is none.
func (r *Reply[T]) Result() (T, error) { return r.val, r.err }

// Val returns the parsed reply, the zero value when there is none.
func (r *Reply[T]) Val() T { return r.val }

// Err returns why there is no reply, or nil.
func (r *Reply[T]) Err() error { return r.err }

// Pipeline queues commands to send in one write, with their replies read in
// order by [Pipeline.Exec]. Its methods mirror Client's and return a
// [Reply] that holds the result after Exec. A Pipeline is not safe for
// concurrent use.
type Pipeline struct {
	c    *Client
	reqs []request
	// finish[i] gives the Reply of reqs[i] its reply lines or, when the
	// exchange failed, its error.
	finish []func(lines []string, err error) error
	failed error // the first command that could not be queued
}

// Pipeline returns an empty pipeline on c.
func (c *Client) Pipeline() *Pipeline { return &Pipeline{c: c} }

// Len returns the number of commands queued.
func (p *Pipeline) Len() int { return len(p.reqs) }

func add[T any](p *Pipeline, cmd command[T]) *Reply[T] {
	r := &Reply[T]{err: errNotExecuted}
	if cmd.err != nil {
		r.err = cmd.err
		if p.failed == nil {
			p.failed = cmd.err
		}
		return r
	}
	p.reqs = append(p.reqs, cmd.request())
	p.finish = append(p.finish, func(lines []string, err error) error {
		if err != nil {
			r.err = err
		} else {
			r.val, r.err = cmd.parse(lines)
		}
		return r.err
	})
	return r
}

// Exec sends the queued commands and reads their replies, then empties the
// pipeline for reuse. It returns the error that ended the exchange, which
// the Replies not yet read then hold too, or else the first error of any
// command.
//
// When ctx ends while a wait of the pipeline (gw, sgw) is unanswered, each
// of its waits is cancelled in turn and Exec still reads every reply, then
// returns ctx's error: a wait that was granted before its cancellation
// shows as granted in its Reply, and the client holds that lock.
func (p *Pipeline) Exec(ctx context.Context) error {
	reqs, finish, first := p.reqs, p.finish, p.failed
	p.reqs, p.finish, p.failed = nil, nil, nil
	if len(reqs) == 0 {
		return first
	}
	n, interrupted, err := p.c.roundTrip(ctx, reqs)
	if err != nil {
		err = fmt.Errorf("glockd pipeline of %d commands, %d answered: %w", len(reqs), n, err)
	} else if interrupted {
		first = fmt.Errorf("glockd pipeline of %d commands: waits cancelled: %w", len(reqs), ctx.Err())
	}
	for i, f := range finish {
		if i >= n {
			_ = f(nil, err)
			continue
		}
		if rerr := f(reqs[i].lines, nil); rerr != nil && first == nil {
			first = rerr
		}
	}
	if err != nil {
		return err
	}
	return first
}

// Get queues g; see [Client.Get].
func (p *Pipeline) Get(name string) *Reply[bool] { return add(p, getCmd(name)) }

// Release queues r; see [Client.Release].
func (p *Pipeline) Release(name string) *Reply[bool] { return add(p, releaseCmd(name)) }

// Inspect queues i; see [Client.Inspect].
func (p *Pipeline) Inspect(name string) *Reply[bool] { return add(p, inspectCmd(name)) }

// SharedGet queues sg; see [Client.SharedGet].
func (p *Pipeline) SharedGet(name string) *Reply[int] { return add(p, sharedGetCmd(name)) }

// SharedRelease queues sr; see [Client.SharedRelease].
func (p *Pipeline) SharedRelease(name string) *Reply[bool] { return add(p, sharedReleaseCmd(name)) }

// SharedInspect queues si; see [Client.SharedInspect].
func (p *Pipeline) SharedInspect(name string) *Reply[int] { return add(p, sharedInspectCmd(name)) }

// Me queues me; see [Client.Me].
func (p *Pipeline) Me() *Reply[Identity] { return add(p, meCmd()) }

// Iam queues iam; see [Client.Iam].
func (p *Pipeline) Iam(name string) *Reply[struct{}] { return add(p, iamCmd(name)) }

// Who queues who; see [Client.Who].
func (p *Pipeline) Who(name string) *Reply[[]Registration] { return add(p, whoCmd(name)) }

// Debug queues d; see [Client.Debug].
func (p *Pipeline) Debug(name string) *Reply[[]LockOwner] { return add(p, debugCmd("d", name)) }

// SharedDebug queues sd; see [Client.SharedDebug].
func (p *Pipeline) SharedDebug(name string) *Reply[[]LockOwner] { return add(p, debugCmd("sd", name)) }

// Dump queues dump; see [Client.Dump].
func (p *Pipeline) Dump() *Reply[string] { return add(p, dumpCmd("dump")) }

// DumpShared queues dump shared; see [Client.DumpShared].
func (p *Pipeline) DumpShared() *Reply[string] { return add(p, dumpCmd("dump shared")) }

// Stats queues q; see [Client.Stats].
func (p *Pipeline) Stats() *Reply[map[string]int64] { return add(p, statsCmd()) }

// GetWait queues gw; see [Client.GetWait]. Commands queued after it run
// once it is resolved.
func (p *Pipeline) GetWait(wait time.Duration, name string) *Reply[bool] {
	return add(p, getWaitCmd(wait, name))
}

// SharedGetWait queues sgw; see [Client.SharedGetWait].
func (p *Pipeline) SharedGetWait(wait time.Duration, maxHolders int, name string) *Reply[int] {
	return add(p, sharedGetWaitCmd(wait, maxHolders, name))
}

// Token queues t; see [Client.Token].
func (p *Pipeline) Token(name string) *Reply[uint64] { return add(p, tokenCmd(name)) }

// Ping queues ping; see [Client.Ping].
func (p *Pipeline) Ping() *Reply[struct{}] { return add(p, pingCmd()) }

// Do queues a raw command with a one-line reply; see [Client.Do].
func (p *Pipeline) Do(line string) *Reply[string] { return add(p, rawCmd(line)) }

// DoLines queues a raw command with a reply of any number of lines; see
// [Client.DoLines].
func (p *Pipeline) DoLines(line string) *Reply[[]string] { return add(p, rawLinesCmd(line)) }
