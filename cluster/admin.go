package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/capstanhq/capstan/fsm"
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
	// Replicas are the nodes the cluster map places the shard on (its
	// placement, not a raft configuration), each as its node reports it; while
	// RemoveNode moves a replica they can differ from the shard's raft voters
	// for a moment.
	Replicas []ReplicaStatus
}

// ReplicaStatus is one replica as its node reports it; State "unreachable"
// when the node did not answer, "not open" when it answered without hosting
// the shard.
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
				mem.State = StateRemoved
			}
			mem.Region, mem.APIAddr, mem.RaftAddr, mem.GossipAddr = n.cfg.Region, n.cfg.APIAddr, n.RaftAddr(), n.gossipAddr
			for _, s := range n.sorted() {
				if s.group.IsLeader() {
					mem.ShardsLed = append(mem.ShardsLed, s.id)
				}
			}
		case m != nil && m.Nodes[id] != nil && m.Nodes[id].Removed:
			mem.State = StateRemoved
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
// to the most up-to-date other voter when to is empty, and returns the leader
// the old leader knew once raft confirmed the hand-over ("" when none yet; see
// leaderAfterTransfer). The node that takes over holds leadership for
// Config.TransferHold before its balancer may move it (see leadershipHold).
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
// balancer moves leadership there. The region must be one a member of the
// cluster is in (removed nodes aside).
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
	if n.view() == nil {
		return fmt.Errorf("%w: not joined a cluster yet", ErrUnavailable)
	}
	if known := n.knownRegions(); !slices.Contains(known, region) {
		return invalidCommand("region", "no node in region %q; known regions: %s", region, strings.Join(known, ", "))
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

// knownRegions are the regions of the cluster's members, sorted: the nodes
// the map knows (removed ones aside), up or not, and those gossip knows that
// the map does not know yet.
func (n *Node) knownRegions() []string {
	set := map[string]bool{}
	m := n.view()
	if m != nil {
		for _, ni := range m.liveNodes() {
			set[ni.Region] = true
		}
	}
	if !n.retired.Load() {
		set[n.cfg.Region] = true
	}
	if n.members != nil {
		for id, st := range n.members.snapshot() {
			if m != nil && m.Nodes[id] != nil {
				continue // the map says (also whether it was removed)
			}
			if st.meta.Region != "" {
				set[st.meta.Region] = true
			}
		}
	}
	delete(set, "")
	return sortedKeys(set)
}

// refused is a request the cluster's state does not allow now
// (FAILED_PRECONDITION at the edge).
func refused(format string, args ...any) *fsm.Error {
	return &fsm.Error{Code: fsm.CodeFailedPrecondition, Message: fmt.Sprintf(format, args...)}
}

// removalStepErr is the error of one RemoveNode step as its caller can act on
// it: a refusal by the cluster is FAILED_PRECONDITION (and a Connect error
// from another node keeps its code), each naming the step; no leader or
// quorum within the deadline is ErrUnavailable (UNAVAILABLE, also for a
// timeout), saying the removal may be partial. Anything else stays as it is.
func removalStepErr(step string, err error) error {
	var fe *fsm.Error
	var ce *connect.Error
	switch {
	case errors.As(err, &fe):
		return refused("%s: %s", step, fe.Message)
	case errors.As(err, &ce):
		return connect.NewError(ce.Code(), fmt.Errorf("%s: %s", step, ce.Message()))
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrNotLeader), errors.Is(err, ErrUnknownOutcome),
		errors.Is(err, ErrClosed), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// %v, not %w: the cause's ErrUnknownOutcome or deadline must not
		// decide the code (RemoveNode is safe to call again, without a key).
		return fmt.Errorf("%w: %s: %v (the removal may be partial: call RemoveNode again)", ErrUnavailable, step, err)
	}
	return fmt.Errorf("%s: %w", step, err)
}

// removalRefused says why the cluster cannot lose node id now (nil when it
// can): it is the cluster's last node (no node would be left to take its
// replicas or run the meta group), or it holds a shard's only replica and no
// node that is up can take it. (The only replica moves by adding its
// replacement first, which must then be up to commit that change.)
func removalRefused(m *clusterMap, id string, up func(string) bool) error {
	if m.Nodes[id].Removed {
		return nil // finishing an earlier removal
	}
	if !slices.ContainsFunc(m.liveNodes(), func(ni *nodeInfo) bool { return ni.ID != id }) {
		return refused("node %s is the cluster's last node: no other node could take its replicas (stop it instead)", id)
	}
	for sid, p := range m.Placement {
		if len(p.Replicas) != 1 || p.Replicas[0] != id {
			continue
		}
		if repl := replacementFor(m, sid, id, up); repl == "" || !up(repl) {
			return refused("node %s holds the only replica of shard %d and no node that is up can take it", id, sid)
		}
	}
	return nil
}

// waitHosted waits until node has opened its replica of shard (asking it
// every 100ms), or ctx ends (ErrUnavailable).
func (n *Node) waitHosted(ctx context.Context, node string, shard int) error {
	for {
		if node == n.cfg.NodeID {
			if n.hosted(shard) != nil {
				return nil
			}
		} else if c, err := n.fwd.client(node); err == nil {
			cctx, cancel := context.WithTimeout(ctx, statusTimeout)
			resp, err := c.NodeStatus(cctx, connect.NewRequest(&clusterv1.NodeStatusRequest{}))
			cancel()
			if err == nil && slices.ContainsFunc(resp.Msg.Replicas, func(r *clusterv1.Replica) bool { return int(r.Shard) == shard }) {
				return nil
			}
		}
		if err := n.pause(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("%w: %s has not opened shard %d: %w", ErrUnavailable, node, shard, err)
		}
	}
}

// RemoveNode takes node id out of the cluster, through raft: for every shard
// it holds a replica of, the map places a replacement (a node up, preferring
// regions the shard lacks) and the shard's leader removes id and adds the
// replacement through the group's log; then id leaves the meta group, is
// marked removed in the map (it may not rejoin under that id), and is told to
// leave gossip. It answers the shards id was in and their replacements ("" when
// no node could take the replica). Safe to call again after a partial failure.
// Errors: *fsm.Error InvalidArgument for an unknown id, FailedPrecondition
// when the cluster refuses (see removalRefused, removalStepErr);
// ErrUnavailable when no leader answered in time.
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
	if err := removalRefused(m, id, n.members.up); err != nil {
		return nil, nil, err
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
			return shards, replacements, removalStepErr(fmt.Sprintf("shard %d: updating the cluster map", sid), err)
		} else if res.Err != "" {
			return shards, replacements, refused("shard %d: the cluster map refused replicas %v: %s", sid, next, res.Err)
		}
		remove := func() error {
			if _, err := n.shardOp(ctx, sid, clusterv1.ShardOp_SHARD_OP_REMOVE_SERVER, id, ""); err != nil {
				return removalStepErr(fmt.Sprintf("shard %d: removing %s from its raft group", sid, id), err)
			}
			return nil
		}
		add := func() error {
			if repl == "" {
				return nil
			}
			// A voter the group cannot reach counts against its quorum (and
			// a leader that cannot reach a quorum steps down): add it once it
			// has opened its replica, which it does on seeing the map.
			if err := n.waitHosted(ctx, repl, sid); err != nil {
				return removalStepErr(fmt.Sprintf("shard %d: waiting for %s to open its replica", sid, repl), err)
			}
			if _, err := n.shardOp(ctx, sid, clusterv1.ShardOp_SHARD_OP_ADD_VOTER, repl, n.raftAddrOf(repl)); err != nil {
				return removalStepErr(fmt.Sprintf("shard %d: adding %s to its raft group", sid, repl), err)
			}
			return nil
		}
		// Removing first keeps the quorum small when id is down (the usual
		// case); a shard's only replica needs its replacement first, since a
		// raft group cannot lose its last voter.
		steps := []func() error{remove, add}
		if len(p.Replicas) == 1 {
			steps = []func() error{add, remove}
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return shards, replacements, err
			}
		}
		shards = append(shards, sid)
		replacements[sid] = repl
		n.logger.Info("replica moved off a removed node", "shard", sid, "removed", id, "replacement", repl)
	}
	if res, err := n.metaApply(ctx, &metaCommand{Op: metaRemoveNode, NodeID: id}); err != nil {
		return shards, replacements, removalStepErr("marking the node removed in the cluster map", err)
	} else if res.Err != "" {
		return shards, replacements, refused("the cluster map refused to mark %s removed: %s", id, res.Err)
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
