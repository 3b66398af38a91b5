package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

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
	// maxNodeIDLength keeps node ids usable as faultnet labels and raft ids.
	maxNodeIDLength = 255
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
	Region   string // default "local"
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
	// Raft, when set, adjusts each shard's raft configuration before it opens
	// (tuning knobs only: identity, directory, transport and FSM are set by the
	// node).
	Raft func(shard int, c *raftgroup.Config)
}

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
	if c.Shards < 0 || c.Shards > MaxGroups {
		errs = append(errs, fmt.Errorf("Shards must be in 1..%d (got %d)", MaxGroups, c.Shards))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cluster: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// nodeMeta is DataDir/node.json: what was fixed when the directory was created.
type nodeMeta struct {
	Version int    `json:"version"`
	NodeID  string `json:"node_id"`
	Shards  int    `json:"shards"`
}

const metaFile = "node.json"

// loadOrCreateMeta checks cfg against the directory's recorded identity, or
// records it for a new directory. It returns the shard count in force.
func loadOrCreateMeta(cfg *Config) (int, error) {
	path := filepath.Join(cfg.DataDir, metaFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var m nodeMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return 0, fmt.Errorf("cluster: %s: %w", path, err)
		}
		if m.Version != 1 {
			return 0, fmt.Errorf("cluster: %s: unsupported version %d", path, m.Version)
		}
		if m.NodeID != cfg.NodeID {
			return 0, fmt.Errorf("cluster: data dir %s belongs to node %q, not %q", cfg.DataDir, m.NodeID, cfg.NodeID)
		}
		if cfg.Shards != 0 && cfg.Shards != m.Shards {
			return 0, fmt.Errorf("cluster: data dir %s was bootstrapped with %d shards; the shard count cannot change (asked for %d)",
				cfg.DataDir, m.Shards, cfg.Shards)
		}
		return m.Shards, nil
	case errors.Is(err, os.ErrNotExist):
	default:
		return 0, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	shards := cfg.Shards
	if shards == 0 {
		shards = DefaultShards
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return 0, fmt.Errorf("cluster: create data dir: %w", err)
	}
	b, _ = json.MarshalIndent(nodeMeta{Version: 1, NodeID: cfg.NodeID, Shards: shards}, "", "  ")
	if err := writeFileSync(path, append(b, '\n')); err != nil {
		return 0, fmt.Errorf("cluster: write %s: %w", path, err)
	}
	return shards, nil
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
