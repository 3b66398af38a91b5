package rpc

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/cluster"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// admin serves capstan.v1.AdminService.
type admin struct {
	*core
	version string
}

var _ capstanv1connect.AdminServiceHandler = admin{}

func (s admin) Status(ctx context.Context, _ *connect.Request[capstanv1.StatusRequest]) (*connect.Response[capstanv1.StatusResponse], error) {
	st, err := s.backend.Status(ctx)
	if err != nil {
		return nil, toConnect(err)
	}
	out := &capstanv1.StatusResponse{
		NodeId: st.NodeID, Region: st.Region, RaftAddress: st.RaftAddr, Version: s.version, PolicyVersion: s.policyVersion(),
		ClusterId: st.ClusterID,
	}
	for _, sh := range st.Shards {
		ss := &capstanv1.ShardStatus{
			Shard:         uint32(sh.Shard),
			Leader:        sh.Leader,
			LeaderAddress: sh.LeaderAddr,
			State:         sh.State,
			AppliedIndex:  sh.AppliedIndex,
			StateHash:     sh.StateHash,
			Customers:     uint64(sh.Customers),
			LastIndex:     sh.LastIndex,
			PolicyVersion: sh.PolicyVersion,
			HashIndex:     sh.HashIndex,
			HomeRegion:    sh.Home,
		}
		for _, r := range sh.Replicas {
			ss.Replicas = append(ss.Replicas, &capstanv1.ReplicaStatus{
				NodeId: r.NodeID, Region: r.Region, State: r.State, AppliedIndex: r.AppliedIndex, LastIndex: r.LastIndex,
				StateHash: r.StateHash, HashIndex: r.HashIndex, PolicyVersion: r.PolicyVersion,
			})
		}
		out.Shards = append(out.Shards, ss)
	}
	return connect.NewResponse(out), nil
}

func (s admin) Members(ctx context.Context, _ *connect.Request[capstanv1.MembersRequest]) (*connect.Response[capstanv1.MembersResponse], error) {
	ms, err := s.backend.Members(ctx)
	if err != nil {
		return nil, toConnect(err)
	}
	out := &capstanv1.MembersResponse{}
	for _, m := range ms {
		out.Members = append(out.Members, &capstanv1.Member{
			NodeId: m.NodeID, Region: m.Region, ApiAddress: m.APIAddr, RaftAddress: m.RaftAddr, GossipAddress: m.GossipAddr,
			State: m.State, ShardsLed: u32s(m.ShardsLed), Shards: u32s(m.Shards),
		})
	}
	return connect.NewResponse(out), nil
}

func (s admin) TransferLeadership(ctx context.Context, req *connect.Request[capstanv1.TransferLeadershipRequest]) (*connect.Response[capstanv1.TransferLeadershipResponse], error) {
	m := req.Msg
	var ck check
	ck.optID("to_node", m.ToNode)
	if err := ck.err(); err != nil {
		return nil, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	leader, err := s.backend.TransferLeadership(ctx, int(m.Shard), m.ToNode)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&capstanv1.TransferLeadershipResponse{Leader: leader}), nil
}

func (s admin) RemoveNode(ctx context.Context, req *connect.Request[capstanv1.RemoveNodeRequest]) (*connect.Response[capstanv1.RemoveNodeResponse], error) {
	m := req.Msg
	var ck check
	ck.id("node_id", m.NodeId)
	if err := ck.err(); err != nil {
		return nil, err
	}
	// Moving every replica off a node takes a few raft round trips per shard.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	shards, repl, err := s.backend.RemoveNode(ctx, m.NodeId)
	if err != nil {
		return nil, toConnect(err)
	}
	out := &capstanv1.RemoveNodeResponse{Shards: u32s(shards), Replacements: map[uint32]string{}}
	for sh, to := range repl {
		out.Replacements[uint32(sh)] = to
	}
	return connect.NewResponse(out), nil
}

func (s admin) SetShardHome(ctx context.Context, req *connect.Request[capstanv1.SetShardHomeRequest]) (*connect.Response[capstanv1.SetShardHomeResponse], error) {
	m := req.Msg
	var ck check
	ck.id("region", m.Region)
	if err := ck.err(); err != nil {
		return nil, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.backend.SetShardHome(ctx, int(m.Shard), m.Region); err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&capstanv1.SetShardHomeResponse{}), nil
}

// compactTimeout bounds CompactShards when the client set no deadline: every
// node snapshots its replicas, a few at a time.
const compactTimeout = time.Minute

func (s admin) CompactShards(ctx context.Context, req *connect.Request[capstanv1.CompactShardsRequest]) (*connect.Response[capstanv1.CompactShardsResponse], error) {
	m := req.Msg
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, compactTimeout)
		defer cancel()
	}
	shards := make([]int, len(m.Shards))
	for i, sh := range m.Shards {
		shards[i] = int(sh)
	}
	rows, err := s.backend.CompactShards(ctx, shards, m.KeepEntries)
	if err != nil {
		return nil, toConnect(err)
	}
	out := &capstanv1.CompactShardsResponse{}
	for _, r := range rows {
		out.Replicas = append(out.Replicas, &capstanv1.ReplicaCompaction{
			Shard: uint32(r.Shard), NodeId: r.Node, State: r.State, SnapshotIndex: r.SnapshotIndex,
			FirstIndex: r.FirstIndex, LastIndex: r.LastIndex, Error: r.Err, Failed: r.Failed,
		})
	}
	return connect.NewResponse(out), nil
}

// SaveSnapshot streams a shard's snapshot: its info, then the bytes in
// chunks. The call is not bounded by the server's default deadline (a large
// shard takes a while); finding the leader is (see cluster.Node.SaveSnapshot).
func (s admin) SaveSnapshot(ctx context.Context, req *connect.Request[capstanv1.SaveSnapshotRequest], stream *connect.ServerStream[capstanv1.SaveSnapshotResponse]) error {
	return toConnect(s.backend.SaveSnapshot(ctx, int(req.Msg.Shard), snapshotStream{stream}))
}

// snapshotStream sends a snapshot as SaveSnapshotResponse messages.
type snapshotStream struct {
	stream *connect.ServerStream[capstanv1.SaveSnapshotResponse]
}

func (w snapshotStream) Begin(i cluster.SnapshotInfo) error {
	return w.stream.Send(&capstanv1.SaveSnapshotResponse{Info: &capstanv1.SnapshotInfo{
		Shard: uint32(i.Shard), AppliedIndex: i.Index, Term: i.Term, PolicyVersion: i.PolicyVersion,
		Customers: i.Customers, DedupeEntries: i.Dedupe, NodeId: i.Node,
	}})
}

func (w snapshotStream) Write(p []byte) (int, error) {
	if err := w.stream.Send(&capstanv1.SaveSnapshotResponse{Data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

func u32s(in []int) []uint32 {
	out := make([]uint32, len(in))
	for i, v := range in {
		out[i] = uint32(v)
	}
	return out
}
