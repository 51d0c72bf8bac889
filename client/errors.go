package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Errors of access control and admission, for errors.Is. The server's
// replies that carry them are turned into these wherever they come, so a
// caller need not know the reply texts.
var (
	// ErrPermissionDenied: the connection's identity may not do this (a
	// lock outside its patterns, or a command it lacks a permission for).
	// The error is a *PermissionError, with the name.
	ErrPermissionDenied = errors.New("glockd: permission denied")
	// ErrAuthRequired: the server has -acl-file and the connection has not
	// sent auth (see SessionOptions.Token).
	ErrAuthRequired = errors.New("glockd: auth required")
	// ErrAuthFailed: the server did not accept the token sent with auth.
	ErrAuthFailed = errors.New("glockd: auth failed")
	// ErrTooManyConnections: the server refused the connection, being at
	// its -max-conns limit.
	ErrTooManyConnections = errors.New("glockd: too many connections")
)

// The replies behind them.
const (
	permissionDenied   = "0 Permission Denied"
	authRequired       = "0 Auth Required"
	authFailure        = "0 Auth Failure"
	tooManyConnections = "0 Too Many Connections"
)

// PermissionError is a command refused by the server's access control. It
// matches ErrPermissionDenied with errors.Is.
type PermissionError struct {
	Cmd  string // the command line sent
	Name string // the lock name refused; "" for a command not on a name (d, q, ...)
}

func (e *PermissionError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("glockd: %q: permission denied", e.Cmd)
	}
	return fmt.Sprintf("glockd: %q: permission denied on %q", e.Cmd, e.Name)
}

// Is makes errors.Is(err, ErrPermissionDenied) hold.
func (e *PermissionError) Is(target error) bool { return target == ErrPermissionDenied }

// refusal returns the error a one-line reply of access control or
// admission stands for, or nil if it is no such reply.
func refusal(cmd string, lines []string) error {
	line, ok := single(lines)
	if !ok {
		return nil
	}
	switch {
	case line == permissionDenied:
		return &PermissionError{Cmd: cmd}
	case strings.HasPrefix(line, permissionDenied+": "):
		return &PermissionError{Cmd: cmd, Name: line[len(permissionDenied+": "):]}
	case line == authRequired:
		return fmt.Errorf("glockd: %q: %w", cmd, ErrAuthRequired)
	case line == authFailure:
		return fmt.Errorf("glockd: %q: %w", cmd, ErrAuthFailed)
	case line == tooManyConnections:
		return ErrTooManyConnections
	}
	return nil
}

// authCmd is auth TOKEN. Its errors say "auth", never the token.
func authCmd(token string) command[struct{}] {
	cmd := command[struct{}]{line: "auth " + token}
	if token == "" || strings.ContainsAny(token, "\r\n") {
		cmd.err = errors.New("glockd client: auth: a token is one non-empty line")
	}
	cmd.parse = func(lines []string) (struct{}, error) {
		line, ok := single(lines)
		switch {
		case ok && line == "1 ok":
			return struct{}{}, nil
		case ok && line == authFailure:
			return struct{}{}, fmt.Errorf("glockd: auth: %w", ErrAuthFailed)
		}
		return struct{}{}, &ReplyError{Cmd: "auth", Lines: append([]string(nil), lines...)}
	}
	return cmd
}

// Auth identifies the connection to a server with -acl-file (auth). A
// token the server does not accept is ErrAuthFailed, after the server's
// -auth-failure-delay.
func (c *Client) Auth(ctx context.Context, token string) error {
	cmd := authCmd(token)
	if cmd.err != nil {
		return cmd.err
	}
	reqs := [1]request{cmd.request()}
	if _, _, err := c.roundTrip(ctx, reqs[:]); err != nil {
		return fmt.Errorf("glockd auth: %w", err)
	}
	_, err := cmd.parse(reqs[0].lines)
	return err
}
