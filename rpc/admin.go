package rpc

import (
	"context"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/cluster"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// admin serves capstan.v1.AdminService.
type admin struct {
	capstanv1connect.UnimplementedAdminServiceHandler
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
	}
	for _, sh := range st.Shards {
		out.Shards = append(out.Shards, &capstanv1.ShardStatus{
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
		})
	}
	return connect.NewResponse(out), nil
}

// ready reports whether every shard has a leader.
func ready(st cluster.Status) bool {
	if len(st.Shards) == 0 {
		return false
	}
	for _, sh := range st.Shards {
		if sh.Leader == "" {
			return false
		}
	}
	return true
}
