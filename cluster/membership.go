package cluster

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Membership is memberlist (SWIM gossip): nodes find each other through any
// seed, and each gossips a small node meta: its region, API and raft
// addresses, the cluster it belongs to and the shards it leads. Dead nodes are
// detected by memberlist's failure detector. The gossip is advisory: who holds
// which replica is decided by the meta raft group, and who leads a shard by
// that shard's raft group; gossip only tells nodes where to look first.

// Member states, as AdminService.Members reports them: alive, suspect and dead
// are gossip's view from the answering node; left is a node that shut down
// gracefully (it may come back); removed is a node RemoveNode took out of the
// cluster (the map says so; it cannot rejoin under its id).
const (
	StateAlive   = "alive"
	StateSuspect = "suspect"
	StateDead    = "dead"
	StateLeft    = "left"
	StateRemoved = "removed"
)

// gossipMeta is the node meta every node gossips (memberlist caps it at 512
// bytes; leads is dropped when it does not fit).
type gossipMeta struct {
	V       int    `json:"v"`
	Region  string `json:"region"`
	API     string `json:"api"`
	Raft    string `json:"raft"`
	Cluster string `json:"cluster,omitempty"`
	// Leads is a hex bitmap of the shards this node leads.
	Leads   string `json:"leads,omitempty"`
	Leaving bool   `json:"leaving,omitempty"`
}

func (g *gossipMeta) leads(shard int) bool {
	i := shard / 8
	if i*2+2 > len(g.Leads) {
		return false
	}
	b, err := strconv.ParseUint(g.Leads[i*2:i*2+2], 16, 8)
	return err == nil && b&(1<<(shard%8)) != 0
}

func leadsBitmap(shards []int) string {
	if len(shards) == 0 {
		return ""
	}
	bm := make([]byte, shards[len(shards)-1]/8+1)
	for _, s := range shards {
		bm[s/8] |= 1 << (s % 8)
	}
	return hex.EncodeToString(bm)
}

type memberState struct {
	meta     gossipMeta
	gossip   string // memberlist address
	alive    bool
	left     bool      // announced leaving before it went
	lastAck  time.Time // last successful probe of it from here (or its join)
	joinedAt time.Time
}

type membership struct {
	n      *Node
	ml     *memberlist.Memberlist
	probe  time.Duration
	logger *slog.Logger

	mu     sync.Mutex
	local  gossipMeta
	states map[string]*memberState
}

// Member is one node as AdminService.Members reports it.
type Member struct {
	NodeID, Region, APIAddr, RaftAddr, GossipAddr string
	State                                         string // alive, suspect, dead, left, removed
	ShardsLed                                     []int
	Shards                                        []int // replicas held, from the cluster map
}

func startMembership(n *Node) (*membership, error) {
	cfg := n.cfg
	m := &membership{n: n, logger: n.logger.With("component", "gossip"), states: map[string]*memberState{}}
	m.local = gossipMeta{V: 1, Region: cfg.Region, API: cfg.APIAddr, Raft: n.RaftAddr()}

	c := memberlist.DefaultLANConfig()
	c.Name = cfg.NodeID
	host, port, err := splitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip address: %w", err)
	}
	c.BindAddr, c.BindPort = host, port
	ahost, aport, err := splitHostPort(cfg.AdvertiseGossip)
	if err != nil {
		return nil, fmt.Errorf("cluster: advertised gossip address: %w", err)
	}
	if ip := net.ParseIP(ahost); ip == nil || !ip.IsUnspecified() {
		if ip == nil {
			ips, err := net.LookupIP(ahost)
			if err != nil || len(ips) == 0 {
				return nil, fmt.Errorf("cluster: advertised gossip host %q: %v", ahost, err)
			}
			ahost = ips[0].String()
		}
		c.AdvertiseAddr, c.AdvertisePort = ahost, aport
	}
	c.Delegate = gossipDelegate{m}
	c.Events = gossipEvents{m}
	c.Ping = gossipPing{m}
	c.LogOutput = &memberlistLog{logger: m.logger}
	if cfg.Gossip != nil {
		cfg.Gossip(c)
	}
	m.probe = c.ProbeInterval
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s: %w", cfg.GossipAddr, err)
	}
	m.ml = ml
	// What peers see in their memberlist (an IP, also for a host name or a
	// port of 0), so the map and gossip agree on the address.
	m.n.gossipAddr = ml.LocalNode().Address()
	return m, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", ps, err)
	}
	return host, port, nil
}

// join keeps trying the seeds until one answers or the node closes; while the
// node is alone it keeps trying (a restarted seed, a healed partition).
func (m *membership) joinLoop(seeds []string) {
	defer m.n.wg.Done()
	if len(seeds) == 0 {
		return
	}
	backoff := 200 * time.Millisecond
	for {
		if m.ml.NumMembers() <= 1 {
			if k, err := m.ml.Join(seeds); err != nil && k == 0 {
				m.logger.Debug("join failed, retrying", "seeds", seeds, "err", err)
			} else {
				m.logger.Info("joined gossip", "via", seeds, "contacted", k)
			}
		}
		if m.n.pause(context.Background(), backoff) != nil {
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// update changes this node's gossiped meta and pushes it when it changed.
func (m *membership) update(fn func(g *gossipMeta)) {
	m.mu.Lock()
	before := m.local
	fn(&m.local)
	changed := m.local != before
	m.mu.Unlock()
	if changed {
		if err := m.ml.UpdateNode(time.Second); err != nil {
			m.logger.Debug("gossip meta update", "err", err)
		}
	}
}

func (m *membership) localMeta() gossipMeta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.local
}

// snapshot returns what gossip knows of every node but this one.
func (m *membership) snapshot() map[string]memberState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]memberState, len(m.states))
	for id, s := range m.states {
		out[id] = *s
	}
	return out
}

// up reports whether gossip considers id alive (this node always is).
func (m *membership) up(id string) bool {
	if id == m.n.cfg.NodeID {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.states[id]
	return s != nil && s.alive
}

// leaving reports whether id announced it is shutting down.
func (m *membership) leaving(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.states[id]
	return s != nil && s.meta.Leaving
}

// state is alive, suspect, dead or left. Suspect is this node's own
// estimate: alive to memberlist, but not acknowledged a probe from here for
// several probe rounds (memberlist keeps its own suspicion internal).
func (m *membership) state(s *memberState, members int) string {
	switch {
	case s.alive:
		grace := time.Duration(3*max(members-1, 1))*m.probe + 2*time.Second
		if time.Since(s.lastAck) > grace {
			return StateSuspect
		}
		return StateAlive
	case s.left:
		return StateLeft
	}
	return StateDead
}

func (m *membership) leave(timeout time.Duration) {
	m.update(func(g *gossipMeta) { g.Leaving = true })
	if err := m.ml.Leave(timeout); err != nil {
		m.logger.Debug("gossip leave", "err", err)
	}
}

func (m *membership) shutdown() {
	if err := m.ml.Shutdown(); err != nil {
		m.logger.Debug("gossip shutdown", "err", err)
	}
}

func (m *membership) observe(node *memberlist.Node, alive bool) {
	if node.Name == m.n.cfg.NodeID {
		return
	}
	var meta gossipMeta
	if len(node.Meta) > 0 {
		if err := json.Unmarshal(node.Meta, &meta); err != nil {
			m.logger.Warn("bad gossip meta", "node", node.Name, "err", err)
		}
	}
	m.mu.Lock()
	s := m.states[node.Name]
	if s == nil {
		s = &memberState{}
		m.states[node.Name] = s
	}
	if alive && !s.alive {
		s.joinedAt = time.Now()
		s.lastAck = s.joinedAt
	}
	if len(node.Meta) > 0 {
		s.meta = meta
	}
	s.gossip = node.Address()
	s.left = !alive && s.meta.Leaving
	s.alive = alive
	m.mu.Unlock()
	m.n.wakeReconcile()
}

type gossipDelegate struct{ m *membership }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	g := d.m.localMeta()
	b, _ := json.Marshal(g)
	if len(b) > limit {
		g.Leads = ""
		b, _ = json.Marshal(g)
	}
	return b
}
func (gossipDelegate) NotifyMsg([]byte)                {}
func (gossipDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (gossipDelegate) LocalState(bool) []byte          { return nil }
func (gossipDelegate) MergeRemoteState([]byte, bool)   {}

type gossipEvents struct{ m *membership }

func (e gossipEvents) NotifyJoin(n *memberlist.Node) {
	e.m.logger.Info("node joined gossip", "peer", n.Name, "addr", n.Address())
	e.m.observe(n, true)
}
func (e gossipEvents) NotifyLeave(n *memberlist.Node) {
	e.m.logger.Warn("node left gossip (dead or leaving)", "peer", n.Name)
	e.m.observe(n, false)
}
func (e gossipEvents) NotifyUpdate(n *memberlist.Node) { e.m.observe(n, true) }

type gossipPing struct{ m *membership }

func (gossipPing) AckPayload() []byte { return nil }
func (p gossipPing) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	p.m.mu.Lock()
	if s := p.m.states[other.Name]; s != nil {
		s.lastAck = time.Now()
	}
	p.m.mu.Unlock()
}

// memberlistLog turns memberlist's "[LEVEL] memberlist: ..." lines into slog
// records at the matching level.
type memberlistLog struct{ logger *slog.Logger }

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range []struct {
		tag   string
		level slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}} {
		if i := bytes.Index(line, []byte(l.tag)); i >= 0 {
			level = l.level
			line = bytes.TrimSpace(line[i+len(l.tag):])
			break
		}
	}
	w.logger.Log(context.Background(), level, string(line))
	return len(p), nil
}
