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
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
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
)

// Node hosts shards, each its own raft group, all on one node-to-node port.
type Node struct {
	cfg     Config
	logger  *slog.Logger
	mux     *Mux
	nshards int
	// shards holds the shards hosted here, by id. With a single node that is every
	// shard; multi-node placement will host a subset and guard the map.
	shards map[int]*shard

	policyMu sync.Mutex // serialises SetPolicy

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

// Open opens (creating or bootstrapping as configured) every shard in
// cfg.DataDir. With Bootstrap and a Policy it waits until every shard has a
// leader and a policy.
func Open(cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Bootstrap && cfg.Policy != "" {
		if _, err := engine.LoadPolicy(cfg.Policy, cfg.PolicyFormat); err != nil {
			return nil, fmt.Errorf("cluster: bootstrap policy: %w", err)
		}
	}
	nshards, err := loadOrCreateMeta(&cfg)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("node", cfg.NodeID)

	ln, advertise := cfg.RaftListener, cfg.RaftAddr
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.RaftAddr); err != nil {
			return nil, fmt.Errorf("cluster: listen on raft address: %w", err)
		}
		if _, port, _ := net.SplitHostPort(cfg.RaftAddr); port == "0" {
			advertise = ln.Addr().String()
		}
	}
	mux, err := NewMux(ln, advertise, cfg.RaftDial, logger)
	if err != nil {
		ln.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, logger: logger, mux: mux, nshards: nshards, shards: map[int]*shard{}, closed: make(chan struct{})}
	defer func() {
		if err != nil {
			n.shutdown(false)
		}
	}()

	var mu sync.Mutex
	err = n.eachShardID(nshards, func(id int) error {
		s, err := n.openShard(id)
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
	logger.Info("node opened", "shards", nshards, "raft_addr", mux.Addr().String(), "data_dir", cfg.DataDir)
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

func (n *Node) sorted() []*shard {
	out := make([]*shard, 0, len(n.shards))
	for id := range n.nshards {
		if s := n.shards[id]; s != nil {
			out = append(out, s)
		}
	}
	return out
}

func (n *Node) openShard(id int) (*shard, error) {
	dir := filepath.Join(n.cfg.DataDir, "shards", strconv.Itoa(id))
	f := fsm.New(fsm.Options{Shard: id, DedupeWindow: n.cfg.DedupeWindow, Logger: n.logger})
	layer, err := n.mux.Layer(uint16(id))
	if err != nil {
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: transportMaxPool, Timeout: transportTimeout,
		Logger: raftgroup.NewHCLogger(n.logger.With("shard", id), "raft-net"),
	})
	rc := raftgroup.Config{RaftLogLevel: slog.LevelWarn}
	if n.cfg.Raft != nil {
		n.cfg.Raft(id, &rc)
	}
	rc.ID, rc.GroupID, rc.Dir, rc.Transport, rc.Bind, rc.FSM = n.cfg.NodeID, fmt.Sprintf("shard-%d", id), dir, trans, "", f
	rc.Logger = n.logger
	rc.Bootstrap, rc.Peers = n.cfg.Bootstrap, nil
	g, err := raftgroup.Open(rc)
	if err != nil {
		_ = trans.Close()
		_ = layer.Close()
		return nil, fmt.Errorf("cluster: shard %d: %w", id, err)
	}
	return &shard{id: id, fsm: f, group: g, slots: make(chan struct{}, n.cfg.MaxInflight)}, nil
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

// ShardFor returns the shard that owns customer.
func (n *Node) ShardFor(customer string) int { return shardFor(customer, n.nshards) }

// Shards returns the number of shards.
func (n *Node) Shards() int { return n.nshards }

// RaftAddr returns the advertised node-to-node address.
func (n *Node) RaftAddr() string { return n.mux.Addr().String() }

func (n *Node) shardOf(customer string) (*shard, error) {
	id := n.ShardFor(customer)
	s := n.shards[id]
	if s == nil {
		return nil, fmt.Errorf("shard %d: %w (not hosted on node %s)", id, ErrNotLeader, n.cfg.NodeID)
	}
	return s, nil
}

func invalidCommand(field, format string, args ...any) *fsm.Error {
	return &fsm.Error{Code: fsm.CodeInvalidArgument, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Apply proposes cmd on the shard that owns customer and returns the FSM's
// Result; a refusal by the engine is Result.Err, not an error. customer is the
// routing key: the command's customer id, or a key shared by customers that must
// be decided together (refs, shared caps), which then must be used for every
// command and read of those customers (docs/cluster-contract.md). It stamps
// cmd.Timestamp with this (the leader's) clock and, when cmd.RequestID is empty,
// sets a generated one on cmd, so a caller can retry with it.
//
// Apply retries by itself while its context allows: proposals that never reached
// the log (no leader yet, a leader change) are simply sent again, and proposals
// whose outcome is unknown (leadership lost) are sent again with the same request
// id, which the shard's idempotency table answers with the first outcome if it
// did commit. Errors: ErrUnavailable (wrapping ErrUnknownOutcome when a proposal
// may still commit, and the context's error), ErrNotLeader, and *fsm.Error for
// commands refused before proposing (malformed, oversized, misrouted).
func (n *Node) Apply(ctx context.Context, customer string, cmd *fsm.Command) (*fsm.Result, error) {
	switch {
	case cmd == nil:
		return nil, invalidCommand("", "nil command")
	case cmd.SetPolicy != nil:
		return nil, invalidCommand("", "policy updates go through SetPolicy, to every shard")
	case customer == "":
		return nil, invalidCommand("customer", "a routing key (the customer id) is required")
	case len(cmd.RequestID) > fsm.MaxRequestIDLength:
		return nil, invalidCommand("request_id", "longer than %d bytes", fsm.MaxRequestIDLength)
	}
	s, err := n.shardOf(customer)
	if err != nil {
		return nil, err
	}
	if cmd.RequestID == "" {
		cmd.RequestID = n.newRequestID()
	}
	return n.applyShard(ctx, s, cmd)
}

func (n *Node) newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "auto-" + n.cfg.NodeID + "-" + hex.EncodeToString(b[:])
}

func (n *Node) applyShard(ctx context.Context, s *shard, cmd *fsm.Command) (*fsm.Result, error) {
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
	if unknown {
		return fmt.Errorf("shard %d: %w: %w: %w", s.id, ErrUnavailable, ErrUnknownOutcome, cause)
	}
	return fmt.Errorf("shard %d: %w: %w", s.id, ErrUnavailable, cause)
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
// another node is known to lead (forwarding comes with multi-node placement).
func (n *Node) waitLeader(ctx context.Context, s *shard) error {
	for {
		if s.group.IsLeader() {
			return nil
		}
		if addr, id := s.group.Leader(); id != "" && string(id) != n.cfg.NodeID {
			return fmt.Errorf("shard %d: %w: %s at %s", s.id, ErrNotLeader, id, addr)
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

// Read runs fn on the engine of customer's shard under the FSM's read lock, with
// now = max(this node's clock, the shard's clock) in ms. By default the read is
// linearizable (see linearize); stale reads the local state as it is. fn must not
// modify the engine or keep references into it. fsm.ErrNoPolicy before the
// shard's first policy.
func (n *Node) Read(ctx context.Context, customer string, stale bool, fn func(e *engine.Engine, now int64) error) error {
	s, err := n.shardOf(customer)
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

// LookupRequest answers what the shard that owns customer remembers of a request
// id (linearizable, like Read): its original Result (with Duplicate set) and
// true, or false when the id is unknown. An id is unknown when it never applied
// or was forgotten (older than the dedupe window, or pushed out by the table's
// bounds), so false proves "never applied" only within those limits.
func (n *Node) LookupRequest(ctx context.Context, customer, requestID string) (*fsm.Result, bool, error) {
	s, err := n.shardOf(customer)
	if err != nil {
		return nil, false, err
	}
	if err := n.linearize(ctx, s); err != nil {
		return nil, false, err
	}
	r, ok := s.fsm.LookupRequest(requestID)
	return r, ok, nil
}

// SetPolicy validates a policy document and replicates it, with one new version
// number, through every shard's log. It returns the version. When some shards
// fail, the others already run the new version: call SetPolicy again (it uses a
// newer version, so every shard converges).
func (n *Node) SetPolicy(ctx context.Context, text, format string) (uint64, error) {
	if _, err := engine.LoadPolicy(text, format); err != nil {
		return 0, invalidCommand("text", "%v", err)
	}
	if len(text) >= fsm.MaxCommandSize-1024 {
		return 0, invalidCommand("text", "policy document of %d bytes is too large", len(text))
	}
	n.policyMu.Lock()
	defer n.policyMu.Unlock()
	// Every shard's FSM must have caught up before its version is trusted.
	if err := n.eachShard(func(s *shard) error { return n.linearize(ctx, s) }); err != nil {
		return 0, err
	}
	_, _, cur := n.Policy()
	version := cur + 1
	err := n.eachShard(func(s *shard) error {
		res, err := n.applyShard(ctx, s, &fsm.Command{
			RequestID: "set-policy-v" + strconv.FormatUint(version, 10),
			SetPolicy: &fsm.PolicyOp{Text: text, Format: format, Version: version},
		})
		if err == nil && res.Err != nil {
			err = res.Err
		}
		if err != nil {
			return fmt.Errorf("shard %d: %w", s.id, err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cluster: policy version %d not applied everywhere: %w", version, err)
	}
	n.logger.Info("policy updated", "version", version)
	return version, nil
}

// Policy returns the newest policy any hosted shard runs (version 0: none yet).
func (n *Node) Policy() (text, format string, version uint64) {
	for _, s := range n.sorted() {
		if t, f, v := s.fsm.Policy(); v > version {
			text, format, version = t, f, v
		}
	}
	return text, format, version
}

// Status describes the node and its shards.
type Status struct {
	NodeID, Region, RaftAddr string
	Shards                   []ShardStatus
}

// ShardStatus describes one hosted shard.
type ShardStatus struct {
	Shard         int
	Leader        string // leader's node id; "" when none is known
	LeaderAddr    string
	State         string // Leader, Follower, Candidate, Shutdown
	AppliedIndex  uint64
	LastIndex     uint64
	PolicyVersion uint64
	Customers     int
	// StateHash (hex SHA-256, see fsm.FSM.StateHash) describes the state at
	// HashIndex. A busy shard's hash is recomputed at most every 10 s, since
	// hashing encodes the whole shard; use ShardStateHash for a fresh one.
	StateHash string
	HashIndex uint64
}

// Status reports every hosted shard. It does not contact other nodes.
func (n *Node) Status(ctx context.Context) (Status, error) {
	st := Status{NodeID: n.cfg.NodeID, Region: n.cfg.Region, RaftAddr: n.RaftAddr()}
	for _, s := range n.sorted() {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		addr, id := s.group.Leader()
		info := s.fsm.Info()
		h, hi := s.cachedHash()
		st.Shards = append(st.Shards, ShardStatus{
			Shard: s.id, Leader: string(id), LeaderAddr: string(addr), State: s.group.Raft.State().String(),
			AppliedIndex: s.group.Raft.AppliedIndex(), LastIndex: s.group.Raft.LastIndex(),
			PolicyVersion: info.PolicyVersion, Customers: info.Customers,
			StateHash: hex.EncodeToString(h[:]), HashIndex: hi,
		})
	}
	return st, nil
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

// ShardStateHash returns a shard's current state hash and the applied index it
// describes (computed now; cached by the FSM while nothing changes).
func (n *Node) ShardStateHash(id int) ([32]byte, uint64, error) {
	s := n.shards[id]
	if s == nil {
		return [32]byte{}, 0, fmt.Errorf("shard %d: not hosted on node %s", id, n.cfg.NodeID)
	}
	h, idx := s.fsm.StateHashAt()
	return h, idx, nil
}

// Close shuts the node down gracefully: each shard this node leads hands
// leadership to another voter where there is one, then every group closes and
// the port is released. Idempotent.
func (n *Node) Close() error {
	n.shutdown(true)
	return n.closeErr
}

func (n *Node) shutdown(graceful bool) {
	n.closeOnce.Do(func() {
		close(n.closed)
		var mu sync.Mutex
		var errs []error
		_ = n.eachShard(func(s *shard) error {
			if graceful && s.group.IsLeader() && otherVoters(s.group) {
				if err := s.group.TransferLeadership("", ""); err != nil {
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
		if err := n.mux.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft port: %w", err))
		}
		n.closeErr = errors.Join(errs...)
		n.logger.Info("node closed", "err", n.closeErr)
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
