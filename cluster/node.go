package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	"github.com/capstanhq/capstan/internal/faultnet"
	"github.com/capstanhq/capstan/internal/raftgroup"
)

const (
	// statusHashMaxAge: Status recomputes a busy shard's state hash at most this
	// often, because hashing encodes the whole shard under its read lock.
	statusHashMaxAge = 10 * time.Second
	// retryBackoff spaces retries of proposals that did not reach the log.
	retryBackoff = 10 * time.Millisecond
	// openParallelism bounds shards opened (and bootstrapped) at once.
	openParallelism = 8
	// transport settings for each group's NetworkTransport on the mux.
	transportMaxPool = 3
	transportTimeout = 10 * time.Second
	// leaderWait bounds how long a routed call waits on one replica for a
	// shard's election before it looks elsewhere (gossip, other replicas).
	leaderWait = time.Second
)

// Node hosts shards, each its own raft group, all on one node-to-node port. A
// standalone node hosts every shard; a cluster node (Config.GossipAddr) hosts
// the shards the cluster map places on it and forwards the rest.
type Node struct {
	cfg     Config
	logger  *slog.Logger
	mux     *Mux
	local   faultnet.Endpoint
	cluster bool

	mu      sync.RWMutex
	nshards int            // 0 until a cluster node learns the map
	shards  map[int]*shard // hosted shards by id
	meta    nodeMeta       // node.json as last written

	// Cluster mode.
	metaG       *raftgroup.Group
	metaF       *metaFSM
	cachedMap   atomic.Pointer[clusterMap] // DataDir/cluster.json
	members     *membership
	fwd         *forwarder
	hints       sync.Map // shard id -> leader node id learned from NOT_LEADER answers
	addrs       atomic.Pointer[map[string]faultnet.Endpoint]
	gossipAddr  string
	fresh       bool // node.json had no cluster id at open: may bootstrap formation groups
	wake        chan struct{}
	reconcileMu sync.Mutex
	retired     atomic.Bool
	ledMu       sync.Mutex
	led         map[int]bool // shards this node led at the last look (leadershipLoop)
	catchingUp  sync.Map     // shard id -> true while a policy catch-up runs
	holds       sync.Map     // shard id -> leadershipHold after an explicit transfer
	wg          sync.WaitGroup

	policyMu sync.Mutex // serialises SetPolicy

	metrics *nodeMetrics // see Collector

	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type shard struct {
	id    int
	fsm   *fsm.FSM
	group *raftgroup.Group
	slots chan struct{} // in-flight proposal semaphore
	// barrierTerm is the term in which this node, as leader, completed a Barrier:
	// its FSM then holds every entry committed by earlier leaders.
	barrierTerm atomic.Uint64

	hashMu    sync.Mutex
	hashAt    time.Time
	hash      [32]byte
	hashIndex uint64
}

// Open opens (creating or bootstrapping as configured) the node in
// cfg.DataDir. A standalone node opens every shard; with Bootstrap and a Policy
// it waits until every shard has a leader and a policy. A cluster node starts
// gossip and its meta group, opens the shards the cluster map (or its cached
// copy) places on it and returns at once: the cluster forms, or the node
// joins, in the background (see Ready).
func Open(cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Policy != "" && (cfg.Bootstrap || cfg.clustered()) {
		if _, err := engine.LoadPolicy(cfg.Policy, cfg.PolicyFormat); err != nil {
			return nil, fmt.Errorf("cluster: bootstrap policy: %w", err)
		}
	}
	meta, err := loadOrCreateMeta(&cfg)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("node", cfg.NodeID)
	n := &Node{cfg: cfg, logger: logger, nshards: meta.Shards, shards: map[int]*shard{}, meta: meta,
		cluster: cfg.clustered(), local: faultnet.Endpoint{Node: cfg.NodeID, Region: cfg.Region},
		wake: make(chan struct{}, 1), closed: make(chan struct{}), metrics: newNodeMetrics()}

	ln, advertise, dial := cfg.RaftListener, cfg.RaftAddr, cfg.RaftDial
	if cfg.AdvertiseRaft != "" {
		advertise = cfg.AdvertiseRaft
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.RaftAddr); err != nil {
			return nil, fmt.Errorf("cluster: listen on raft address: %w", err)
		}
		if _, port, _ := net.SplitHostPort(advertise); port == "0" {
			advertise = ln.Addr().String()
		}
		if n.cluster {
			// Always wrapped: it strips the preamble of peers that inject faults.
			ln = faultnet.NewListener(ln, cfg.Faults, n.local, nil)
		}
	}
	if n.cluster && dial == nil {
		d := &faultnet.Dialer{Rules: cfg.Faults, Local: n.local, Resolve: n.resolve}
		dial = d.DialContext
	}
	mux, err := NewMux(ln, advertise, dial, logger)
	if err != nil {
		ln.Close()
		return nil, err
	}
	n.mux = mux
	defer func() {
		if err != nil {
			n.shutdown(false)
		}
	}()
	if n.cluster {
		if err := n.openCluster(); err != nil {
			return nil, err
		}
		return n, nil
	}

	var mu sync.Mutex
	err = n.eachShardID(n.nshards, func(id int) error {
		s, err := n.openShard(id, cfg.Bootstrap, nil)
		if err != nil {
			return err
		}
		mu.Lock()
		n.shards[id] = s
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	logger.Info("node opened", "shards", n.nshards, "raft_addr", mux.Addr().String(), "data_dir", cfg.DataDir)
	if cfg.Bootstrap && cfg.Policy != "" {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.OpenTimeout)
		defer cancel()
		if err := n.bootstrapPolicy(ctx); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// eachShardID runs fn for ids 0..count-1, openParallelism at a time, and returns
// the first error.
func (n *Node) eachShardID(count int, fn func(id int) error) error {
	sem := make(chan struct{}, openParallelism)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for id := range count {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(id); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// eachShard runs fn on every hosted shard concurrently (bounded) and joins errors.
func (n *Node) eachShard(fn func(s *shard) error) error {
	sem := make(chan struct{}, openParallelism*2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, s := range n.sorted() {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(s); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sorted returns the hosted shards by id.
func (n *Node) sorted() []*shard {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*shard, 0, len(n.shards))
	for _, s := range n.shards {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *shard) int { return a.id - b.id })
	return out
}

// hosted returns shard id when this node hosts it.
func (n *Node) hosted(id int) *shard {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.shards[id]
}

// openShard opens shard id's group. With bootstrap it writes the initial
// configuration when the directory has none: peers (nil: this node alone).
func (n *Node) openShard(id int, bootstrap bool, peers []raft.Server) (*shard, error) {
	dir := filepath.Join(n.cfg.DataDir, "shards", strconv.Itoa(id))
	f := fsm.New(fsm.Options{Shard: id, DedupeWindow: n.cfg.DedupeWindow, EventLogSize: n.cfg.EventLogSize, Logger: n.logger})
	layer, err := n.mux.Layer(uint16(id))
	if err != nil {
		return nil, err
	}
	trans := newTransport(layer, n.logger.With("shard", id))
	rc := raftgroup.Config{RaftLogLevel: slog.LevelWarn}
	if n.cfg.Raft != nil {
		n.cfg.Raft(id, &rc)
	}
	rc.ID, rc.GroupID, rc.Dir, rc.Transport, rc.Bind, rc.FSM = n.cfg.NodeID, fmt.Sprintf("shard-%d", id), dir, trans, "", f
	rc.Logger = n.logger
	rc.Bootstrap, rc.Peers = bootstrap, peers
	g, err := raftgroup.Open(rc)
	if err != nil {
		_ = trans.Close()
		_ = layer.Close()
		return nil, fmt.Errorf("cluster: shard %d: %w", id, err)
	}
	return &shard{id: id, fsm: f, group: g, slots: make(chan struct{}, n.cfg.MaxInflight)}, nil
}

// newTransport is a group's raft transport on its mux layer, with pipelined
// replication off (MaxRPCsInFlight 1): in hashicorp/raft v1.8.0 the pipeline's
// sender can block forever handing a request to its response decoder after the
// decoder stopped (a follower rejected an append, or answered a newer term):
// the replication goroutine leaks and the group's Shutdown never returns. This
// package's cluster tests hit it under load. Without the pipeline a follower
// gets one batch (up to MaxAppendEntries entries) per round trip.
func newTransport(layer raft.StreamLayer, logger *slog.Logger) *raft.NetworkTransport {
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: transportMaxPool, Timeout: transportTimeout, MaxRPCsInFlight: 1,
		Logger: raftgroup.NewHCLogger(logger, "raft-net"),
	})
}

// bootstrapPolicy installs cfg.Policy as version 1 on every shard that has none,
// once the shard's FSM has caught up with its log.
func (n *Node) bootstrapPolicy(ctx context.Context) error {
	return n.eachShard(func(s *shard) error {
		if err := n.linearize(ctx, s); err != nil {
			return fmt.Errorf("cluster: bootstrap policy on shard %d: %w", s.id, err)
		}
		if _, _, v := s.fsm.Policy(); v > 0 {
			return nil
		}
		res, err := n.applyShard(ctx, s, &fsm.Command{RequestID: "bootstrap-policy-v1",
			SetPolicy: &fsm.PolicyOp{Text: n.cfg.Policy, Format: n.cfg.PolicyFormat, Version: 1}})
		if err == nil && res.Err != nil {
			err = res.Err
		}
		if err != nil {
			return fmt.Errorf("cluster: bootstrap policy on shard %d: %w", s.id, err)
		}
		return nil
	})
}

// ShardFor returns the shard that owns a routing key (-1 while a cluster node
// has not learned the shard count yet).
func (n *Node) ShardFor(key string) int {
	if c := n.Shards(); c > 0 {
		return shardFor(key, c)
	}
	return -1
}

// Shards returns the number of shards (0 while a cluster node has not learned
// it yet).
func (n *Node) Shards() int {
	n.mu.RLock()
	c := n.nshards
	n.mu.RUnlock()
	if c == 0 && n.cluster {
		if m := n.view(); m != nil {
			return m.Shards // learned, not yet recorded by reconcile
		}
	}
	return c
}

// NodeID returns this node's id.
func (n *Node) NodeID() string { return n.cfg.NodeID }

// RaftAddr returns the advertised node-to-node address.
func (n *Node) RaftAddr() string { return n.mux.Addr().String() }

// shardID maps a routing key to its shard.
func (n *Node) shardID(key string) (int, error) {
	id := n.ShardFor(key)
	if id < 0 {
		return 0, fmt.Errorf("%w: this node has not joined a cluster yet", ErrUnavailable)
	}
	return id, nil
}

// shardOf returns the hosted shard for key; ErrNotLeader when it is elsewhere.
func (n *Node) shardOf(key string) (*shard, error) {
	id, err := n.shardID(key)
	if err != nil {
		return nil, err
	}
	s := n.hosted(id)
	if s == nil {
		return nil, fmt.Errorf("shard %d: %w (not hosted on node %s)", id, ErrNotLeader, n.cfg.NodeID)
	}
	return s, nil
}

func invalidCommand(field, format string, args ...any) *fsm.Error {
	return &fsm.Error{Code: fsm.CodeInvalidArgument, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Apply proposes cmd on the shard that owns key and returns the FSM's Result; a
// refusal by the engine is Result.Err, not an error. key is the routing key:
// the command's customer id, or a key shared by customers that must be decided
// together (refs, shared caps), which then must be used for every command and
// read of those customers (docs/cluster-contract.md). It sets a generated
// request id on cmd when cmd.RequestID is empty, before anything is sent, so
// every retry (here, or on another node after a leader change) carries the
// same id; the shard's leader stamps cmd.Timestamp with its clock.
//
// Apply retries by itself while its context allows: proposals that never reached
// the log (no leader yet, a leader change) are simply sent again, and proposals
// whose outcome is unknown (leadership lost, a forwarded call cut off) are sent
// again with the same request id, which the shard's idempotency table answers
// with the first outcome if it did commit. On a cluster node a shard led
// elsewhere is forwarded to its leader (see route.go). Errors: ErrUnavailable
// (wrapping ErrUnknownOutcome when a proposal may still commit, and the
// context's error), ErrNotLeader (standalone only), and *fsm.Error for commands
// refused before proposing (malformed, oversized, misrouted).
func (n *Node) Apply(ctx context.Context, key string, cmd *fsm.Command) (*fsm.Result, error) {
	switch {
	case cmd == nil:
		return nil, invalidCommand("", "nil command")
	case cmd.SetPolicy != nil:
		return nil, invalidCommand("", "policy updates go through SetPolicy, to every shard")
	case key == "":
		return nil, invalidCommand("customer", "a routing key (the customer id) is required")
	case len(cmd.RequestID) > fsm.MaxRequestIDLength:
		return nil, invalidCommand("request_id", "longer than %d bytes", fsm.MaxRequestIDLength)
	}
	id, err := n.shardID(key)
	if err != nil {
		return nil, err
	}
	if cmd.RequestID == "" {
		cmd.RequestID = n.newRequestID()
	}
	if !n.cluster {
		s := n.hosted(id)
		if s == nil {
			return nil, fmt.Errorf("shard %d: %w (not hosted on node %s)", id, ErrNotLeader, n.cfg.NodeID)
		}
		return n.applyShard(ctx, s, cmd)
	}
	if n.cfg.UnsafeStaleAllow && cmd.Allow != nil {
		if s := n.hosted(id); s != nil && !s.group.IsLeader() {
			return n.unsafeStaleAllow(s, cmd)
		}
	}
	return n.applyRouted(ctx, id, key, cmd)
}

func (n *Node) newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "auto-" + n.cfg.NodeID + "-" + hex.EncodeToString(b[:])
}

// applyShard proposes cmd on s, which this node must lead: it never forwards.
// When another node is (or becomes) the leader it answers ErrNotLeader, also
// wrapping ErrUnavailable and ErrUnknownOutcome when an earlier attempt may
// still commit.
func (n *Node) applyShard(ctx context.Context, s *shard, cmd *fsm.Command) (_ *fsm.Result, err error) {
	start := time.Now()
	defer func() { n.metrics.proposal(start, err) }()
	if cmd.SetPolicy == nil {
		if err := n.ensurePolicy(ctx, s); err != nil {
			return nil, err
		}
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("shard %d: %w: too many proposals in flight: %w", s.id, ErrUnavailable, ctx.Err())
	case <-n.closed:
		return nil, fmt.Errorf("shard %d: %w: %w", s.id, ErrUnavailable, ErrClosed)
	}
	defer func() { <-s.slots }()

	unknown := false
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := n.pause(ctx, retryBackoff); err != nil {
				return nil, n.unavailable(s, err, unknown)
			}
		}
		if err := n.waitLeader(ctx, s); err != nil {
			if errors.Is(err, ErrNotLeader) && !unknown {
				return nil, err
			}
			return nil, n.unavailable(s, err, unknown)
		}
		cmd.Timestamp = time.Now().UnixMilli()
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			return nil, err
		}
		resp, err := s.group.Apply(ctx, data)
		if err == nil {
			res, ok := resp.(*fsm.Result)
			if !ok || res == nil {
				return nil, fmt.Errorf("shard %d: the state machine answered %T", s.id, resp)
			}
			return res, nil
		}
		switch {
		case errors.Is(err, raftgroup.ErrUnknownOutcome):
			unknown = true
		case errors.Is(err, raftgroup.ErrNotApplied):
		default:
			return nil, fmt.Errorf("shard %d: %w", s.id, err)
		}
		if ctx.Err() != nil || errors.Is(err, raftgroup.ErrClosed) || n.isClosed() {
			return nil, n.unavailable(s, err, unknown)
		}
		n.logger.Debug("retrying proposal", "shard", s.id, "request_id", cmd.RequestID, "unknown_outcome", unknown, "err", err)
	}
}

func (n *Node) unavailable(s *shard, cause error, unknown bool) error {
	return unavailableErr(s.id, cause, unknown)
}

func unavailableErr(id int, cause error, unknown bool) error {
	if unknown {
		return fmt.Errorf("shard %d: %w: %w: %w", id, ErrUnavailable, ErrUnknownOutcome, cause)
	}
	return fmt.Errorf("shard %d: %w: %w", id, ErrUnavailable, cause)
}

func (n *Node) isClosed() bool {
	select {
	case <-n.closed:
		return true
	default:
		return false
	}
}

// pause waits d unless ctx ends or the node closes first.
func (n *Node) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.closed:
		return ErrClosed
	}
}

// waitLeader waits until this node leads s. It fails with ErrNotLeader as soon as
// another node is known to lead, and, on a cluster node, when no leader is
// known for leaderWait (so the caller can look elsewhere).
func (n *Node) waitLeader(ctx context.Context, s *shard) error {
	var deadline time.Time
	if n.cluster {
		deadline = time.Now().Add(leaderWait)
	}
	for {
		if s.group.IsLeader() {
			return nil
		}
		if addr, id := s.group.Leader(); id != "" && string(id) != n.cfg.NodeID {
			return fmt.Errorf("shard %d: %w: %s at %s", s.id, ErrNotLeader, id, addr)
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fmt.Errorf("shard %d: %w: no leader known here after %s", s.id, ErrNotLeader, leaderWait)
		}
		if err := n.pause(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// linearize makes a following read of s's FSM linearizable: this node leads, its
// FSM has applied everything earlier leaders committed (one Barrier per term),
// and a quorum still confirms its leadership (VerifyLeader).
func (n *Node) linearize(ctx context.Context, s *shard) error {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := n.pause(ctx, retryBackoff); err != nil {
				return n.unavailable(s, err, false)
			}
		}
		if err := n.waitLeader(ctx, s); err != nil {
			if errors.Is(err, ErrNotLeader) {
				return err
			}
			return n.unavailable(s, err, false)
		}
		term := s.group.Raft.CurrentTerm()
		if s.barrierTerm.Load() != term {
			if err := s.group.Barrier(ctx); err != nil {
				if errors.Is(err, raftgroup.ErrNotLeader) && ctx.Err() == nil && !n.isClosed() {
					continue
				}
				return n.unavailable(s, err, false)
			}
			s.barrierTerm.Store(term)
		}
		if err := s.group.VerifyLeader(ctx); err != nil {
			if errors.Is(err, raftgroup.ErrNotLeader) && ctx.Err() == nil && !n.isClosed() {
				continue
			}
			return n.unavailable(s, err, false)
		}
		return nil
	}
}

// Read runs fn on the engine of key's shard under the FSM's read lock, with
// now = max(this node's clock, the shard's clock) in ms. By default the read is
// linearizable (see linearize) and needs this node to lead the shard; stale
// reads the local replica as it is. It never forwards (fn cannot travel): use
// Query for reads any node can answer. fn must not modify the engine or keep
// references into it. fsm.ErrNoPolicy before the shard's first policy;
// ErrNotLeader when the shard is led (or, for stale reads, hosted) elsewhere.
func (n *Node) Read(ctx context.Context, key string, stale bool, fn func(e *engine.Engine, now int64) error) error {
	s, err := n.shardOf(key)
	if err != nil {
		return err
	}
	if !stale {
		if err := n.linearize(ctx, s); err != nil {
			return err
		}
	}
	return s.fsm.Read(func(e *engine.Engine, clock int64) error {
		return fn(e, max(time.Now().UnixMilli(), clock))
	})
}

// unsafeStaleAllow answers an Allow from this follower's replica without raft
// (Config.UnsafeStaleAllow): nothing is recorded, so caps are not enforced
// across nodes. It exists to prove the linearizability checker catches it.
func (n *Node) unsafeStaleAllow(s *shard, cmd *fsm.Command) (*fsm.Result, error) {
	res := &fsm.Result{}
	info := s.fsm.Info()
	err := s.fsm.Read(func(e *engine.Engine, clock int64) error {
		now := max(time.Now().UnixMilli(), clock)
		d, err := e.Check(now, *cmd.Allow)
		if err != nil {
			return err
		}
		res.Decision, res.Timestamp = &d, now
		return nil
	})
	if err != nil {
		var ie *engine.InputError
		if errors.As(err, &ie) {
			return &fsm.Result{Err: invalidCommand(ie.Field, "%s", ie.Reason)}, nil
		}
		return nil, err
	}
	res.PolicyVersion, res.Index = info.PolicyVersion, info.AppliedIndex
	return res, nil
}

// ShardStateHash returns a shard's current state hash and the applied index it
// describes (computed now; cached by the FSM while nothing changes).
func (n *Node) ShardStateHash(id int) ([32]byte, uint64, error) {
	s := n.hosted(id)
	if s == nil {
		return [32]byte{}, 0, fmt.Errorf("shard %d: not hosted on node %s", id, n.cfg.NodeID)
	}
	h, idx := s.fsm.StateHashAt()
	return h, idx, nil
}

func (s *shard) cachedHash() ([32]byte, uint64) {
	s.hashMu.Lock()
	defer s.hashMu.Unlock()
	if s.hashAt.IsZero() || time.Since(s.hashAt) >= statusHashMaxAge || s.fsm.Info().AppliedIndex == s.hashIndex {
		s.hash, s.hashIndex = s.fsm.StateHashAt()
		s.hashAt = time.Now()
	}
	return s.hash, s.hashIndex
}

// Drain prepares a graceful shutdown while the node still serves: a cluster
// node tells gossip it is leaving (so no balancer hands it leadership) and
// every shard it leads, and the meta group, hands leadership to another voter
// (a cluster node prefers one in the shard's home region). Calls keep being
// answered, by forwarding. Close drains whatever it still leads.
func (n *Node) Drain(ctx context.Context) {
	if n.cluster && n.members != nil {
		n.members.update(func(g *gossipMeta) { g.Leaving = true })
	}
	_ = n.eachShard(func(s *shard) error {
		if ctx.Err() == nil && s.group.IsLeader() && otherVoters(s.group) {
			to, addr := n.transferTarget(s)
			if err := s.group.TransferLeadership(to, addr); err != nil {
				n.logger.Warn("leadership transfer before shutdown failed", "shard", s.id, "err", err)
			}
		}
		return nil
	})
	if n.metaG != nil && ctx.Err() == nil && n.metaG.IsLeader() && otherVoters(n.metaG) {
		_ = n.metaG.TransferLeadership("", "")
	}
}

// Close shuts the node down gracefully: each shard this node leads hands
// leadership to another voter where there is one (a cluster node prefers one in
// the shard's home region), a cluster node leaves gossip, then every group
// closes and the port is released. Idempotent.
func (n *Node) Close() error {
	n.shutdown(true)
	return n.closeErr
}

func (n *Node) shutdown(graceful bool) {
	n.closeOnce.Do(func() {
		if n.cluster && graceful && n.members != nil {
			n.members.update(func(g *gossipMeta) { g.Leaving = true })
		}
		close(n.closed)
		var mu sync.Mutex
		var errs []error
		_ = n.eachShard(func(s *shard) error {
			if graceful && s.group.IsLeader() && otherVoters(s.group) {
				to, addr := n.transferTarget(s)
				if err := s.group.TransferLeadership(to, addr); err != nil {
					n.logger.Warn("leadership transfer before close failed", "shard", s.id, "err", err)
				}
			}
			if err := s.group.Close(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("shard %d: %w", s.id, err))
				mu.Unlock()
			}
			return nil
		})
		if n.metaG != nil {
			if graceful && n.metaG.IsLeader() && otherVoters(n.metaG) {
				_ = n.metaG.TransferLeadership("", "")
			}
			if err := n.metaG.Close(); err != nil {
				errs = append(errs, fmt.Errorf("meta group: %w", err))
			}
		}
		if n.members != nil {
			if graceful {
				n.members.leave(time.Second)
			}
			n.members.shutdown()
		}
		n.wg.Wait()
		if n.fwd != nil {
			n.fwd.close()
		}
		if n.mux != nil {
			if err := n.mux.Close(); err != nil {
				errs = append(errs, fmt.Errorf("raft port: %w", err))
			}
		}
		n.closeErr = errors.Join(errs...)
		n.logger.Info("node closed", "err", n.closeErr)
	})
}

// kill stops the node like a crash (tests): every group is killed (no
// leadership transfer, no snapshot), gossip stops without leaving, the port
// closes.
func (n *Node) kill() {
	n.closeOnce.Do(func() {
		close(n.closed)
		_ = n.eachShard(func(s *shard) error { return s.group.Kill() })
		if n.metaG != nil {
			_ = n.metaG.Kill()
		}
		if n.members != nil {
			n.members.shutdown()
		}
		n.wg.Wait()
		if n.fwd != nil {
			n.fwd.close()
		}
		_ = n.mux.Close()
		n.logger.Warn("node killed (crash simulation)")
	})
}

func otherVoters(g *raftgroup.Group) bool {
	f := g.Raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != g.ID() {
			return true
		}
	}
	return false
}

// ensurePolicy brings s, which this node leads, up to the cluster map's
// policy before it decides or reads: a shard whose leadership was just won (or
// just formed) can lag the map until maintenance catches it up, and a call in
// that window would otherwise be refused with "no policy yet" or decided under
// the older policy. The policy goes through the shard's log under the same
// request id maintenance uses, so racing catch-ups apply once. A follower does
// nothing here: the call is routed to the leader, which does this itself.
func (n *Node) ensurePolicy(ctx context.Context, s *shard) error {
	if !n.cluster {
		return nil
	}
	m := n.view()
	if m == nil || m.Policy.Version == 0 || s.fsm.PolicyVersion() >= m.Policy.Version || !s.group.IsLeader() {
		return nil
	}
	p := m.Policy
	res, err := n.applyShard(ctx, s, &fsm.Command{RequestID: policyRequestID(p.Version),
		SetPolicy: &fsm.PolicyOp{Text: p.Text, Format: p.Format, Version: p.Version}})
	switch {
	case err != nil:
		n.logger.Debug("policy catch-up", "shard", s.id, "version", p.Version, "err", err)
		return err
	case res.Err != nil && res.Err.Code != fsm.CodeFailedPrecondition:
		n.logger.Error("policy catch-up refused", "shard", s.id, "version", p.Version, "err", res.Err)
	default:
		n.logger.Debug("policy caught up", "shard", s.id, "version", p.Version)
	}
	return nil
}
