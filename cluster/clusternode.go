package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/capstanhq/capstan/internal/faultnet"
	clusterv1 "github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1"
	"github.com/capstanhq/capstan/internal/raftgroup"
)

// The lifecycle of a cluster node: open the meta group and the shards the
// cached map places here, start gossip, then in the background form the
// cluster (bootstrap-expect), follow the map (open newly placed shards, close
// removed ones, cache the map), and keep the shards it leads in shape (policy,
// voters, leadership balance).

const formationFile = "formation.json"

func (n *Node) openCluster() error {
	n.fresh = n.meta.ClusterID == ""
	n.fwd = newForwarder(n)
	n.metaF = &metaFSM{onChange: n.wakeReconcile}
	if err := n.openMetaGroup(); err != nil {
		return err
	}
	m, err := loadMapCache(n.cfg.DataDir)
	if err != nil {
		n.logger.Warn("ignoring the cached cluster map", "err", err)
	} else if m != nil {
		n.cachedMap.Store(m)
	}
	n.updateResolver()
	n.reconcile()
	members, err := startMembership(n)
	if err != nil {
		return err
	}
	n.members = members
	if n.gossipAddr == "" {
		n.gossipAddr = n.cfg.AdvertiseGossip
	}
	n.members.update(func(g *gossipMeta) {
		if v := n.view(); v != nil {
			g.Cluster = v.ClusterID
		}
	})
	n.wg.Add(5)
	go members.joinLoop(n.cfg.Join)
	go n.reconcileLoop()
	go n.formLoop()
	go n.maintainLoop()
	go n.leadershipLoop()
	n.logger.Info("node opened (cluster mode)", "raft_addr", n.RaftAddr(), "gossip_addr", n.gossipAddr,
		"api_addr", n.cfg.APIAddr, "region", n.cfg.Region, "join", n.cfg.Join, "bootstrap_expect", n.cfg.BootstrapExpect,
		"known_map", n.view() != nil, "data_dir", n.cfg.DataDir)
	return nil
}

func (n *Node) openMetaGroup() error {
	layer, err := n.mux.Layer(uint16(MetaGroup))
	if err != nil {
		return err
	}
	trans := newTransport(layer, n.logger.With("group", "meta"))
	rc := raftgroup.Config{RaftLogLevel: slog.LevelWarn}
	if n.cfg.Raft != nil {
		n.cfg.Raft(MetaGroup, &rc)
	}
	rc.ID, rc.GroupID, rc.Dir, rc.Transport, rc.Bind, rc.FSM = n.cfg.NodeID, "meta", filepath.Join(n.cfg.DataDir, "meta"), trans, "", n.metaF
	rc.Logger, rc.Bootstrap, rc.Peers = n.logger, false, nil
	g, err := raftgroup.Open(rc)
	if err != nil {
		_ = trans.Close()
		_ = layer.Close()
		return fmt.Errorf("cluster: meta group: %w", err)
	}
	n.metaG = g
	return nil
}

// view is the newest cluster map this node knows: the meta group's, or the
// cached copy while the meta group has not caught up after a restart. nil
// before the cluster formed. Maps are never modified once published.
func (n *Node) view() *clusterMap {
	var f *clusterMap
	if n.metaF != nil {
		f = n.metaF.current()
	}
	c := n.cachedMap.Load()
	if f == nil {
		return c
	}
	if c == nil || f.Index >= c.Index {
		return f
	}
	return c
}

func (n *Node) wakeReconcile() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// resolve names the node behind a raft or API address, for faultnet.
func (n *Node) resolve(addr string) (faultnet.Endpoint, bool) {
	if m := n.addrs.Load(); m != nil {
		e, ok := (*m)[addr]
		return e, ok
	}
	return faultnet.Endpoint{}, false
}

func (n *Node) updateResolver() {
	m := map[string]faultnet.Endpoint{}
	if v := n.view(); v != nil {
		for _, ni := range v.Nodes {
			e := faultnet.Endpoint{Node: ni.ID, Region: ni.Region}
			m[ni.Raft], m[ni.API] = e, e
		}
	}
	if n.members != nil {
		for id, st := range n.members.snapshot() {
			e := faultnet.Endpoint{Node: id, Region: st.meta.Region}
			if st.meta.Raft != "" {
				m[st.meta.Raft] = e
			}
			if st.meta.API != "" {
				m[st.meta.API] = e
			}
		}
	}
	n.addrs.Store(&m)
}

// apiAddrOf is node id's API address: as it gossips it, else as the map has it.
func (n *Node) apiAddrOf(id string) string {
	if id == n.cfg.NodeID {
		return n.cfg.APIAddr
	}
	if n.members != nil {
		if st, ok := n.members.snapshot()[id]; ok && st.meta.API != "" {
			return st.meta.API
		}
	}
	if v := n.view(); v != nil && v.Nodes[id] != nil {
		return v.Nodes[id].API
	}
	return ""
}

func (n *Node) raftAddrOf(id string) string {
	if id == n.cfg.NodeID {
		return n.RaftAddr()
	}
	if n.members != nil {
		if st, ok := n.members.snapshot()[id]; ok && st.meta.Raft != "" {
			return st.meta.Raft
		}
	}
	if v := n.view(); v != nil && v.Nodes[id] != nil {
		return v.Nodes[id].Raft
	}
	return ""
}

func (n *Node) selfInfo() *nodeInfo {
	return &nodeInfo{ID: n.cfg.NodeID, Region: n.cfg.Region, API: n.cfg.APIAddr, Raft: n.RaftAddr(), Gossip: n.gossipAddr}
}

func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.closed:
			return
		case <-n.wake:
		case <-t.C:
		}
		n.reconcile()
	}
}

// reconcile makes this node follow the map: cache it, open the shards placed
// here, close shards this node was removed from, and, on the meta leader,
// register nodes gossip knows and keep the meta group's voters.
func (n *Node) reconcile() {
	n.reconcileMu.Lock()
	defer n.reconcileMu.Unlock()
	if n.isClosed() || n.retired.Load() {
		return
	}
	n.updateResolver()
	m := n.view()
	if m == nil {
		return
	}
	if c := n.cachedMap.Load(); c == nil || m.Index > c.Index || c.ClusterID != m.ClusterID {
		if err := saveMapCache(n.cfg.DataDir, m); err != nil {
			n.logger.Warn("caching the cluster map", "err", err)
		} else {
			n.cachedMap.Store(m)
		}
	}
	n.mu.Lock()
	if n.nshards == 0 {
		n.nshards = m.Shards
	}
	n.mu.Unlock()
	me := n.cfg.NodeID
	var toOpen []int
	for id, p := range m.Placement {
		s := n.hosted(id)
		if s != nil && s.group.Raft.State() == raft.Shutdown {
			// Removed from the group (ShutdownOnRemove): close it; it is
			// opened again below if the map still places it here.
			n.logger.Info("closing a shard this node was removed from", "shard", id)
			_ = s.group.Close()
			n.mu.Lock()
			delete(n.shards, id)
			n.mu.Unlock()
			s = nil
		}
		if s == nil && slices.Contains(p.Replicas, me) {
			toOpen = append(toOpen, id)
		}
	}
	if len(toOpen) > 0 {
		err := n.eachShardID(len(toOpen), func(i int) error {
			id := toOpen[i]
			p := m.Placement[id]
			bootstrap := n.fresh && p.Epoch == 0
			var peers []raft.Server
			if bootstrap {
				for _, r := range p.Replicas {
					peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(r), Address: raft.ServerAddress(m.Nodes[r].Raft)})
				}
			}
			s, err := n.openShard(id, bootstrap, peers)
			if err != nil {
				return err
			}
			n.mu.Lock()
			n.shards[id] = s
			n.mu.Unlock()
			return nil
		})
		if err != nil {
			n.logger.Error("opening shards placed on this node", "err", err)
			return
		}
		n.logger.Info("opened shards placed on this node", "shards", len(toOpen))
	}
	if n.meta.ClusterID != m.ClusterID || n.meta.Shards != m.Shards {
		nm := n.meta
		nm.ClusterID, nm.Shards = m.ClusterID, m.Shards
		if err := saveMeta(n.cfg.DataDir, nm); err != nil {
			n.logger.Warn("recording the cluster in node.json", "err", err)
		} else {
			n.meta = nm
		}
	}
	if n.members == nil {
		return // still opening
	}
	n.members.update(func(g *gossipMeta) { g.Cluster = m.ClusterID })
	if n.metaG.IsLeader() {
		n.registerMembers(m)
	}
}

// registerMembers (meta leader) adds nodes gossip knows to the map and keeps
// the meta group's configuration: up to metaVoters voters, every other live
// node a non-voter, removed nodes out.
func (n *Node) registerMembers(m *clusterMap) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos := map[string]*nodeInfo{n.cfg.NodeID: n.selfInfo()}
	for id, st := range n.members.snapshot() {
		if st.alive && st.meta.Raft != "" && st.meta.API != "" && (st.meta.Cluster == "" || st.meta.Cluster == m.ClusterID) {
			infos[id] = &nodeInfo{ID: id, Region: st.meta.Region, API: st.meta.API, Raft: st.meta.Raft, Gossip: st.gossip}
		}
	}
	for _, id := range sortedKeys(infos) {
		in, old := infos[id], m.Nodes[id]
		if old != nil && (old.Removed || *old == *in) {
			continue
		}
		if _, err := n.metaApply(ctx, &metaCommand{Op: metaAddNode, Node: in}); err != nil {
			n.logger.Warn("registering a node in the cluster map", "peer", id, "err", err)
			return
		}
		n.logger.Info("node registered in the cluster map", "peer", id, "region", in.Region, "api", in.API, "raft", in.Raft)
	}
	m = n.view()
	f := n.metaG.Raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	voters := 0
	inConf := map[string]raft.Server{}
	for _, s := range servers {
		inConf[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, id := range sortedKeys(m.Nodes) {
		ni := m.Nodes[id]
		s, ok := inConf[id]
		switch {
		case ni.Removed && ok:
			if err := n.metaG.RemoveServer(id); err != nil {
				n.logger.Warn("removing a node from the meta group", "peer", id, "err", err)
			}
		case ni.Removed || id == n.cfg.NodeID:
		case !ok || string(s.Address) != ni.Raft || (s.Suffrage != raft.Voter && voters < metaVoters && n.members.up(id)):
			var err error
			if (ok && s.Suffrage == raft.Voter) || (voters < metaVoters && n.members.up(id)) {
				if !ok || s.Suffrage != raft.Voter {
					voters++
				}
				err = n.metaG.AddVoter(id, ni.Raft)
			} else {
				err = n.metaG.AddNonvoter(id, ni.Raft)
			}
			if err != nil {
				n.logger.Warn("adding a node to the meta group", "peer", id, "err", err)
				return
			}
		}
	}
}

// formLoop waits for BootstrapExpect nodes and forms the cluster on the node
// with the lowest id, once the set of known nodes has been stable for
// FormSettle. Other nodes wait to be added by the meta group's leader.
func (n *Node) formLoop() {
	defer n.wg.Done()
	var lastSet string
	var since time.Time
	for {
		if n.pause(context.Background(), 200*time.Millisecond) != nil || n.view() != nil {
			return
		}
		if pending, err := os.ReadFile(filepath.Join(n.cfg.DataDir, formationFile)); err == nil {
			// This node started forming before a restart: finish it.
			var m clusterMap
			if err := json.Unmarshal(pending, &m); err == nil {
				n.proposeForm(&m)
			}
			continue
		}
		if n.cfg.BootstrapExpect <= 0 {
			continue
		}
		ids := []string{n.cfg.NodeID}
		formed := false
		for id, st := range n.members.snapshot() {
			if !st.alive || st.meta.Raft == "" || st.meta.API == "" {
				continue
			}
			formed = formed || st.meta.Cluster != ""
			ids = append(ids, id)
		}
		if formed || len(ids) < n.cfg.BootstrapExpect {
			lastSet = ""
			continue
		}
		slices.Sort(ids)
		if ids[0] != n.cfg.NodeID {
			continue
		}
		if set := strings.Join(ids, ","); set != lastSet {
			lastSet, since = set, time.Now()
			continue
		}
		if time.Since(since) < n.cfg.FormSettle {
			continue
		}
		if err := n.form(ids); err != nil {
			n.logger.Error("forming the cluster", "err", err)
		}
	}
}

// form places every shard over ids and bootstraps the meta group.
func (n *Node) form(ids []string) error {
	members := n.members.snapshot()
	nodes := map[string]*nodeInfo{}
	for _, id := range ids {
		if id == n.cfg.NodeID {
			nodes[id] = n.selfInfo()
			continue
		}
		st := members[id]
		nodes[id] = &nodeInfo{ID: id, Region: st.meta.Region, API: st.meta.API, Raft: st.meta.Raft, Gossip: st.gossip}
	}
	var list []*nodeInfo
	for _, id := range ids {
		list = append(list, nodes[id])
	}
	shards := n.cfg.Shards
	if shards == 0 {
		shards = DefaultShards
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	m := &clusterMap{ClusterID: hex.EncodeToString(b[:]), Shards: shards, Replicas: min(n.cfg.Replicas, len(ids)),
		Nodes: nodes, Placement: place(shards, n.cfg.Replicas, list)}
	if n.cfg.Policy != "" {
		m.Policy = policyDoc{Text: n.cfg.Policy, Format: n.cfg.PolicyFormat, Version: 1}
	}
	data, _ := json.Marshal(m)
	if err := writeFileSync(filepath.Join(n.cfg.DataDir, formationFile), data); err != nil {
		return err
	}
	n.members.update(func(g *gossipMeta) { g.Cluster = m.ClusterID })
	var servers []raft.Server
	for i, id := range ids {
		s := raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(nodes[id].Raft)}
		if i >= metaVoters {
			s.Suffrage = raft.Nonvoter
		}
		servers = append(servers, s)
	}
	if err := n.metaG.Raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap the meta group: %w", err)
	}
	n.logger.Info("forming the cluster", "cluster_id", m.ClusterID, "nodes", ids, "shards", shards, "replicas", m.Replicas)
	n.proposeForm(m)
	return nil
}

// proposeForm commits the formation map, retrying until it is in (or the node
// closes), then forgets the pending formation.
func (n *Node) proposeForm(m *clusterMap) {
	for !n.isClosed() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := n.metaApply(ctx, &metaCommand{Op: metaForm, Map: m})
		cancel()
		if err == nil && res.Err == "" {
			_ = os.Remove(filepath.Join(n.cfg.DataDir, formationFile))
			n.logger.Info("cluster formed", "cluster_id", m.ClusterID)
			n.wakeReconcile()
			return
		}
		if err == nil {
			n.logger.Error("formation refused", "err", res.Err)
			_ = os.Remove(filepath.Join(n.cfg.DataDir, formationFile))
			return
		}
		n.logger.Warn("proposing the cluster map, retrying", "err", err)
		if n.pause(context.Background(), 200*time.Millisecond) != nil {
			return
		}
	}
}

// metaLeader is the meta group's leader as known here.
func (n *Node) metaLeader() string {
	if n.metaG == nil {
		return ""
	}
	_, id := n.metaG.Leader()
	return string(id)
}

// metaApply proposes cmd on the meta group, forwarding to its leader.
func (n *Node) metaApply(ctx context.Context, cmd *metaCommand) (*metaResult, error) {
	data, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = n.routeWith(ctx, MetaGroup, true, n.metaTarget, func(local bool, to string) (bool, string, error) {
		if local {
			b, err := n.metaApplyLocal(ctx, data)
			out = b
			return err == nil, "", err
		}
		c, err := n.fwd.client(to)
		if err != nil {
			return false, "", transportError{err}
		}
		resp, err := c.MetaApply(ctx, connect.NewRequest(&clusterv1.MetaApplyRequest{Command: data}))
		if err != nil {
			return false, "", transportError{err}
		}
		if resp.Msg.Outcome != clusterv1.Outcome_OUTCOME_OK {
			return false, resp.Msg.LeaderId, outcomeError(resp.Msg.Outcome, nil, resp.Msg.Message)
		}
		out = resp.Msg.Result
		return true, "", nil
	})
	if err != nil {
		return nil, err
	}
	var res metaResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("meta result: %w", err)
	}
	return &res, nil
}

func (n *Node) metaTarget(skip map[string]bool) (string, bool) {
	if n.metaG.IsLeader() {
		return n.cfg.NodeID, true
	}
	if _, lid := n.metaG.Leader(); lid != "" && !skip[string(lid)] {
		return string(lid), false
	}
	if !skip[n.cfg.NodeID] {
		skip[n.cfg.NodeID] = true
		return n.cfg.NodeID, true // wait here for the election
	}
	return "", false
}

// metaApplyLocal proposes encoded meta command data on the meta group, which
// this node must lead.
func (n *Node) metaApplyLocal(ctx context.Context, data []byte) ([]byte, error) {
	if n.metaG == nil || n.retired.Load() {
		return nil, fmt.Errorf("%w: no meta group here", ErrUnavailable)
	}
	wctx, cancel := context.WithTimeout(ctx, leaderWait)
	for !n.metaG.IsLeader() {
		if _, lid := n.metaG.Leader(); lid != "" {
			cancel()
			return nil, fmt.Errorf("meta group: %w: %s", ErrNotLeader, lid)
		}
		if n.pause(wctx, 5*time.Millisecond) != nil {
			cancel()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("meta group: %w: %w", ErrUnavailable, ctx.Err())
			}
			return nil, fmt.Errorf("meta group: %w: no leader known", ErrNotLeader)
		}
	}
	cancel()
	resp, err := n.metaG.Apply(ctx, data)
	switch {
	case err == nil:
	case errors.Is(err, raftgroup.ErrUnknownOutcome):
		return nil, fmt.Errorf("meta group: %w: %w: %w", ErrNotLeader, ErrUnknownOutcome, err)
	case errors.Is(err, raftgroup.ErrNotApplied) && ctx.Err() == nil:
		return nil, fmt.Errorf("meta group: %w: %w", ErrNotLeader, err)
	default:
		return nil, fmt.Errorf("meta group: %w: %w", ErrUnavailable, err)
	}
	res, _ := resp.(*metaResult)
	if res == nil {
		res = &metaResult{}
	}
	return json.Marshal(res)
}

// retire is what a removed node does: leave gossip and close its groups. It
// keeps answering (Unavailable) until it is shut down.
func (n *Node) retire() {
	if n.retired.Swap(true) {
		return
	}
	if n.members != nil {
		n.members.leave(time.Second)
	}
	for _, s := range n.sorted() {
		_ = s.group.Close()
		n.mu.Lock()
		delete(n.shards, s.id)
		n.mu.Unlock()
	}
	if n.metaG != nil {
		_ = n.metaG.Close()
	}
	n.logger.Warn("node retired: removed from the cluster; stop it")
}
