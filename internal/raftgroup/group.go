package raftgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// File layout inside Config.Dir.
const (
	boltFile = "raft.db"
	// raft.FileSnapshotStore appends "snapshots" to the directory it is given.
	snapshotsDir = "snapshots"
)

// Group is one raft group on this node. Raft is exposed for anything this
// wrapper does not cover (Stats, Snapshot, GetConfiguration, ...); prefer
// the wrapper's methods where they exist, since they bound waits with a
// context and map errors onto this package's sentinels.
type Group struct {
	Raft *raft.Raft

	cfg    Config
	logger *slog.Logger
	trans  raft.Transport
	bolt   *raftboltdb.BoltStore // log + stable store; the only file handle we own
	logs   raft.LogStore         // bolt behind a LogCache
	snaps  *raft.FileSnapshotStore

	snapSem   chan struct{} // held by the Snapshot in progress
	closed    chan struct{} // closed when Close or Kill starts
	closeOnce sync.Once
	closeErr  error
}

// NewTCPTransport creates a raft.NetworkTransport on its own TCP listener,
// the same way Open does for Config.Bind (zero timeout/maxPool select the
// defaults). It is useful when the address must be known before Open, e.g.
// to list Peers for Bootstrap; pass it as Config.Transport.
func NewTCPTransport(bind string, timeout time.Duration, maxPool int, logger *slog.Logger) (*raft.NetworkTransport, error) {
	if timeout <= 0 {
		timeout = DefaultTransportTimeout
	}
	if maxPool <= 0 {
		maxPool = DefaultTransportMaxPool
	}
	if logger == nil {
		logger = slog.Default()
	}
	t, err := raft.NewTCPTransportWithConfig(bind, nil, &raft.NetworkTransportConfig{
		MaxPool: maxPool,
		Timeout: timeout,
		Logger:  NewHCLogger(logger, "raft-net"),
	})
	if err != nil {
		return nil, fmt.Errorf("raftgroup: listen on %q: %w", bind, err)
	}
	return t, nil
}

// Open opens (creating if needed) the group's stores in cfg.Dir, sets up
// its transport, bootstraps it if asked and no state exists, and starts
// raft. NewRaft restores the newest usable snapshot into the FSM before
// Open returns; log entries after it are applied once a leader reports
// them committed.
//
// On error everything Open created is released; a caller-provided
// Transport is left open (ownership passes to the Group only on success).
func Open(cfg Config) (_ *Group, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("group", cfg.GroupID, "node", cfg.ID)
	g := &Group{cfg: cfg, logger: logger, closed: make(chan struct{}), snapSem: make(chan struct{}, 1)}

	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("raftgroup: create data dir: %w", err)
	}

	boltOpts := *bbolt.DefaultOptions
	boltOpts.Timeout = boltLockTimeout
	g.bolt, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(cfg.Dir, boltFile),
		BoltOptions: &boltOpts,
		// NoSync stays false: every raft log append and term/vote update is
		// fsynced before raft acknowledges it. Raft's safety depends on it.
	})
	if err != nil {
		return nil, fmt.Errorf("raftgroup: open %s (is another Group using this Dir?): %w",
			filepath.Join(cfg.Dir, boltFile), err)
	}
	cleanup = append(cleanup, func() { _ = g.bolt.Close() })

	g.logs, err = raft.NewLogCache(cfg.LogCacheSize, g.bolt)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: log cache: %w", err)
	}

	g.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.RetainSnapshots,
		NewHCLogger(logger, "raft-snapshots"))
	if err != nil {
		return nil, fmt.Errorf("raftgroup: snapshot store in %s: %w",
			filepath.Join(cfg.Dir, snapshotsDir), err)
	}

	if cfg.Transport != nil {
		g.trans = cfg.Transport
	} else {
		nt, err := NewTCPTransport(cfg.Bind, cfg.TransportTimeout, cfg.TransportMaxPool, logger)
		if err != nil {
			return nil, err
		}
		g.trans = nt
		cleanup = append(cleanup, func() { closeTransport(nt) })
	}

	rc := cfg.raftConfig(logger)

	if cfg.Bootstrap {
		if err := g.bootstrap(rc); err != nil {
			return nil, err
		}
	}

	g.Raft, err = raft.NewRaft(rc, cfg.FSM, g.logs, g.bolt, g.snaps, g.trans)
	if err != nil {
		return nil, fmt.Errorf("raftgroup: start raft: %w", err)
	}
	logger.Info("raft group opened", "addr", g.trans.LocalAddr(), "dir", cfg.Dir,
		"last_index", g.Raft.LastIndex(), "applied_index", g.Raft.AppliedIndex())
	return g, nil
}

// bootstrap writes the initial configuration if this Dir has no state.
func (g *Group) bootstrap(rc *raft.Config) error {
	has, err := raft.HasExistingState(g.logs, g.bolt, g.snaps)
	if err != nil {
		return fmt.Errorf("raftgroup: check existing state: %w", err)
	}
	if has {
		g.logger.Debug("existing raft state found, not bootstrapping")
		return nil
	}
	servers := g.cfg.Peers
	if len(servers) == 0 {
		servers = []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(g.cfg.ID), Address: g.trans.LocalAddr()}}
	}
	for _, s := range servers {
		if string(s.ID) == g.cfg.ID && s.Address != g.trans.LocalAddr() {
			return fmt.Errorf("%w: Peers lists this node (%s) at %s but its transport address is %s",
				ErrInvalidConfig, s.ID, s.Address, g.trans.LocalAddr())
		}
	}
	err = raft.BootstrapCluster(rc, g.logs, g.bolt, g.snaps, g.trans, raft.Configuration{Servers: servers})
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("raftgroup: bootstrap: %w", err)
	}
	g.logger.Info("bootstrapped new raft group", "servers", len(servers))
	return nil
}

// ID returns this node's server ID.
func (g *Group) ID() string { return g.cfg.ID }

// GroupID returns the group's ID.
func (g *Group) GroupID() string { return g.cfg.GroupID }

// Addr returns this node's transport address for the group.
func (g *Group) Addr() raft.ServerAddress { return g.trans.LocalAddr() }

// IsLeader reports whether this node currently believes it is the leader.
// Use VerifyLeader before serving reads that must be linearizable.
func (g *Group) IsLeader() bool { return g.Raft.State() == raft.Leader }

// Leader returns the currently known leader; empty if none is known. It can
// be stale: a follower keeps reporting a dead leader until its heartbeat
// timeout expires.
func (g *Group) Leader() (raft.ServerAddress, raft.ServerID) { return g.Raft.LeaderWithID() }

// WaitLeader polls until a leader is known (see Leader) or ctx ends.
func (g *Group) WaitLeader(ctx context.Context) (raft.ServerAddress, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if addr, _ := g.Raft.LeaderWithID(); addr != "" {
			return addr, nil
		}
		select {
		case <-ctx.Done():
			return "", g.newError("wait-leader", ctx.Err(), ErrNotLeader)
		case <-g.closed:
			return "", g.newError("wait-leader", nil, ErrClosed)
		case <-tick.C:
		}
	}
}

// result of a raft future, see await.
type result struct {
	f   raft.Future
	err error
}

// await starts a raft operation and waits for its future, giving up when
// ctx ends or the Group closes. A goroutine is needed because raft futures
// cannot be selected on, and because with BatchApplyCh a command buffered in
// raft's apply channel when raft shuts down is never answered: waiting on it
// directly could block forever. abandoned is non-nil if we stopped waiting;
// the goroutine then finishes when raft answers (or, in that shutdown case,
// never - one parked goroutine per abandoned command).
func (g *Group) await(ctx context.Context, start func() raft.Future) (res result, abandoned error) {
	ch := make(chan result, 1)
	go func() {
		f := start()
		ch <- result{f: f, err: f.Error()}
	}()
	select {
	case res = <-ch:
		return res, nil
	case <-ctx.Done():
		return result{}, ctx.Err()
	case <-g.closed:
		return result{}, ErrClosed
	}
}

// enqueueTimeout converts ctx's deadline into raft's enqueue timeout (0 =
// none). ok is false if the deadline has already passed.
func enqueueTimeout(ctx context.Context) (d time.Duration, ok bool) {
	dl, has := ctx.Deadline()
	if !has {
		return 0, true
	}
	d = time.Until(dl)
	return d, d > 0
}

func (g *Group) isClosed() bool {
	select {
	case <-g.closed:
		return true
	default:
		return false
	}
}

// Apply submits data as a command and waits, bounded by ctx, until the FSM
// has applied it on this node; it returns the FSM's response (from Apply or
// the matching ApplyBatch element) unchanged, even if that is an error
// value. Must be called on the leader.
//
// Errors are *Error values:
//   - ErrNotApplied (with ErrNotLeader on a follower, ErrClosed after
//     Close): the command never reached the log; retrying, here or on the
//     leader, is safe.
//   - ErrUnknownOutcome: the command may still commit - leadership was lost
//     while it was in flight, or ctx ended / the group closed while waiting.
func (g *Group) Apply(ctx context.Context, data []byte) (any, error) {
	const op = "apply"
	if err := ctx.Err(); err != nil {
		return nil, g.newError(op, err, ErrNotApplied)
	}
	if g.isClosed() {
		return nil, g.newError(op, nil, ErrNotApplied, ErrClosed)
	}
	timeout, ok := enqueueTimeout(ctx)
	if !ok {
		return nil, g.newError(op, context.DeadlineExceeded, ErrNotApplied)
	}
	res, abandoned := g.await(ctx, func() raft.Future { return g.Raft.Apply(data, timeout) })
	if abandoned != nil {
		kinds := []error{ErrUnknownOutcome}
		if errors.Is(abandoned, ErrClosed) {
			kinds = append(kinds, ErrClosed)
			abandoned = nil
		}
		return nil, g.newError(op, abandoned, kinds...)
	}
	af := res.f.(raft.ApplyFuture)
	if res.err != nil {
		// Index() is read after Error() returned, i.e. after raft's answer
		// was received, so it does not race with dispatch.
		return nil, g.newError(op, res.err, classify(res.err, af.Index() != 0)...)
	}
	return af.Response(), nil
}

// Barrier waits, bounded by ctx, until every command committed before it
// has been applied to this node's FSM. Leader only. Use it after winning an
// election before serving reads from the FSM.
func (g *Group) Barrier(ctx context.Context) error {
	return g.readOp(ctx, "barrier", func(timeout time.Duration) raft.Future { return g.Raft.Barrier(timeout) })
}

// VerifyLeader confirms, by contacting a quorum, that this node is still the
// leader, so a read of its FSM that follows is linearizable (provided the
// FSM has caught up - see Barrier). Fails with ErrNotLeader otherwise.
func (g *Group) VerifyLeader(ctx context.Context) error {
	return g.readOp(ctx, "verify-leader", func(time.Duration) raft.Future { return g.Raft.VerifyLeader() })
}

func (g *Group) readOp(ctx context.Context, op string, start func(time.Duration) raft.Future) error {
	if err := ctx.Err(); err != nil {
		return g.newError(op, err)
	}
	if g.isClosed() {
		return g.newError(op, nil, ErrClosed)
	}
	timeout, ok := enqueueTimeout(ctx)
	if !ok {
		return g.newError(op, context.DeadlineExceeded)
	}
	res, abandoned := g.await(ctx, func() raft.Future { return start(timeout) })
	switch {
	case errors.Is(abandoned, ErrClosed):
		return g.newError(op, nil, ErrClosed)
	case abandoned != nil:
		return g.newError(op, abandoned)
	case res.err != nil:
		return g.newError(op, res.err, classifyRead(res.err)...)
	}
	return nil
}

// AddVoter adds (or updates the address of) a voting member. Leader only.
// The new server catches up from the log or, if the log has been
// compacted past what it has, from a snapshot (InstallSnapshot).
func (g *Group) AddVoter(id, addr string) error {
	return g.membership("add-voter", func(t time.Duration) raft.Future {
		return g.Raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// AddNonvoter adds a member that replicates but does not vote; promote it
// with AddVoter once caught up to avoid reducing availability meanwhile.
func (g *Group) AddNonvoter(id, addr string) error {
	return g.membership("add-nonvoter", func(t time.Duration) raft.Future {
		return g.Raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// RemoveServer removes a member. Leader only. A removed node shuts its raft
// down (ShutdownOnRemove); its Group should then be closed.
func (g *Group) RemoveServer(id string) error {
	return g.membership("remove-server", func(t time.Duration) raft.Future {
		return g.Raft.RemoveServer(raft.ServerID(id), 0, t)
	})
}

// TransferLeadership hands leadership to the server id at addr, or, if id
// is empty, to the most up-to-date follower. Leader only. Useful before a
// planned Close of the leader, which does not transfer by itself.
func (g *Group) TransferLeadership(id, addr string) error {
	return g.membership("transfer-leadership", func(time.Duration) raft.Future {
		if id == "" {
			return g.Raft.LeadershipTransfer()
		}
		return g.Raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	})
}

// membership runs a configuration change bounded by MembershipTimeout and
// maps its errors like Apply's.
func (g *Group) membership(op string, start func(time.Duration) raft.Future) error {
	if g.isClosed() {
		return g.newError(op, nil, ErrNotApplied, ErrClosed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.MembershipTimeout)
	defer cancel()
	res, abandoned := g.await(ctx, func() raft.Future { return start(g.cfg.MembershipTimeout) })
	if abandoned != nil {
		if errors.Is(abandoned, ErrClosed) {
			return g.newError(op, nil, ErrUnknownOutcome, ErrClosed)
		}
		return g.newError(op, abandoned, ErrUnknownOutcome)
	}
	if res.err != nil {
		dispatched := false
		if idx, ok := res.f.(raft.IndexFuture); ok {
			dispatched = idx.Index() != 0
		}
		return g.newError(op, res.err, classify(res.err, dispatched)...)
	}
	return nil
}

// Close shuts the group down gracefully: raft stops (waiting for its
// goroutines, including an FSM apply or snapshot in progress), raft closes
// the transport, then the bolt file is closed. It does not transfer
// leadership (call TransferLeadership first if that matters) and does not
// close the FSM, which belongs to the caller. Idempotent; Close after Kill
// is a no-op.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		close(g.closed)
		var errs []error
		if err := g.Raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		closeTransport(g.trans) // raft closed it already; also drop pooled conns
		if err := g.bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", boltFile, err))
		}
		g.closeErr = errors.Join(errs...)
		g.logger.Info("raft group closed", "err", g.closeErr)
	})
	return g.closeErr
}

// Kill simulates a crash of this node (kill -9) as closely as possible
// in-process, for tests:
//
//  1. The transport is cut first: the listener and pooled connections are
//     closed, so peers immediately see connection failures and no further
//     RPC is answered or sent successfully - like a process that vanished.
//  2. raft.Shutdown is then called. This is not a graceful operation in
//     hashicorp/raft: no snapshot is taken, leadership is not transferred,
//     in-flight commands are not waited for (their callers get
//     ErrUnknownOutcome / ErrClosed). It only waits for raft's goroutines to
//     return. That wait is the one unavoidable difference from kill -9: Go
//     cannot stop goroutines mid-instruction, and letting them keep running
//     would have them write to closed files. Whatever disk write raced with
//     Kill either completed or did not, exactly as with a real crash.
//  3. The bolt file handle is closed without any extra work. bolt fsyncs
//     every transaction at commit, so the file is byte-for-byte what a
//     crashed process would leave; there is no write-back buffer to flush
//     or drop. Nothing else holds a file handle (the snapshot store opens
//     files per snapshot).
//
// The FSM's in-memory state outlives Kill in this process; to simulate a
// restart, Open the same Dir with a fresh FSM. Idempotent; Kill after Close
// is a no-op.
func (g *Group) Kill() error {
	g.closeOnce.Do(func() {
		close(g.closed)
		closeTransport(g.trans)
		_ = g.Raft.Shutdown().Error()
		g.closeErr = g.bolt.Close()
		g.logger.Warn("raft group killed (crash simulation)")
	})
	return g.closeErr
}

// closeTransport closes t if it can be closed and, for a NetworkTransport,
// also drops pooled outbound and open inbound connections (Close alone only
// stops the listener).
func closeTransport(t raft.Transport) {
	if c, ok := t.(raft.WithClose); ok {
		_ = c.Close()
	}
	if nt, ok := t.(interface{ CloseStreams() }); ok {
		nt.CloseStreams()
	}
}
