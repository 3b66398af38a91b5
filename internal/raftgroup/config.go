package raftgroup

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// Defaults for the tuning knobs. A zero value in Config selects the default.
const (
	// DefaultHeartbeatTimeout: a follower that hears nothing from the leader
	// for this long (randomised up to 2x) starts a (pre-)election. Raft also
	// derives the leader's heartbeat period from it (HeartbeatTimeout/10, i.e.
	// 100ms). Heartbeats are per group per follower, and a node hosts tens of
	// groups: at 500ms (a 50ms period) a 3-node cluster with 64 shards spent
	// 0.63 of this 2-core machine's cores doing nothing but heartbeats and idle
	// AppendEntries; 1s (raft's own default, with the CommitTimeout below) cut
	// that to 0.44 and the p50 at 1500 allow/s from 182ms to 63ms (same run,
	// capstan-bench). A dead leader is detected in ~1-2s.
	DefaultHeartbeatTimeout = 1000 * time.Millisecond

	// DefaultElectionTimeout: how long a candidate waits for votes before
	// starting a new election. Raft requires it >= HeartbeatTimeout.
	DefaultElectionTimeout = 1000 * time.Millisecond

	// DefaultLeaderLeaseTimeout: a leader that cannot reach a quorum for this
	// long steps down. Must be <= HeartbeatTimeout; half of it means a
	// partitioned leader stops accepting writes before the other side can
	// have elected a new one.
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond

	// DefaultCommitTimeout: when no new commands arrive, the leader still
	// sends an AppendEntries after this long (randomised up to 2x) so
	// followers learn the latest commit index. It does not affect write
	// latency (new entries trigger replication immediately); it bounds how
	// stale an idle follower's FSM is (stale reads, follower state hashes).
	// Every idle group pays one RPC per follower per CommitTimeout, so with
	// many groups per process a small value is expensive: 200ms keeps idle
	// followers within ~0.5s of the leader.
	DefaultCommitTimeout = 200 * time.Millisecond

	// DefaultMaxAppendEntries bounds three things at once: the number of
	// entries per AppendEntries RPC, the size of the leader's group commit
	// (one bolt fsync for up to this many commands) and, with BatchApplyCh,
	// the buffer of raft's apply channel (so this many concurrent Apply calls
	// enqueue without waiting for the leader loop). The limiter's commands
	// are small (~100B-1KB), so 512 entries stay well under a megabyte per
	// RPC while amortising fsync and RPC round trips over large batches.
	// The cost of a large value is wasted bandwidth when a follower rejects
	// a batch because of a log mismatch (rare, after leader changes). Raft
	// caps it at 1024.
	DefaultMaxAppendEntries = 512

	// DefaultSnapshotInterval: how often raft checks whether
	// SnapshotThreshold has been exceeded (randomised up to 2x so replicas
	// do not snapshot in lockstep). Raft's default is 120s; 30s keeps the log
	// tail, and therefore restart replay time, short for a write-heavy
	// limiter.
	DefaultSnapshotInterval = 30 * time.Second

	// DefaultSnapshotThreshold: minimum number of new log entries since the
	// last snapshot before a snapshot is taken. Avoids snapshotting groups
	// that barely changed.
	DefaultSnapshotThreshold = 8192

	// DefaultTrailingLogs: entries kept after a snapshot, so a follower that
	// is briefly behind (restart, GC pause, short partition) catches up from
	// the log instead of receiving a full snapshot.
	DefaultTrailingLogs = 10240

	// DefaultRetainSnapshots: snapshots kept on disk. At least two, so a
	// corrupt or half-written newest snapshot still leaves a good one.
	DefaultRetainSnapshots = 2

	// DefaultLogCacheSize: recent log entries kept in memory in front of
	// bolt so replication to slightly lagging followers and the FSM apply
	// path do not read back from disk. Two batches of DefaultMaxAppendEntries.
	DefaultLogCacheSize = 2 * DefaultMaxAppendEntries

	// DefaultMembershipTimeout bounds AddVoter, AddNonvoter, RemoveServer and
	// TransferLeadership (which take no context).
	DefaultMembershipTimeout = 10 * time.Second

	// DefaultTransportTimeout is the I/O deadline of a transport created from
	// Config.Bind (scaled up by raft for InstallSnapshot).
	DefaultTransportTimeout = 10 * time.Second

	// DefaultTransportMaxPool is the number of pooled outbound connections
	// per peer of a transport created from Config.Bind.
	DefaultTransportMaxPool = 3

	// boltLockTimeout: how long Open waits for the flock on raft.db. A data
	// directory can only be used by one Group at a time; without a timeout a
	// second Open would hang forever.
	boltLockTimeout = 1 * time.Second
)

// Config describes one raft group on one node. Zero-valued tuning knobs
// take the defaults documented on the Default* constants.
type Config struct {
	// ID is this node's raft server ID. Required. It must be stable across
	// restarts and unique within the group.
	ID string
	// GroupID identifies the shard/group. Required. It only labels logs.
	GroupID string
	// Dir is this group's data directory; it holds raft.db (raft-boltdb/v2
	// log and stable store) and snapshots/. Required; created if missing.
	// Only one Group may use a Dir at a time.
	Dir string

	// Transport carries this group's raft RPCs. If set, the Group takes
	// ownership: raft closes it on Shutdown, so a transport shared by several
	// groups must be wrapped per group (e.g. a per-group view of a
	// multiplexed listener) and made safe to close. If nil, Open creates a
	// raft.NetworkTransport listening on Bind.
	Transport raft.Transport
	// Bind is the TCP listen address (e.g. "127.0.0.1:0") for a dedicated
	// NetworkTransport. Used only when Transport is nil; exactly one of the
	// two must be set. Must be an advertisable (not unspecified) address.
	Bind string

	// FSM is the group's state machine. Required. It is handed to raft
	// unchanged, so implementing raft.BatchingFSM enables batched apply.
	FSM raft.FSM

	// Logger receives this group's logs (raft's included), tagged with
	// "group" and "node". Defaults to slog.Default().
	Logger *slog.Logger
	// RaftLogLevel optionally filters raft's own logs (which are chatty at
	// Info) independently of Logger's handler level. Raft's levels are kept
	// as they are (raft Info -> slog Info); nil means no extra filter.
	RaftLogLevel slog.Leveler

	// Bootstrap creates a new cluster with Peers if, and only if, this Dir
	// has no raft state yet. Safe to leave set on every start.
	Bootstrap bool
	// Peers is the initial configuration for Bootstrap and must contain this
	// node (ID) with this node's transport address. Empty with Bootstrap
	// means a single-voter cluster of this node. Must be empty without
	// Bootstrap.
	Peers []raft.Server

	// HeartbeatTimeout, see DefaultHeartbeatTimeout.
	HeartbeatTimeout time.Duration
	// ElectionTimeout, see DefaultElectionTimeout. Must be >= HeartbeatTimeout.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout, see DefaultLeaderLeaseTimeout. Must be <= HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout, see DefaultCommitTimeout.
	CommitTimeout time.Duration
	// MaxAppendEntries, see DefaultMaxAppendEntries. 1..1024.
	MaxAppendEntries int
	// DisableBatchApplyCh turns off raft's BatchApplyCh, which is on by
	// default: raft's apply channel is buffered to MaxAppendEntries so
	// concurrent Apply calls queue up and are committed as one batch (one
	// fsync, one RPC per follower) instead of handing over one by one. The
	// price is that raft's enqueue timeout no longer bounds the wait; Group
	// compensates by bounding every wait with the caller's context.
	DisableBatchApplyCh bool
	// SnapshotInterval, see DefaultSnapshotInterval.
	SnapshotInterval time.Duration
	// SnapshotThreshold, see DefaultSnapshotThreshold.
	SnapshotThreshold uint64
	// TrailingLogs, see DefaultTrailingLogs. (Zero selects the default; raft
	// would otherwise drop the whole log on every snapshot.)
	TrailingLogs uint64
	// RetainSnapshots, see DefaultRetainSnapshots. Must be >= 2.
	RetainSnapshots int
	// LogCacheSize, see DefaultLogCacheSize.
	LogCacheSize int
	// MembershipTimeout, see DefaultMembershipTimeout.
	MembershipTimeout time.Duration
	// TransportTimeout and TransportMaxPool configure the transport created
	// from Bind; see DefaultTransportTimeout and DefaultTransportMaxPool.
	TransportTimeout time.Duration
	TransportMaxPool int
}

// ErrInvalidConfig is wrapped by every configuration error returned by Open.
var ErrInvalidConfig = errors.New("raftgroup: invalid config")

// withDefaults returns a copy of c with zero tuning knobs set to defaults.
func (c Config) withDefaults() Config {
	setDur := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	setDur(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	setDur(&c.ElectionTimeout, DefaultElectionTimeout)
	setDur(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	setDur(&c.CommitTimeout, DefaultCommitTimeout)
	setDur(&c.SnapshotInterval, DefaultSnapshotInterval)
	setDur(&c.MembershipTimeout, DefaultMembershipTimeout)
	setDur(&c.TransportTimeout, DefaultTransportTimeout)
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = DefaultMaxAppendEntries
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.RetainSnapshots == 0 {
		c.RetainSnapshots = DefaultRetainSnapshots
	}
	if c.LogCacheSize == 0 {
		c.LogCacheSize = DefaultLogCacheSize
	}
	if c.TransportMaxPool == 0 {
		c.TransportMaxPool = DefaultTransportMaxPool
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate checks a defaulted Config. It is the only place Config is
// validated; every error wraps ErrInvalidConfig and names the field.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if c.ID == "" {
		bad("ID is required")
	}
	if c.GroupID == "" {
		bad("GroupID is required")
	}
	if c.Dir == "" {
		bad("Dir is required")
	}
	if c.FSM == nil {
		bad("FSM is required")
	}
	switch {
	case c.Transport == nil && c.Bind == "":
		bad("one of Transport or Bind is required")
	case c.Transport != nil && c.Bind != "":
		bad("Transport and Bind are mutually exclusive")
	}
	if !c.Bootstrap && len(c.Peers) > 0 {
		bad("Peers is only used with Bootstrap")
	}
	seen := make(map[raft.ServerID]bool, len(c.Peers))
	self := false
	for i, p := range c.Peers {
		switch {
		case p.ID == "":
			bad("Peers[%d]: empty ID", i)
		case p.Address == "":
			bad("Peers[%d] (%s): empty Address", i, p.ID)
		case seen[p.ID]:
			bad("Peers[%d]: duplicate ID %q", i, p.ID)
		}
		seen[p.ID] = true
		if string(p.ID) == c.ID {
			self = true
			if p.Suffrage != raft.Voter {
				bad("Peers[%d]: this node (%s) must bootstrap as a Voter", i, p.ID)
			}
		}
	}
	if len(c.Peers) > 0 && !self && c.ID != "" {
		bad("Peers must include this node (ID %q)", c.ID)
	}

	positive := func(name string, d time.Duration) {
		if d < 0 {
			bad("%s must not be negative (got %s)", name, d)
		}
	}
	positive("HeartbeatTimeout", c.HeartbeatTimeout)
	positive("ElectionTimeout", c.ElectionTimeout)
	positive("LeaderLeaseTimeout", c.LeaderLeaseTimeout)
	positive("CommitTimeout", c.CommitTimeout)
	positive("SnapshotInterval", c.SnapshotInterval)
	positive("MembershipTimeout", c.MembershipTimeout)
	positive("TransportTimeout", c.TransportTimeout)
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("ElectionTimeout (%s) must be >= HeartbeatTimeout (%s)", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("LeaderLeaseTimeout (%s) must be <= HeartbeatTimeout (%s)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024 {
		bad("MaxAppendEntries must be in 1..1024 (got %d)", c.MaxAppendEntries)
	}
	if c.RetainSnapshots < 2 {
		bad("RetainSnapshots must be >= 2 (got %d)", c.RetainSnapshots)
	}
	if c.LogCacheSize < 1 {
		bad("LogCacheSize must be positive (got %d)", c.LogCacheSize)
	}
	if c.TransportMaxPool < 1 {
		bad("TransportMaxPool must be positive (got %d)", c.TransportMaxPool)
	}
	if len(errs) == 0 {
		// Raft's own checks (minimum timeouts etc.) as a backstop, so no
		// invalid config reaches NewRaft.
		if err := raft.ValidateConfig(c.raftConfig(nil)); err != nil {
			bad("%v", err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

// raftConfig translates a defaulted Config into raft's.
func (c *Config) raftConfig(logger *slog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.ID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.MaxAppendEntries = c.MaxAppendEntries
	rc.BatchApplyCh = !c.DisableBatchApplyCh
	rc.SnapshotInterval = c.SnapshotInterval
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.TrailingLogs = c.TrailingLogs
	// Avoid duplicate metrics (legacy per-peer names as well as labels).
	rc.NoLegacyTelemetry = true
	// A server removed from the group stops its raft instead of lingering
	// as a leaderless single node that could elect itself.
	rc.ShutdownOnRemove = true
	if logger != nil {
		hl := NewHCLogger(logger, "raft")
		if c.RaftLogLevel != nil {
			hl.SetLevel(hclogLevel(c.RaftLogLevel.Level()))
		}
		rc.Logger = hl
	}
	return rc
}
