package cluster

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/capstanhq/capstan/internal/faultnet"
	"github.com/capstanhq/capstan/internal/raftgroup"
)

// Defaults.
const (
	DefaultNodeID = "node1"
	DefaultRegion = "local"
	DefaultShards = 64
	// DefaultMaxInflight bounds concurrent proposals per shard on this node; a
	// caller past it waits (bounded by its context) for a slot.
	DefaultMaxInflight = 4096
	// DefaultOpenTimeout bounds how long Open waits for every bootstrapped shard
	// to elect a leader and apply the initial policy.
	DefaultOpenTimeout = 60 * time.Second
	// DefaultReplicas is the number of voters per shard in a cluster.
	DefaultReplicas = 3
	// DefaultMaintainInterval spaces the leader's housekeeping of its shards
	// (policy catch-up, voter addresses, leadership balance).
	DefaultMaintainInterval = 2 * time.Second
	// DefaultTransferHold is how long a node that received a shard's
	// leadership through an operator's TransferLeadership keeps it before its
	// leader balancer may move it again.
	DefaultTransferHold = time.Minute
	// maxNodeIDLength keeps node ids usable as faultnet labels, raft ids and
	// memberlist names (whose node meta is bounded).
	maxNodeIDLength = 64
)

// Config configures a Node.
type Config struct {
	NodeID string // default "node1"; stable across restarts, unique in the cluster
	// DataDir holds everything the node persists (see the package doc for the
	// layout). One directory per node.
	DataDir string
	// RaftAddr is the node-to-node TCP address, e.g. "127.0.0.1:7946": one port
	// for every raft group, multiplexed by a per-connection header. A port of 0
	// picks a free one (tests); the address must name a host peers can dial.
	RaftAddr string
	// AdvertiseRaft is the raft address peers dial (default RaftAddr). A host
	// name is kept as a name in raft configurations (resolved on each dial).
	AdvertiseRaft string
	Region        string // default "local"
	// Shards is fixed when the data directory is bootstrapped; default 64. On a
	// later open 0 means "as bootstrapped" and any other value must match.
	Shards int
	// Bootstrap makes this node the sole voter of every shard when the data
	// directory is new, and installs Policy as version 1 on every shard that has
	// none. Safe to leave set on restarts.
	Bootstrap    bool
	Policy       string
	PolicyFormat string
	Logger       *slog.Logger

	// Optional.

	// RaftListener, when set, is used instead of listening on RaftAddr (e.g. a
	// faultnet-wrapped listener); RaftAddr is then the advertised address (empty:
	// the listener's). RaftDial replaces the plain dialer for node-to-node
	// connections. The Node owns the listener and closes it.
	RaftListener net.Listener
	RaftDial     DialFunc
	// MaxInflight per shard, default DefaultMaxInflight.
	MaxInflight int
	// OpenTimeout, default DefaultOpenTimeout.
	OpenTimeout time.Duration
	// DedupeWindow overrides the idempotency window (fsm.DefaultDedupeWindow).
	// It must be the same on every node.
	DedupeWindow time.Duration
	// EventLogSize overrides the events each shard keeps for streaming
	// consumers (fsm.DefaultEventLogSize; the ring is allocated up front, per
	// hosted shard).
	EventLogSize int
	// Raft, when set, adjusts each shard's raft configuration before it opens
	// (tuning knobs only: identity, directory, transport and FSM are set by the
	// node). The meta group gets it with shard = MetaGroup.
	Raft func(shard int, c *raftgroup.Config)

	// Queries are the reads Query can run, by kind, on whichever node can
	// answer them (every node of a cluster must register the same ones).
	Queries map[string]QueryFunc

	// Cluster mode: set GossipAddr. The node then gossips with its peers
	// (memberlist), learns the cluster map from the meta raft group, hosts the
	// shards placed on it and forwards everything else (see the package doc).
	// Bootstrap must be false.

	// GossipAddr is the memberlist bind address (host:port).
	GossipAddr string
	// AdvertiseGossip is the gossip address peers use (default GossipAddr).
	AdvertiseGossip string
	// Join lists gossip addresses of nodes to join (any one is enough).
	Join []string
	// BootstrapExpect: on the first start, the cluster forms once this many
	// nodes know each other; the node with the lowest id then places every
	// shard. 0: this node only joins an existing cluster.
	BootstrapExpect int
	// Replicas is the number of voters per shard, fixed at formation (default
	// DefaultReplicas, at most the number of nodes).
	Replicas int
	// APIAddr is the address other nodes forward API calls to (this node's
	// public API, which must serve InternalHandler).
	APIAddr string
	// ForwardTLS, when set, makes forwarding speak TLS to peers' API addresses
	// (their API serves TLS); nil uses plain-text HTTP/2.
	ForwardTLS *tls.Config
	// ClusterKey authenticates node-to-node forwarding (the same on every node).
	ClusterKey string
	// Faults, when set, injects the latency and partitions it holds between
	// nodes and regions on the raft port and on forwarding connections
	// (internal/faultnet). The raft listener is wrapped either way, so peers with
	// faults on can talk to this node.
	Faults *faultnet.Rules
	// UnsafeStaleAllow answers Allow from this node's replica without raft when
	// another node leads the shard: a test-only switch that breaks the cap
	// guarantee on purpose, to prove the linearizability checker can fail.
	UnsafeStaleAllow bool
	// MaintainInterval, default DefaultMaintainInterval.
	MaintainInterval time.Duration
	// TransferHold, default DefaultTransferHold: after an operator's
	// TransferLeadership the new leader's balancer leaves the shard where it
	// is for this long (unless its home region changes meanwhile).
	TransferHold time.Duration
	// Gossip, when set, adjusts the memberlist configuration (tests use faster
	// probes). Name, addresses, delegates and logger are set by the node.
	Gossip func(c *memberlist.Config)
	// FormSettle is how long the set of known nodes must stay the same before
	// the cluster forms (default 1s).
	FormSettle time.Duration
}

// clustered reports whether the config asks for cluster mode.
func (c *Config) clustered() bool { return c.GossipAddr != "" }

func (c Config) withDefaults() Config {
	if c.NodeID == "" {
		c.NodeID = DefaultNodeID
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.Replicas <= 0 {
		c.Replicas = DefaultReplicas
	}
	if c.MaintainInterval <= 0 {
		c.MaintainInterval = DefaultMaintainInterval
	}
	if c.TransferHold <= 0 {
		c.TransferHold = DefaultTransferHold
	}
	if c.FormSettle <= 0 {
		c.FormSettle = time.Second
	}
	if c.AdvertiseGossip == "" {
		c.AdvertiseGossip = c.GossipAddr
	}
	return c
}

func (c *Config) validate() error {
	var errs []error
	if len(c.NodeID) > maxNodeIDLength {
		errs = append(errs, fmt.Errorf("NodeID longer than %d bytes", maxNodeIDLength))
	}
	for i := 0; i < len(c.NodeID); i++ {
		if b := c.NodeID[i]; b <= ' ' || b > '~' {
			errs = append(errs, fmt.Errorf("NodeID %q: printable ASCII without spaces only", c.NodeID))
			break
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("DataDir is required"))
	}
	if c.RaftAddr == "" && c.RaftListener == nil {
		errs = append(errs, errors.New("RaftAddr is required"))
	}
	if c.Shards < 0 || c.Shards > MaxShards {
		errs = append(errs, fmt.Errorf("Shards must be in 1..%d (got %d)", MaxShards, c.Shards))
	}
	if c.clustered() {
		if c.Bootstrap {
			errs = append(errs, errors.New("Bootstrap is for a standalone node; a cluster forms with BootstrapExpect"))
		}
		if c.APIAddr == "" {
			errs = append(errs, errors.New("APIAddr is required in cluster mode (peers forward calls to it)"))
		}
		if c.BootstrapExpect < 0 {
			errs = append(errs, fmt.Errorf("BootstrapExpect must not be negative (got %d)", c.BootstrapExpect))
		}
		if c.Replicas > 7 {
			errs = append(errs, fmt.Errorf("Replicas must be in 1..7 (got %d)", c.Replicas))
		}
	} else if c.BootstrapExpect > 0 || len(c.Join) > 0 {
		errs = append(errs, errors.New("BootstrapExpect and Join need GossipAddr (cluster mode)"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cluster: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// nodeMeta is DataDir/node.json: what was fixed when the directory was created.
// A cluster node records the cluster it joined (and the shard count it learned
// from the cluster map) once it has opened the shards placed on it.
type nodeMeta struct {
	Version   int    `json:"version"`
	NodeID    string `json:"node_id"`
	Shards    int    `json:"shards"`
	Mode      string `json:"mode,omitempty"` // "cluster", or standalone
	ClusterID string `json:"cluster_id,omitempty"`
}

const metaFile = "node.json"

// loadOrCreateMeta checks cfg against the directory's recorded identity, or
// records it for a new directory, and returns what node.json says. A new
// cluster-mode directory records no shard count: the cluster map brings it.
func loadOrCreateMeta(cfg *Config) (nodeMeta, error) {
	path := filepath.Join(cfg.DataDir, metaFile)
	mode := ""
	if cfg.clustered() {
		mode = "cluster"
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var m nodeMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return m, fmt.Errorf("cluster: %s: %w", path, err)
		}
		if m.Version != 1 {
			return m, fmt.Errorf("cluster: %s: unsupported version %d", path, m.Version)
		}
		if m.NodeID != cfg.NodeID {
			return m, fmt.Errorf("cluster: data dir %s belongs to node %q, not %q", cfg.DataDir, m.NodeID, cfg.NodeID)
		}
		if m.Mode != mode {
			return m, fmt.Errorf("cluster: data dir %s belongs to a %s node; it cannot be opened as a %s one",
				cfg.DataDir, modeName(m.Mode), modeName(mode))
		}
		if mode == "" && cfg.Shards != 0 && cfg.Shards != m.Shards {
			return m, fmt.Errorf("cluster: data dir %s was bootstrapped with %d shards; the shard count cannot change (asked for %d)",
				cfg.DataDir, m.Shards, cfg.Shards)
		}
		return m, nil
	case errors.Is(err, os.ErrNotExist):
	default:
		return nodeMeta{}, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	m := nodeMeta{Version: 1, NodeID: cfg.NodeID, Mode: mode}
	if mode == "" {
		m.Shards = cfg.Shards
		if m.Shards == 0 {
			m.Shards = DefaultShards
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return m, fmt.Errorf("cluster: create data dir: %w", err)
	}
	return m, saveMeta(cfg.DataDir, m)
}

func modeName(mode string) string {
	if mode == "" {
		return "standalone"
	}
	return mode
}

// saveMeta writes node.json.
func saveMeta(dir string, m nodeMeta) error {
	path := filepath.Join(dir, metaFile)
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := writeFileSync(path, append(b, '\n')); err != nil {
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	return nil
}

// writeFileSync writes path atomically (temp file, fsync, rename, fsync dir).
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
