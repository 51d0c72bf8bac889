// Package client is a Go client for glockd, the network lock daemon.
//
// A lock belongs to the connection that took it and is released when that
// connection ends, so a [Client] is one connection: open one per lock owner,
// and keep it open while the locks are needed.
//
// Every reply is checked for its exact form: [Client.Get] on "foo" accepts
// only "1 Lock Get Success: foo" or "0 Lock Get Failure: foo". Anything else is
// a [*ReplyError] quoting the bytes received.
//
// The server answers commands in order, so a Client serialises its calls; a
// [Pipeline] sends many commands in one write and reads their replies in
// order.
//
// Replies to d, sd, who and q span several lines and carry no terminator on
// the line protocol (TCP, unix). The client therefore sends each of them
// followed by a fence, "i NAME" on a name no one locks, and reads lines up to
// the fence's reply. The fence adds 1 to the server's command_i counter. Over
// a websocket every command gets exactly one message, so no fence is sent.
package client
