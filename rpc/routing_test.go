package rpc

import (
	"context"
	"slices"
	"testing"

	"connectrpc.com/connect"

	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
)

// TestRoutingKey: a request's routing_key, when given, is the key the backend
// routes by (for writes and reads alike); else the customer id is.
func TestRoutingKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, id := range []string{"acme", "acme-u1"} {
		if _, err := e.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: id, Plan: "starter", RoutingKey: "acme"})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.lim.Allow(ctx, connect.NewRequest(&capstanv1.AllowRequest{
		Customer: "acme-u1", Entitlement: "ai_chat", Value: "1", RoutingKey: "acme"})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lim.Check(ctx, connect.NewRequest(&capstanv1.CheckRequest{
		Customer: "acme-u1", Entitlement: "ai_chat", Value: "1", RoutingKey: "acme"})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.lim.GetUsage(ctx, connect.NewRequest(&capstanv1.GetUsageRequest{Customer: "acme-u1", Entitlement: "ai_chat"})); err != nil {
		t.Fatal(err)
	}
	// CreateCustomer applies then reads the customer back: two calls each.
	got := e.b.lastKeys(7)
	want := []string{"acme", "acme", "acme", "acme", "acme", "acme", "acme-u1"}
	if !slices.Equal(got, want) {
		t.Fatalf("routing keys %v, want %v", got, want)
	}
	_, err := e.lim.Allow(ctx, connect.NewRequest(&capstanv1.AllowRequest{
		Customer: "acme-u1", Entitlement: "ai_chat", Value: "1", RoutingKey: "not a key"}))
	wantCode(t, err, connect.CodeInvalidArgument, "routing_key")
}

// TestReadLabels: reads say how they were served.
func TestReadLabels(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: "c1", Plan: "starter"})); err != nil {
		t.Fatal(err)
	}
	for _, stale := range []bool{false, true} {
		res, err := e.lim.Check(ctx, connect.NewRequest(&capstanv1.CheckRequest{Customer: "c1", Entitlement: "ai_chat", Value: "1", Stale: stale}))
		if err != nil {
			t.Fatal(err)
		}
		want := "linearizable"
		if stale {
			want = "stale"
		}
		if got := res.Header().Get(ReadHeader); got != want || res.Header().Get(ReadNodeHeader) != "fake" || res.Msg.PolicyVersion != 1 {
			t.Fatalf("stale=%v: %s=%q node=%q policy v%d", stale, ReadHeader, got, res.Header().Get(ReadNodeHeader), res.Msg.PolicyVersion)
		}
	}
}

// TestAdminCluster: the cluster admin calls reach the backend and map its
// errors at the edge.
func TestAdminCluster(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ms, err := e.adm.Members(ctx, connect.NewRequest(&capstanv1.MembersRequest{}))
	if err != nil || len(ms.Msg.Members) != 1 || ms.Msg.Members[0].State != "alive" {
		t.Fatalf("members: %v %v", err, ms)
	}
	_, err = e.adm.TransferLeadership(ctx, connect.NewRequest(&capstanv1.TransferLeadershipRequest{Shard: 0, ToNode: "n2"}))
	wantCode(t, err, connect.CodeUnavailable, "one node")
	_, err = e.adm.RemoveNode(ctx, connect.NewRequest(&capstanv1.RemoveNodeRequest{}))
	wantCode(t, err, connect.CodeInvalidArgument, "node_id")
	_, err = e.adm.RemoveNode(ctx, connect.NewRequest(&capstanv1.RemoveNodeRequest{NodeId: "fake"}))
	wantCode(t, err, connect.CodeFailedPrecondition, "last node")
	_, err = e.adm.RemoveNode(ctx, connect.NewRequest(&capstanv1.RemoveNodeRequest{NodeId: "n2"}))
	wantCode(t, err, connect.CodeUnavailable, "one node")
	_, err = e.adm.SetShardHome(ctx, connect.NewRequest(&capstanv1.SetShardHomeRequest{Shard: 1, Region: "eu"}))
	wantCode(t, err, connect.CodeUnavailable, "one node")
}
