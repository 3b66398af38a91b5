package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1"
)

// Status describes the node and every shard.
type Status struct {
	NodeID, Region, RaftAddr string
	ClusterID                string // "" for a standalone node
	Shards                   []ShardStatus
}

// ShardStatus describes one shard. The top-level fields are the leader's view
// (this node's own when it hosts the shard and no leader answered).
type ShardStatus struct {
	Shard         int
	Leader        string // leader's node id; "" when none is known
	LeaderAddr    string
	State         string // Leader, Follower, Candidate, Shutdown ("" when not hosted here)
	AppliedIndex  uint64
	LastIndex     uint64
	PolicyVersion uint64
	Customers     int
	// StateHash (hex SHA-256, see fsm.FSM.StateHash) describes the state at
	// HashIndex. A busy shard's hash is recomputed at most every 10 s, since
	// hashing encodes the whole shard; use ShardStateHash for a fresh one.
	StateHash string
	HashIndex uint64
	Home      string // the region leadership prefers
	Replicas  []ReplicaStatus
}

// ReplicaStatus is one replica as its node reports it; State "unreachable"
// when the node did not answer.
type ReplicaStatus struct {
	NodeID, Region, State string
	AppliedIndex          uint64
	LastIndex             uint64
	StateHash             string
	HashIndex             uint64
	PolicyVersion         uint64
}

// statusTimeout bounds each node's answer to a cluster-wide Status.
const statusTimeout = 2 * time.Second

// localStatus reports every shard hosted here.
func (n *Node) localStatus(ctx context.Context) (Status, error) {
	st := Status{NodeID: n.cfg.NodeID, Region: n.cfg.Region, RaftAddr: n.RaftAddr()}
	if m := n.view(); m != nil {
		st.ClusterID = m.ClusterID
	}
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

func replicaOf(node, region string, sh ShardStatus) ReplicaStatus {
	return ReplicaStatus{NodeID: node, Region: region, State: sh.State, AppliedIndex: sh.AppliedIndex, LastIndex: sh.LastIndex,
		StateHash: sh.StateHash, HashIndex: sh.HashIndex, PolicyVersion: sh.PolicyVersion}
}

// Status reports every shard. A standalone node reports its own replicas; a
// cluster node asks every node of the cluster for its replicas (each within
// 2s) and merges them per shard.
func (n *Node) Status(ctx context.Context) (Status, error) {
	local, err := n.localStatus(ctx)
	if err != nil || !n.cluster {
		for i := range local.Shards {
			local.Shards[i].Replicas = []ReplicaStatus{replicaOf(n.cfg.NodeID, n.cfg.Region, local.Shards[i])}
		}
		return local, err
	}
	m := n.view()
	if m == nil {
		return local, nil
	}
	type report struct {
		region string
		shards map[int]ShardStatus
	}
	reports := map[string]*report{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ni := range m.liveNodes() {
		if ni.ID == n.cfg.NodeID {
			r := &report{region: n.cfg.Region, shards: map[int]ShardStatus{}}
			for _, sh := range local.Shards {
				r.shards[sh.Shard] = sh
			}
			reports[ni.ID] = r
			continue
		}
		wg.Go(func() {
			c, err := n.fwd.client(ni.ID)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, statusTimeout)
			defer cancel()
			resp, err := c.NodeStatus(cctx, connect.NewRequest(&clusterv1.NodeStatusRequest{}))
			if err != nil {
				return
			}
			r := &report{region: resp.Msg.Region, shards: map[int]ShardStatus{}}
			for _, x := range resp.Msg.Replicas {
				r.shards[int(x.Shard)] = ShardStatus{Shard: int(x.Shard), Leader: x.LeaderId, LeaderAddr: x.LeaderAddress, State: x.State,
					AppliedIndex: x.AppliedIndex, LastIndex: x.LastIndex, PolicyVersion: x.PolicyVersion, Customers: int(x.Customers),
					StateHash: x.StateHash, HashIndex: x.HashIndex}
			}
			mu.Lock()
			reports[ni.ID] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	out := Status{NodeID: local.NodeID, Region: local.Region, RaftAddr: local.RaftAddr, ClusterID: m.ClusterID}
	for id, p := range m.Placement {
		sh := ShardStatus{Shard: id, Home: p.Home}
		var best *ShardStatus
		for _, node := range p.Replicas {
			r := reports[node]
			region := ""
			if ni := m.Nodes[node]; ni != nil {
				region = ni.Region
			}
			rs, ok := ShardStatus{}, false
			if r != nil {
				rs, ok = r.shards[id]
			}
			if !ok {
				state := "unreachable"
				if r != nil {
					state = "not open"
				}
				sh.Replicas = append(sh.Replicas, ReplicaStatus{NodeID: node, Region: region, State: state})
				continue
			}
			sh.Replicas = append(sh.Replicas, replicaOf(node, region, rs))
			if rs.State == "Leader" || (best == nil && node == n.cfg.NodeID) {
				c := rs
				best = &c
			}
			if sh.Leader == "" && rs.Leader != "" {
				sh.Leader, sh.LeaderAddr = rs.Leader, rs.LeaderAddr
			}
		}
		if best != nil {
			leader, addr := sh.Leader, sh.LeaderAddr
			sh.AppliedIndex, sh.LastIndex, sh.PolicyVersion, sh.Customers = best.AppliedIndex, best.LastIndex, best.PolicyVersion, best.Customers
			sh.StateHash, sh.HashIndex, sh.Leader, sh.LeaderAddr = best.StateHash, best.HashIndex, best.Leader, best.LeaderAddr
			if sh.Leader == "" {
				sh.Leader, sh.LeaderAddr = leader, addr
			}
		}
		if s := n.hosted(id); s != nil {
			sh.State = s.group.Raft.State().String()
		}
		out.Shards = append(out.Shards, sh)
	}
	return out, nil
}

// Ready says whether this node can serve: nil once a standalone node's shards
// all have a leader, or once a cluster node has joined (it knows the cluster
// map) and knows a leader for every shard.
func (n *Node) Ready() error {
	if n.isClosed() {
		return ErrClosed
	}
	if !n.cluster {
		for _, s := range n.sorted() {
			if _, id := s.group.Leader(); id == "" {
				return fmt.Errorf("shard %d has no leader", s.id)
			}
		}
		return nil
	}
	if n.retired.Load() {
		return errors.New("this node was removed from the cluster")
	}
	// Joined: the map is known (from the meta group or, after a restart, its
	// cached copy). The meta group's leader is not needed to route calls.
	m := n.view()
	if m == nil {
		return errors.New("not joined: no cluster map yet (waiting for --bootstrap-expect nodes or for the cluster to add this node)")
	}
	for id := range m.Shards {
		if n.leaderHint(id) == "" {
			return fmt.Errorf("no leader known for shard %d", id)
		}
	}
	return nil
}

// Members lists every node the cluster map or gossip knows, with its state as
// seen from here.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	if !n.cluster {
		var led []int
		for _, s := range n.sorted() {
			if s.group.IsLeader() {
				led = append(led, s.id)
			}
		}
		all := make([]int, 0, n.Shards())
		for _, s := range n.sorted() {
			all = append(all, s.id)
		}
		return []Member{{NodeID: n.cfg.NodeID, Region: n.cfg.Region, RaftAddr: n.RaftAddr(), State: StateAlive, ShardsLed: led, Shards: all}}, nil
	}
	m := n.view()
	states := n.members.snapshot()
	ids := map[string]bool{n.cfg.NodeID: true}
	for id := range states {
		ids[id] = true
	}
	if m != nil {
		for id := range m.Nodes {
			ids[id] = true
		}
	}
	var out []Member
	for _, id := range sortedKeys(ids) {
		mem := Member{NodeID: id}
		if m != nil {
			if ni := m.Nodes[id]; ni != nil {
				mem.Region, mem.APIAddr, mem.RaftAddr, mem.GossipAddr = ni.Region, ni.API, ni.Raft, ni.Gossip
			}
			for sid, p := range m.Placement {
				if slices.Contains(p.Replicas, id) {
					mem.Shards = append(mem.Shards, sid)
				}
			}
		}
		st, known := states[id]
		switch {
		case id == n.cfg.NodeID:
			mem.State = StateAlive
			if n.retired.Load() {
				mem.State = StateLeft
			}
			mem.Region, mem.APIAddr, mem.RaftAddr, mem.GossipAddr = n.cfg.Region, n.cfg.APIAddr, n.RaftAddr(), n.gossipAddr
			for _, s := range n.sorted() {
				if s.group.IsLeader() {
					mem.ShardsLed = append(mem.ShardsLed, s.id)
				}
			}
		case m != nil && m.Nodes[id] != nil && m.Nodes[id].Removed:
			mem.State = StateLeft
		case known:
			mem.State = n.members.state(&st, len(states)+1)
			if st.meta.API != "" {
				mem.Region, mem.APIAddr, mem.RaftAddr, mem.GossipAddr = st.meta.Region, st.meta.API, st.meta.Raft, st.gossip
			}
			if st.alive {
				for sid := range max(n.Shards(), 0) {
					if st.meta.leads(sid) {
						mem.ShardsLed = append(mem.ShardsLed, sid)
					}
				}
			}
		default:
			mem.State = StateDead // in the map, never seen by this node's gossip
		}
		out = append(out, mem)
	}
	return out, nil
}

// TransferLeadership hands shard's leadership to node to (a voter of it), or
// to the most up-to-date other voter when to is empty, and returns the new
// leader.
func (n *Node) TransferLeadership(ctx context.Context, shard int, to string) (string, error) {
	if shard < 0 || shard >= n.Shards() {
		return "", invalidCommand("shard", "no shard %d (the cluster has %d)", shard, n.Shards())
	}
	if !n.cluster {
		return n.shardOpLocal(ctx, shard, clusterv1.ShardOp_SHARD_OP_TRANSFER_LEADERSHIP, to, "")
	}
	return n.shardOp(ctx, shard, clusterv1.ShardOp_SHARD_OP_TRANSFER_LEADERSHIP, to, "")
}

// SetShardHome sets the region shard's leadership prefers; the leader
// balancer moves leadership there.
func (n *Node) SetShardHome(ctx context.Context, shard int, region string) error {
	if !n.cluster {
		return invalidCommand("", "home regions need a cluster")
	}
	if shard < 0 || shard >= n.Shards() {
		return invalidCommand("shard", "no shard %d (the cluster has %d)", shard, n.Shards())
	}
	if region == "" {
		return invalidCommand("region", "a region is required")
	}
	res, err := n.metaApply(ctx, &metaCommand{Op: metaSetHome, Shard: shard, Region: region})
	if err != nil {
		return err
	}
	if res.Err != "" {
		return invalidCommand("shard", "%s", res.Err)
	}
	return nil
}

// RemoveNode takes node id out of the cluster, through raft: for every shard
// it holds a replica of, the map places a replacement (a node up, preferring
// regions the shard lacks) and the shard's leader removes id and adds the
// replacement through the group's log; then id leaves the meta group, is
// marked removed in the map (it may not rejoin under that id), and is told to
// leave gossip. It answers the shards id was in and their replacements ("" when
// no node could take the replica). Safe to call again after a partial failure.
func (n *Node) RemoveNode(ctx context.Context, id string) (shards []int, replacements map[int]string, err error) {
	if !n.cluster {
		return nil, nil, invalidCommand("node_id", "a standalone node has no other nodes")
	}
	m := n.view()
	if m == nil {
		return nil, nil, fmt.Errorf("%w: not joined a cluster yet", ErrUnavailable)
	}
	if m.Nodes[id] == nil {
		return nil, nil, invalidCommand("node_id", "unknown node %q", id)
	}
	replacements = map[int]string{}
	for sid := range m.Placement {
		cur := n.view()
		p := cur.Placement[sid]
		if !slices.Contains(p.Replicas, id) {
			continue
		}
		repl := replacementFor(cur, sid, id, n.members.up)
		next := slices.DeleteFunc(slices.Clone(p.Replicas), func(r string) bool { return r == id })
		if repl != "" {
			next = append(next, repl)
		}
		// The map first, so no leader's housekeeping adds id back meanwhile.
		if res, err := n.metaApply(ctx, &metaCommand{Op: metaSetReplicas, Shard: sid, Replicas: next}); err != nil {
			return shards, replacements, fmt.Errorf("shard %d: %w", sid, err)
		} else if res.Err != "" {
			return shards, replacements, fmt.Errorf("shard %d: %s", sid, res.Err)
		}
		if _, err := n.shardOp(ctx, sid, clusterv1.ShardOp_SHARD_OP_REMOVE_SERVER, id, ""); err != nil {
			return shards, replacements, fmt.Errorf("shard %d: remove %s: %w", sid, id, err)
		}
		if repl != "" {
			if _, err := n.shardOp(ctx, sid, clusterv1.ShardOp_SHARD_OP_ADD_VOTER, repl, n.raftAddrOf(repl)); err != nil {
				return shards, replacements, fmt.Errorf("shard %d: add %s: %w", sid, repl, err)
			}
		}
		shards = append(shards, sid)
		replacements[sid] = repl
		n.logger.Info("replica moved off a removed node", "shard", sid, "removed", id, "replacement", repl)
	}
	if res, err := n.metaApply(ctx, &metaCommand{Op: metaRemoveNode, NodeID: id}); err != nil {
		return shards, replacements, err
	} else if res.Err != "" {
		return shards, replacements, fmt.Errorf("%s", res.Err)
	}
	if _, err := n.shardOp(ctx, MetaGroup, clusterv1.ShardOp_SHARD_OP_REMOVE_SERVER, id, ""); err != nil {
		n.logger.Warn("removing the node from the meta group (the meta leader retries)", "peer", id, "err", err)
	}
	if id == n.cfg.NodeID {
		go n.retire()
	} else if n.members.up(id) {
		if c, err := n.fwd.client(id); err == nil {
			lctx, cancel := context.WithTimeout(ctx, statusTimeout)
			_, err := c.Leave(lctx, connect.NewRequest(&clusterv1.LeaveRequest{Reason: "removed by RemoveNode via " + n.cfg.NodeID}))
			cancel()
			if err != nil {
				n.logger.Warn("telling a removed node to leave", "peer", id, "err", err)
			}
		}
	}
	n.logger.Info("node removed from the cluster", "peer", id, "shards", len(shards))
	return shards, replacements, nil
}
