package rpc

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
	"github.com/capstanhq/capstan/snapshot"
)

// streamBearer sets the Authorization header on streaming calls too.
type streamBearer struct{ key string }

func (b streamBearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+b.key)
		return next(ctx, req)
	}
}

func (b streamBearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+b.key)
		return conn
	}
}

func (b streamBearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// TestAdminSnapshots: SaveSnapshot streams the info, then the bytes of a
// valid snapshot holding what it says; CompactShards answers per replica;
// both need an admin key.
func TestAdminSnapshots(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := e.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: id, Plan: "starter"})); err != nil {
			t.Fatal(err)
		}
	}
	adm := capstanv1connect.NewAdminServiceClient(http.DefaultClient, e.url, connect.WithInterceptors(streamBearer{adminKey}))
	stream, err := adm.SaveSnapshot(ctx, connect.NewRequest(&capstanv1.SaveSnapshotRequest{Shard: 0}))
	if err != nil {
		t.Fatal(err)
	}
	var info *capstanv1.SnapshotInfo
	var data bytes.Buffer
	for stream.Receive() {
		m := stream.Msg()
		if info == nil {
			if m.Info == nil || len(m.Data) > 0 {
				t.Fatalf("first message %v: want info only", m)
			}
			info = m.Info
			continue
		}
		if m.Info != nil {
			t.Fatalf("info after the first message: %v", m)
		}
		data.Write(m.Data)
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	st, err := snapshot.Restore(&data)
	if err != nil {
		t.Fatalf("saved bytes are not a snapshot: %v", err)
	}
	if info.Customers != 3 || st.Header.Customers != 3 || st.Header.Index != info.AppliedIndex || info.AppliedIndex != e.b.index ||
		info.PolicyVersion != 1 || info.NodeId != "fake" {
		t.Fatalf("info %v, header %+v, fake index %d", info, st.Header, e.b.index)
	}

	_, err = e.adm.CompactShards(ctx, connect.NewRequest(&capstanv1.CompactShardsRequest{Shards: []uint32{0, 4}}))
	wantCode(t, err, connect.CodeInvalidArgument, "no shard 4")
	res, err := e.adm.CompactShards(ctx, connect.NewRequest(&capstanv1.CompactShardsRequest{}))
	if err != nil || len(res.Msg.Replicas) != 1 || res.Msg.Replicas[0].NodeId != "fake" || res.Msg.Replicas[0].Failed {
		t.Fatalf("compact: %v %v", err, res)
	}

	cl := capstanv1connect.NewAdminServiceClient(http.DefaultClient, e.url, connect.WithInterceptors(streamBearer{clientKey}))
	stream, err = cl.SaveSnapshot(ctx, connect.NewRequest(&capstanv1.SaveSnapshotRequest{Shard: 0}))
	if err == nil {
		for stream.Receive() {
			t.Fatal("a client key got snapshot data")
		}
		err = stream.Err()
	}
	wantCode(t, err, connect.CodePermissionDenied, "admin key")
	_, err = cl.CompactShards(ctx, connect.NewRequest(&capstanv1.CompactShardsRequest{}))
	wantCode(t, err, connect.CodePermissionDenied, "admin key")
}
