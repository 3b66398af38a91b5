package cluster

import "errors"

// Errors callers branch on. Every error Node returns wraps at most these (plus
// context errors and *fsm.Error for commands refused before they were proposed).
var (
	// ErrUnavailable: the shard has no leader or no quorum within the caller's
	// deadline, or this node is closing. The command was not applied unless the
	// error also wraps ErrUnknownOutcome.
	ErrUnavailable = errors.New("shard unavailable: no leader or no quorum within the deadline")
	// ErrUnknownOutcome: a proposal may still commit (leadership was lost or the
	// deadline passed after it reached the log). Retry only with the same
	// RequestID: the shard's idempotency table then answers the first outcome.
	ErrUnknownOutcome = errors.New("outcome unknown: the command may have been applied; retry with the same request id")
	// ErrNotLeader: another node leads the shard (the error names it). Forwarding
	// to it comes with multi-node placement.
	ErrNotLeader = errors.New("another node leads this shard")
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("node closed")
)
