package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/hashicorp/raft"
)

// SnapshotResult is what Snapshot did.
type SnapshotResult struct {
	// Index and Term are the last log entry the snapshot includes.
	Index, Term uint64
	// FirstIndex and LastIndex bound the log this node keeps after the
	// compaction (both 0 when it keeps none: everything is in the snapshot).
	FirstIndex, LastIndex uint64
}

// ErrNothingNewToSnapshot: the FSM has applied nothing yet, so raft has
// nothing to snapshot.
var ErrNothingNewToSnapshot = errors.New("nothing new to snapshot")

// Snapshot has raft snapshot the FSM now (raft.Raft.Snapshot, as it does by
// itself every SnapshotThreshold entries) and truncate the log up to the
// snapshot, keeping at least the newest keep entries: where Config's
// TrailingLogs keeps that many for raft's own snapshots, keep 0 drops every
// entry the snapshot covers. The group's TrailingLogs applies again to the
// snapshots raft takes later. Nothing is written to the log: a snapshot is
// local to this node, and a follower whose next entry was dropped catches up
// from a snapshot (InstallSnapshot) instead. Snapshots of one Group run one
// at a time; ctx bounds the wait (a snapshot raft started still completes).
//
// Errors: ErrNothingNewToSnapshot when the FSM has applied nothing yet;
// ErrClosed; otherwise raft's refusal, e.g. while a configuration change has
// not been applied yet.
func (g *Group) Snapshot(ctx context.Context, keep uint64) (SnapshotResult, error) {
	const op = "snapshot"
	if g.isClosed() {
		return SnapshotResult{}, g.newError(op, nil, ErrClosed)
	}
	select {
	case g.snapSem <- struct{}{}:
	case <-ctx.Done():
		return SnapshotResult{}, g.newError(op, ctx.Err())
	case <-g.closed:
		return SnapshotResult{}, g.newError(op, nil, ErrClosed)
	}
	type answer struct {
		res SnapshotResult
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		defer func() { <-g.snapSem }()
		res, err := g.snapshot(keep)
		ch <- answer{res, err}
	}()
	select {
	case a := <-ch:
		if a.err != nil {
			return a.res, g.snapshotError(a.err)
		}
		return a.res, nil
	case <-ctx.Done():
		return SnapshotResult{}, g.newError(op, ctx.Err())
	case <-g.closed:
		return SnapshotResult{}, g.newError(op, nil, ErrClosed)
	}
}

// snapshot runs one snapshot with TrailingLogs set to keep for its duration
// (raft reads TrailingLogs when it compacts, after persisting the snapshot).
// The caller holds snapSem, so no other Snapshot changes TrailingLogs
// meanwhile; a snapshot raft takes by itself in that window keeps keep
// entries too, which is only more compaction.
func (g *Group) snapshot(keep uint64) (SnapshotResult, error) {
	prev := g.Raft.ReloadableConfig()
	if prev.TrailingLogs != keep {
		rc := prev
		rc.TrailingLogs = keep
		if err := g.Raft.ReloadConfig(rc); err != nil {
			return SnapshotResult{}, fmt.Errorf("set TrailingLogs %d for the snapshot: %w", keep, err)
		}
		defer func() {
			cur := g.Raft.ReloadableConfig()
			cur.TrailingLogs = prev.TrailingLogs
			if err := g.Raft.ReloadConfig(cur); err != nil {
				g.logger.Error("restoring TrailingLogs after a snapshot", "trailing_logs", prev.TrailingLogs, "err", err)
			}
		}()
	}
	f := g.Raft.Snapshot()
	if err := f.Error(); err != nil {
		return SnapshotResult{}, err
	}
	var res SnapshotResult
	if meta, rc, err := f.Open(); err == nil {
		_ = rc.Close()
		res.Index, res.Term = meta.Index, meta.Term
	} else {
		// Reaped already (two newer snapshots since): the newest one raft knows.
		st := g.Raft.Stats()
		res.Index, _ = strconv.ParseUint(st["last_snapshot_index"], 10, 64)
		res.Term, _ = strconv.ParseUint(st["last_snapshot_term"], 10, 64)
	}
	res.FirstIndex, res.LastIndex = g.LogRange()
	g.logger.Info("snapshot taken on request", "index", res.Index, "keep", keep,
		"log_first", res.FirstIndex, "log_last", res.LastIndex)
	return res, nil
}

func (g *Group) snapshotError(err error) error {
	const op = "snapshot"
	var ge *Error
	switch {
	case errors.As(err, &ge):
		return err
	case errors.Is(err, raft.ErrNothingNewToSnapshot):
		return g.newError(op, nil, ErrNothingNewToSnapshot)
	}
	return g.newError(op, err, classifyRead(err)...)
}

// LogRange is the first and last index of the raft log this node keeps (0, 0
// when it keeps none).
func (g *Group) LogRange() (first, last uint64) {
	first, _ = g.logs.FirstIndex()
	last, _ = g.logs.LastIndex()
	return first, last
}
