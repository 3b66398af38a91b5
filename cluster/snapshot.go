package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	clusterv1 "github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1"
	"github.com/capstanhq/capstan/internal/raftgroup"
)

// Operator snapshots (AdminService.CompactShards and SaveSnapshot). Neither
// proposes anything: CompactShards has each replica's raft snapshot the state
// it has applied and truncate its own log (raft.Raft.Snapshot, local to a
// node), and SaveSnapshot reads the leader's state machine through its
// snapshot path. Restoring a saved snapshot is not offered.

const (
	// compactParallelism bounds the replicas one node snapshots at once
	// (each encodes its shard and fsyncs a file).
	compactParallelism = 4
	// saveLeaderWait bounds finding the shard's leader and its confirming its
	// leadership before a snapshot's first byte; the bytes then take as long
	// as the caller's context allows.
	saveLeaderWait = 10 * time.Second
	// snapshotChunk is the largest data chunk of a snapshot stream.
	snapshotChunk = 64 << 10
)

// ReplicaCompaction is what one replica did for CompactShards.
type ReplicaCompaction struct {
	Shard int
	Node  string
	// State is the replica's raft state; "unreachable" when its node did not
	// answer, "not open" when it answered without hosting the shard.
	State string
	// SnapshotIndex is the last log index the snapshot includes (0: none
	// taken).
	SnapshotIndex uint64
	// FirstIndex and LastIndex bound the log the replica keeps afterwards
	// (both 0 when it keeps none).
	FirstIndex, LastIndex uint64
	// Err says why no snapshot was taken ("" when one was); Failed is set
	// unless that was only "nothing new to snapshot".
	Err    string
	Failed bool
}

// shardList checks and sorts the shards an operator named (in request field
// field); none is all.
func (n *Node) shardList(field string, shards []int) ([]int, error) {
	count := n.Shards()
	if count <= 0 {
		return nil, fmt.Errorf("%w: not joined a cluster yet", ErrUnavailable)
	}
	if len(shards) == 0 {
		all := make([]int, count)
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	for _, id := range shards {
		if id < 0 || id >= count {
			return nil, invalidCommand(field, "no shard %d (the cluster has %d)", id, count)
		}
	}
	out := slices.Clone(shards)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// CompactShards snapshots every replica of the named shards (all when none is
// named) now and truncates each replica's raft log up to its snapshot,
// keeping at least the newest keep entries (see raftgroup.Group.Snapshot). A
// cluster node asks every node the cluster map places a replica on (in
// parallel); a standalone node compacts its own. It answers one row per
// replica, by shard then node; a replica that refused or did not answer is a
// row with Failed set. Errors: *fsm.Error InvalidArgument for an unknown
// shard; ErrUnavailable before the node has joined.
func (n *Node) CompactShards(ctx context.Context, shards []int, keep uint64) ([]ReplicaCompaction, error) {
	ids, err := n.shardList("shards", shards)
	if err != nil {
		return nil, err
	}
	if !n.cluster {
		return n.compactLocal(ctx, ids, keep), nil
	}
	m := n.view()
	if m == nil {
		return nil, fmt.Errorf("%w: not joined a cluster yet", ErrUnavailable)
	}
	byNode := map[string][]int{}
	for _, id := range ids {
		if id < len(m.Placement) {
			for _, r := range m.Placement[id].Replicas {
				byNode[r] = append(byNode[r], id)
			}
		}
	}
	// Leave time to answer with the rows of nodes that did not.
	nctx, cancel := ctx, context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); ok {
		nctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)*9/10))
	}
	defer cancel()
	type replica struct {
		shard int
		node  string
	}
	rows := map[replica]ReplicaCompaction{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for node, sids := range byNode {
		wg.Go(func() {
			var got []ReplicaCompaction
			if node == n.cfg.NodeID {
				got = n.compactLocal(nctx, sids, keep)
			} else {
				got = n.compactRemote(nctx, node, sids, keep)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range got {
				rows[replica{r.Shard, r.Node}] = r
			}
		})
	}
	wg.Wait()
	var out []ReplicaCompaction
	for _, id := range ids {
		if id >= len(m.Placement) {
			continue
		}
		for _, r := range m.Placement[id].Replicas {
			if row, ok := rows[replica{id, r}]; ok {
				out = append(out, row)
			}
		}
	}
	return out, nil
}

// compactRemote asks node to compact its replicas of ids.
func (n *Node) compactRemote(ctx context.Context, node string, ids []int, keep uint64) []ReplicaCompaction {
	unreachable := func(err error) []ReplicaCompaction {
		out := make([]ReplicaCompaction, len(ids))
		for i, id := range ids {
			out[i] = ReplicaCompaction{Shard: id, Node: node, State: "unreachable", Err: err.Error(), Failed: true}
		}
		return out
	}
	c, err := n.fwd.client(node)
	if err != nil {
		return unreachable(err)
	}
	req := &clusterv1.CompactRequest{KeepEntries: keep}
	for _, id := range ids {
		req.Shards = append(req.Shards, uint32(id))
	}
	resp, err := c.Compact(ctx, connect.NewRequest(req))
	if err != nil {
		return unreachable(err)
	}
	got := map[int]*clusterv1.Compaction{}
	for _, x := range resp.Msg.Compactions {
		got[int(x.Shard)] = x
	}
	out := make([]ReplicaCompaction, 0, len(ids))
	for _, id := range ids {
		x := got[id]
		switch {
		case x == nil:
			out = append(out, ReplicaCompaction{Shard: id, Node: node, State: "unreachable", Err: "no answer for this shard", Failed: true})
		case !x.Hosted:
			out = append(out, ReplicaCompaction{Shard: id, Node: node, State: "not open", Err: x.Error, Failed: true})
		default:
			out = append(out, ReplicaCompaction{Shard: id, Node: node, State: x.State, SnapshotIndex: x.SnapshotIndex,
				FirstIndex: x.FirstIndex, LastIndex: x.LastIndex, Err: x.Error, Failed: x.Failed})
		}
	}
	return out
}

// compactLocal snapshots this node's replicas of ids (compactParallelism at
// a time); a shard not hosted here is a "not open" row.
func (n *Node) compactLocal(ctx context.Context, ids []int, keep uint64) []ReplicaCompaction {
	out := make([]ReplicaCompaction, len(ids))
	sem := make(chan struct{}, compactParallelism)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i] = n.compactReplica(ctx, id, keep)
		})
	}
	wg.Wait()
	return out
}

func (n *Node) compactReplica(ctx context.Context, id int, keep uint64) ReplicaCompaction {
	row := ReplicaCompaction{Shard: id, Node: n.cfg.NodeID}
	s := n.hosted(id)
	if s == nil {
		row.State, row.Err, row.Failed = "not open", fmt.Sprintf("node %s does not host shard %d", n.cfg.NodeID, id), true
		return row
	}
	row.State = s.group.Raft.State().String()
	res, err := s.group.Snapshot(ctx, keep)
	if err != nil {
		row.Err = snapshotErrText(err)
		row.Failed = !errors.Is(err, raftgroup.ErrNothingNewToSnapshot)
		row.FirstIndex, row.LastIndex = s.group.LogRange()
		n.logger.Info("shard compaction", "shard", id, "err", err)
		return row
	}
	row.SnapshotIndex, row.FirstIndex, row.LastIndex = res.Index, res.FirstIndex, res.LastIndex
	return row
}

// snapshotErrText is a snapshot error as an operator reads it: raft's reason
// without the group and node (the row names them).
func snapshotErrText(err error) string {
	var ge *raftgroup.Error
	if errors.As(err, &ge) {
		if ge.Err != nil {
			return ge.Err.Error()
		}
		var kinds []string
		for _, k := range ge.Kinds {
			kinds = append(kinds, k.Error())
		}
		if len(kinds) > 0 {
			return strings.Join(kinds, ": ")
		}
	}
	return err.Error()
}

// SnapshotInfo describes a snapshot SaveSnapshot streams: its header.
type SnapshotInfo struct {
	Shard int
	// Node is the leader that captured it.
	Node string
	// Index and Term are the last log entry the state includes.
	Index, Term   uint64
	PolicyVersion uint64
	Customers     uint64
	Dedupe        uint64
}

// SnapshotSink receives a saved snapshot: Begin once with its header, then
// the bytes, in order, through Write (in chunks of at most 64 KiB).
type SnapshotSink interface {
	Begin(SnapshotInfo) error
	Write(p []byte) (int, error)
}

// SaveSnapshot streams a consistent copy of shard's state to sink, in the
// format of package snapshot (the bytes a raft snapshot of the shard holds).
// The shard's leader, wherever it is, takes it after linearize (it leads, has
// applied everything committed, and a quorum confirms it), so the copy
// includes every decision acknowledged before the call; nothing is proposed
// and nothing changes. Finding the leader is bounded by 10s; the bytes then
// take as long as ctx allows. Errors: *fsm.Error InvalidArgument for an
// unknown shard; ErrUnavailable (no leader answered); a *connect.Error
// Unavailable when the stream broke after Begin (the sink holds a partial
// copy: call again).
func (n *Node) SaveSnapshot(ctx context.Context, shard int, sink SnapshotSink) error {
	if _, err := n.shardList("shard", []int{shard}); err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, saveLeaderWait)
	defer cancel()
	if !n.cluster {
		s := n.hosted(shard)
		if s == nil {
			return fmt.Errorf("shard %d: %w (not hosted on node %s)", shard, ErrNotLeader, n.cfg.NodeID)
		}
		return n.saveLocal(lctx, s, sink)
	}
	return n.route(lctx, shard, false, func(local bool, to string) (bool, string, error) {
		if local {
			s := n.hosted(shard)
			if s == nil {
				return false, "", fmt.Errorf("%w: shard closed here", ErrNotLeader)
			}
			err := n.saveLocal(lctx, s, sink)
			return err == nil, "", err
		}
		return n.saveRemote(ctx, lctx, to, shard, sink)
	})
}

// streamCut is the final error of a snapshot stream that broke after its
// first message: not retried (the sink already has part of it), and not one
// of this package's retryable sentinels.
func streamCut(shard int, sent int64, err error) error {
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf(
		"shard %d: the snapshot stream broke after %d bytes (%v); the partial copy is not a snapshot: save it again", shard, sent, err))
}

// countingSink counts the bytes written through it and chunks them.
type countingSink struct {
	SnapshotSink
	n int64
}

// Write passes p on in chunks of at most snapshotChunk bytes.
func (c *countingSink) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		k := min(len(p)-done, snapshotChunk)
		w, err := c.SnapshotSink.Write(p[done : done+k])
		c.n += int64(w)
		done += w
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// saveLocal streams s's snapshot from this node, which must lead it:
// linearize (bounded by lctx), capture through the FSM's snapshot path, then
// write.
func (n *Node) saveLocal(lctx context.Context, s *shard, sink SnapshotSink) error {
	if err := n.linearize(lctx, s); err != nil {
		return err
	}
	c, err := s.fsm.CaptureSnapshot()
	if err != nil {
		return err
	}
	defer c.Release()
	h := c.Header()
	info := SnapshotInfo{Shard: s.id, Node: n.cfg.NodeID, Index: h.Index, Term: h.Term,
		PolicyVersion: h.PolicyVersion, Customers: h.Customers, Dedupe: h.Dedupe}
	if err := sink.Begin(info); err != nil {
		return streamCut(s.id, 0, err)
	}
	cs := &countingSink{SnapshotSink: sink}
	if err := c.Write(cs); err != nil {
		return streamCut(s.id, cs.n, err)
	}
	n.logger.Info("snapshot saved by an operator", "shard", s.id, "index", info.Index, "bytes", cs.n)
	return nil
}

// saveRemote streams the snapshot from node to (a route attempt): the first
// message, bounded by lctx, says whether to leads the shard; the data then
// comes under ctx.
func (n *Node) saveRemote(ctx, lctx context.Context, to string, shard int, sink SnapshotSink) (bool, string, error) {
	c, err := n.fwd.client(to)
	if err != nil {
		return false, "", transportError{err}
	}
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	stop := context.AfterFunc(lctx, scancel)
	stream, err := c.SaveSnapshot(sctx, connect.NewRequest(&clusterv1.SaveSnapshotRequest{Shard: uint32(shard)}))
	if err != nil {
		stop()
		return false, "", transportError{err}
	}
	defer stream.Close()
	if !stream.Receive() {
		stop()
		err := stream.Err()
		if err == nil {
			err = errors.New("the stream ended without a first message")
		}
		return false, "", transportError{err}
	}
	if !stop() {
		return false, "", transportError{fmt.Errorf("no answer from %s in time: %w", to, lctx.Err())}
	}
	first := stream.Msg()
	if first.Outcome != clusterv1.Outcome_OUTCOME_OK {
		return false, first.LeaderId, outcomeError(first.Outcome, first.Error, first.Message)
	}
	i := first.Info
	if i == nil {
		return false, "", streamCut(shard, 0, errors.New("its first message has no info"))
	}
	if err := sink.Begin(SnapshotInfo{Shard: int(i.Shard), Node: i.NodeId, Index: i.Index, Term: i.Term,
		PolicyVersion: i.PolicyVersion, Customers: i.Customers, Dedupe: i.DedupeEntries}); err != nil {
		return false, "", streamCut(shard, 0, err)
	}
	var sent int64
	for stream.Receive() {
		d := stream.Msg().Data
		if _, err := sink.Write(d); err != nil {
			return false, "", streamCut(shard, sent, err)
		}
		sent += int64(len(d))
	}
	if err := stream.Err(); err != nil {
		return false, "", streamCut(shard, sent, err)
	}
	return true, "", nil
}

// Compact answers AdminService.CompactShards for this node's replicas.
func (h forwardServer) Compact(ctx context.Context, req *connect.Request[clusterv1.CompactRequest]) (*connect.Response[clusterv1.CompactResponse], error) {
	ids := make([]int, len(req.Msg.Shards))
	for i, id := range req.Msg.Shards {
		ids[i] = int(id)
	}
	out := &clusterv1.CompactResponse{}
	for _, r := range h.n.compactLocal(ctx, ids, req.Msg.KeepEntries) {
		out.Compactions = append(out.Compactions, &clusterv1.Compaction{
			Shard: uint32(r.Shard), Hosted: r.State != "not open", State: r.State, SnapshotIndex: r.SnapshotIndex,
			FirstIndex: r.FirstIndex, LastIndex: r.LastIndex, Error: r.Err, Failed: r.Failed,
		})
	}
	return connect.NewResponse(out), nil
}

// SaveSnapshot streams a snapshot of a shard this node leads: the first
// message is the outcome (NOT_LEADER naming the leader when it does not), then
// the data. A stream that breaks after the first message ends with an error.
func (h forwardServer) SaveSnapshot(ctx context.Context, req *connect.Request[clusterv1.SaveSnapshotRequest], stream *connect.ServerStream[clusterv1.SaveSnapshotResponse]) error {
	n, id := h.n, int(req.Msg.Shard)
	s := n.hosted(id)
	if s == nil {
		return stream.Send(&clusterv1.SaveSnapshotResponse{Outcome: clusterv1.Outcome_OUTCOME_NOT_LEADER,
			LeaderId: n.leaderHint(id), Message: "shard not hosted here"})
	}
	lctx, cancel := context.WithTimeout(ctx, saveLeaderWait)
	defer cancel()
	sink := &forwardSink{stream: stream}
	err := n.saveLocal(lctx, s, sink)
	switch {
	case err == nil:
		return nil
	case sink.begun:
		return err
	}
	out := &clusterv1.SaveSnapshotResponse{LeaderId: n.leaderHint(id), Message: err.Error()}
	out.Outcome, out.Error = outcomeOf(err)
	return stream.Send(out)
}

// forwardSink sends a snapshot over ForwardService.SaveSnapshot.
type forwardSink struct {
	stream *connect.ServerStream[clusterv1.SaveSnapshotResponse]
	begun  bool
}

func (f *forwardSink) Begin(i SnapshotInfo) error {
	f.begun = true
	return f.stream.Send(&clusterv1.SaveSnapshotResponse{Outcome: clusterv1.Outcome_OUTCOME_OK, Info: &clusterv1.SnapshotInfo{
		Shard: uint32(i.Shard), Index: i.Index, Term: i.Term, PolicyVersion: i.PolicyVersion,
		Customers: i.Customers, DedupeEntries: i.Dedupe, NodeId: i.Node,
	}})
}

func (f *forwardSink) Write(p []byte) (int, error) {
	if err := f.stream.Send(&clusterv1.SaveSnapshotResponse{Data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}
