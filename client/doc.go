// Package client is a Go client for glockd, the network lock daemon.
//
// A lock belongs to the connection that took it and is released when that
// connection ends, so a [Client] is one connection: open one per lock owner,
// and keep it open while the locks are needed.
//
// A [Session] is a Client that knows when its locks are gone. It sends a
// heartbeat ("!ping") every second, which the server answers at once
// ("!pong") even while a wait of the connection is pending, and it is
// declared lost when the server leaves it unanswered for three seconds or
// the connection fails: its Done channel, and the Lost channel of every
// [Lock] taken through it, are closed at that moment. Locks are never taken
// again behind the caller's back; after a loss, start a new Session.
//
// Every reply is checked for its exact form: [Client.Get] on "foo" accepts
// only "1 Lock Get Success: foo" or "0 Lock Get Failure: foo". The refusals
// of access control and admission are errors for errors.Is:
// [ErrPermissionDenied] (a [*PermissionError] with the name),
// [ErrAuthRequired], [ErrAuthFailed], [ErrTooManyConnections]. Anything else
// is a [*ReplyError] quoting the bytes received.
//
// The package is a module of its own, github.com/glockd/glockd/client,
// tagged client/vX.Y.Z, that needs Go 1.23 and not the daemon's module.
//
// The server answers commands in order. A Client pipelines the calls of
// several goroutines on its connection, and one goroutine of its own reads
// every reply and hands it to its call; a [Pipeline] sends many commands in
// one write. Replies that start with "!" (to "!ping" and "!cancel") are out
// of band: the server sends them at once, not in order, and no other reply
// is exactly one of them.
//
// The server runs the commands that follow a wait (gw, sgw) only once the
// wait is over, so while one is pending the Client sends no other command:
// other calls wait their turn. When the context of a wait ends first, the
// Client sends "!cancel NAME", which ends the wait at once, and reads its
// reply; a grant that crossed the cancellation is released at once. The
// connection, and the client's other locks, are kept.
//
// Replies to d, sd, who and q span several lines and carry no terminator on
// the line protocol (TCP, unix). The client therefore sends each of them
// followed by a fence, "i NAME" on a name no one locks, and reads lines up to
// the fence's reply. The fence adds 1 to the server's command_i counter. Over
// a websocket every command gets exactly one message, so no fence is sent.
package client
