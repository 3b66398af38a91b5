package raftgroup

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/raft"
)

// Outcome and cause sentinels. Every error returned by a Group operation
// that reached raft is an *Error; test it with errors.Is against these
// sentinels (and, if needed, against the underlying raft error, which is
// wrapped too).
var (
	// ErrNotApplied: the command never reached the raft log (or was
	// superseded before taking effect). It will not be applied, so it is
	// safe to retry, on this node or elsewhere.
	ErrNotApplied = errors.New("not applied")

	// ErrUnknownOutcome: the command may or may not commit. It was handed to
	// raft (possibly written to the leader's log and replicated) but the
	// caller stopped waiting, or leadership was lost before the commit was
	// observed. Retrying blindly can apply it twice; commands must be
	// idempotent or the caller must check the outcome first.
	ErrUnknownOutcome = errors.New("unknown outcome")

	// ErrNotLeader: this node is not (or no longer) the group's leader.
	// The *Error carries the currently known leader, if any.
	ErrNotLeader = errors.New("not the leader")

	// ErrClosed: the Group was closed/killed, or raft shut down (e.g. after
	// this node was removed from the group).
	ErrClosed = errors.New("group closed")
)

// Error is returned by Group operations. Kinds lists the sentinels that
// apply (e.g. ErrNotApplied and ErrNotLeader); Err is the underlying cause,
// typically a raft error or a context error.
type Error struct {
	Op       string // "apply", "barrier", "verify-leader", "add-voter", ...
	GroupID  string
	NodeID   string
	Kinds    []error
	Err      error
	Leader   raft.ServerAddress // known leader when ErrNotLeader, may be empty
	LeaderID raft.ServerID
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "raftgroup %s (group %s, node %s)", e.Op, e.GroupID, e.NodeID)
	for _, k := range e.Kinds {
		b.WriteString(": ")
		b.WriteString(k.Error())
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.isNotLeader() {
		if e.Leader != "" {
			fmt.Fprintf(&b, " (leader %s at %s)", e.LeaderID, e.Leader)
		} else {
			b.WriteString(" (no known leader)")
		}
	}
	return b.String()
}

// Unwrap exposes the sentinels and the cause to errors.Is / errors.As.
func (e *Error) Unwrap() []error {
	out := make([]error, 0, len(e.Kinds)+1)
	out = append(out, e.Kinds...)
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

func (e *Error) isNotLeader() bool {
	for _, k := range e.Kinds {
		if k == ErrNotLeader {
			return true
		}
	}
	return false
}

// classify maps a raft error onto outcome sentinels. dispatched reports
// whether the operation was given a log index, i.e. written to the leader's
// log; it disambiguates ErrRaftShutdown.
//
// From raft v1.8.0's sources:
//   - ErrNotLeader: answered by follower/candidate loops draining the apply
//     channel, or by a leader that is stepping down, before dispatch.
//   - ErrEnqueueTimeout: the command never entered the apply channel.
//   - ErrLeadershipTransferInProgress: rejected before dispatch.
//   - ErrLeadershipLost: answered to every in-flight (dispatched) entry when
//     the leader steps down; the entry may survive into the next term.
//   - ErrAbortedByRestore: in-flight entries cancelled by a user snapshot
//     restore; their effects are not present after the restore.
//   - ErrRaftShutdown: either before dispatch (Apply on a shut down raft,
//     index 0) or for committed entries that could not reach the FSM
//     (index set) - those are committed and would apply on restart.
//
// Anything unrecognised is conservatively ErrUnknownOutcome.
func classify(err error, dispatched bool) []error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return []error{ErrNotApplied, ErrNotLeader}
	case errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrLeadershipTransferInProgress),
		errors.Is(err, raft.ErrAbortedByRestore):
		return []error{ErrNotApplied}
	case errors.Is(err, raft.ErrLeadershipLost):
		return []error{ErrUnknownOutcome, ErrNotLeader}
	case errors.Is(err, raft.ErrRaftShutdown):
		if dispatched {
			return []error{ErrUnknownOutcome, ErrClosed}
		}
		return []error{ErrNotApplied, ErrClosed}
	default:
		return []error{ErrUnknownOutcome}
	}
}

// classifyRead maps errors of operations that change nothing (VerifyLeader,
// Barrier), where only "who is leader" and "is it shut down" matter.
func classifyRead(err error) []error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return []error{ErrNotLeader}
	case errors.Is(err, raft.ErrRaftShutdown):
		return []error{ErrClosed}
	default:
		return nil
	}
}

// newError builds an *Error for this group, filling in the leader hint when
// the error says this node is not the leader.
func (g *Group) newError(op string, cause error, kinds ...error) *Error {
	e := &Error{Op: op, GroupID: g.cfg.GroupID, NodeID: g.cfg.ID, Kinds: kinds, Err: cause}
	if e.isNotLeader() {
		e.Leader, e.LeaderID = g.Raft.LeaderWithID()
	}
	return e
}
