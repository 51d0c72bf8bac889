// Package proto is glockd's command language: the verb table (each verb's
// word, whether q lists its counter from start-up, whether it runs out of
// band, what access it needs), the parser that turns a line into a Command
// without allocating, and the helpers that format replies. The texts of the
// replies are in internal/wire; the dispatcher and the handlers, which own
// the lock tables, stay in the daemon (commands.go).
package proto

// Verb identifies a command. The zero value is an unknown command or a blank
// line, which the protocol answers with silence.
type Verb uint8

const (
	VerbInvalid Verb = iota
	VerbTooLong      // a line over -max-line; not a command a client can type
	VerbG
	VerbR
	VerbI
	VerbSG
	VerbSR
	VerbSI
	VerbMe
	VerbIam
	VerbWho
	VerbD
	VerbSD
	VerbDump
	VerbQ
	VerbGW
	VerbSGW
	VerbT
	VerbPing
	VerbDL
	VerbNowPing    // !ping: answered at once, even while a wait is pending
	VerbNowCancel  // !cancel [NAME]: ends the pending wait at once
	VerbAuth       // auth TOKEN: identifies the connection (with -acl-file)
	VerbKill       // kill CONN: closes a connection (admin)
	VerbKillHolder // kill-holder NAME: closes the holder of a lock (admin)
	VerbPerms      // perms: what the connection's identity may do
	VerbAsyncGW    // !gw MS NAME: a wait whose outcome comes out of band
	VerbAsyncSGW   // !sgw MS MAX NAME: the same for a semaphore
	VerbDW         // dw [NAME]: who waits, in queue order
	NumVerbs
)

// info is a row of the command table.
type info struct {
	word string // the command word, also the suffix of its counter in q
	// original: one of the original glockd's counters, which q lists from
	// start-up; the others appear once used, because a published client
	// counts q's lines.
	original bool
	// outOfBand: run as soon as it is read, even while a wait is pending,
	// instead of after the commands before it. Its reply starts with "!",
	// as only the outcome lines of !gw and !sgw also do, so that a client
	// can tell it apart from the replies it is waiting for in order. Not
	// counted in q.
	outOfBand bool
	access    Access // what an identity needs to run it, with -acl-file
}

// verbs is the command table. LookupVerb, String, q's counters, the access
// check and the daemon's dispatcher (runCommand) follow it: TestVerbTable checks that
// they agree. Adding a verb is a row here, a line in runCommand and its
// handler.
var verbs = [NumVerbs]info{
	VerbInvalid:    {word: "(invalid)"},
	VerbTooLong:    {word: "(too long)"},
	VerbG:          {word: "g", original: true, access: AccessLock},
	VerbR:          {word: "r", original: true, access: AccessLock},
	VerbI:          {word: "i", original: true, access: AccessInspectName},
	VerbSG:         {word: "sg", original: true, access: AccessLock},
	VerbSR:         {word: "sr", original: true, access: AccessLock},
	VerbSI:         {word: "si", original: true, access: AccessInspectName},
	VerbMe:         {word: "me", access: AccessIdentified},
	VerbIam:        {word: "iam", access: AccessIdentified},
	VerbWho:        {word: "who", access: AccessInspect},
	VerbD:          {word: "d", original: true, access: AccessInspect},
	VerbSD:         {word: "sd", original: true, access: AccessInspect},
	VerbDump:       {word: "dump", original: true, access: AccessInspect},
	VerbQ:          {word: "q", original: true, access: AccessInspect},
	VerbGW:         {word: "gw", access: AccessLock},
	VerbSGW:        {word: "sgw", access: AccessLock},
	VerbT:          {word: "t", access: AccessInspectName},
	VerbPing:       {word: "ping", access: AccessAnyone},
	VerbDL:         {word: "dl", access: AccessInspect},
	VerbNowPing:    {word: "!ping", outOfBand: true, access: AccessAnyone},
	VerbNowCancel:  {word: "!cancel", outOfBand: true, access: AccessAnyone},
	VerbAuth:       {word: "auth", access: AccessAnyone},
	VerbKill:       {word: "kill", access: AccessIdentified},
	VerbKillHolder: {word: "kill-holder", access: AccessIdentified},
	VerbPerms:      {word: "perms", access: AccessIdentified},
	// In order like gw (so a pending gw holds them back), but answered
	// only by their outcome line, out of band (asyncwait.go).
	VerbAsyncGW:  {word: "!gw", access: AccessLock},
	VerbAsyncSGW: {word: "!sgw", access: AccessLock},
	VerbDW:       {word: "dw", access: AccessInspect},
}

// Access is what an identity needs to run a verb, with -acl-file (the
// daemon's admin.go checks it, internal/acl matches names).
type Access uint8

const (
	AccessAnyone      Access = iota // also before auth
	AccessIdentified                // any identity (kill checks admin itself)
	AccessLock                      // the lock permission and a pattern matching the name
	AccessInspectName               // inspect, or a lock pattern matching the name
	AccessInspect                   // inspect
)

// String is the command word of a verb, also the suffix of its counter in q.
func (v Verb) String() string { return verbs[v].word }

// OutOfBand reports whether the verb runs as soon as it is read (see info).
func (v Verb) OutOfBand() bool { return verbs[v].outOfBand }

// Async reports whether the verb is an asynchronous wait, !gw or !sgw.
func (v Verb) Async() bool { return v == VerbAsyncGW || v == VerbAsyncSGW }

// Original reports whether q lists the verb's counter from start-up.
func (v Verb) Original() bool { return verbs[v].original }

// Access is what an identity needs to run the verb.
func (v Verb) Access() Access { return verbs[v].access }

// LookupVerb maps a command word to its verb. It is a switch on
// string(word), which compiles to comparisons without allocating; it lists
// the words of the table, in its order (TestVerbTable).
func LookupVerb(word []byte) Verb {
	switch string(word) {
	case "g":
		return VerbG
	case "r":
		return VerbR
	case "i":
		return VerbI
	case "sg":
		return VerbSG
	case "sr":
		return VerbSR
	case "si":
		return VerbSI
	case "me":
		return VerbMe
	case "iam":
		return VerbIam
	case "who":
		return VerbWho
	case "d":
		return VerbD
	case "sd":
		return VerbSD
	case "dump":
		return VerbDump
	case "q":
		return VerbQ
	case "gw":
		return VerbGW
	case "sgw":
		return VerbSGW
	case "t":
		return VerbT
	case "ping":
		return VerbPing
	case "dl":
		return VerbDL
	case "!ping":
		return VerbNowPing
	case "!cancel":
		return VerbNowCancel
	case "auth":
		return VerbAuth
	case "kill":
		return VerbKill
	case "kill-holder":
		return VerbKillHolder
	case "perms":
		return VerbPerms
	case "!gw":
		return VerbAsyncGW
	case "!sgw":
		return VerbAsyncSGW
	case "dw":
		return VerbDW
	}
	return VerbInvalid
}
