package client

import (
	"strconv"
	"time"
)

// These are glockd's extension verbs (gw, sgw, t, ping). The original
// glockd does not know them and sends no reply, so against it a call waits
// until its context ends.

// millis converts a wait to the protocol's milliseconds: a negative wait
// means no limit (-1), and a positive one is rounded up, so that it never
// becomes 0, which means "do not wait".
func millis(wait time.Duration) string {
	if wait < 0 {
		return "-1"
	}
	return strconv.FormatInt(int64((wait+time.Millisecond-1)/time.Millisecond), 10)
}

func getWaitCmd(wait time.Duration, name string) command[bool] {
	cmd := flagCommand("gw "+millis(wait), name, getSuccess, getTimeout)
	cmd.wait, cmd.name = true, Normalize(name)
	return cmd
}

func sharedGetWaitCmd(wait time.Duration, maxHolders int, name string) command[int] {
	cmd := countCommand("sgw "+millis(wait)+" "+strconv.Itoa(maxHolders), name, sharedGetSuccess, sharedGetTimeout)
	cmd.wait, cmd.name = true, Normalize(name)
	return asInt(cmd)
}

func tokenCmd(name string) command[uint64] {
	return countCommand("t", name, tokenText, notLocked)
}

func pingCmd() command[struct{}] {
	return exactCommand("ping", "1 pong", false)
}
