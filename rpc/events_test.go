package rpc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"github.com/shopspring/decimal"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// oneShard serves the event log of a single real FSM as shard 0.
type oneShard struct {
	f     *fsm.FSM
	index uint64
}

func (o *oneShard) ShardFor(string) int { return 0 }
func (o *oneShard) Shards() int         { return 1 }
func (o *oneShard) ShardEvents(shard int, after fsm.Cursor, max int, customer string) (fsm.EventsPage, error) {
	return o.f.Events(after, max, customer), nil
}

func (o *oneShard) apply(t *testing.T, ts int64, cmd *fsm.Command) *fsm.Result {
	t.Helper()
	cmd.Timestamp = ts
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	o.index++
	res := o.f.Apply(&raft.Log{Index: o.index, Term: 1, Type: raft.LogCommand, Data: data}).(*fsm.Result)
	if res.Err != nil {
		t.Fatalf("%s: %v", cmd.OpName(), res.Err)
	}
	return res
}

func TestEventStreamResumesAndFollows(t *testing.T) {
	src := &oneShard{f: fsm.New(fsm.Options{})}
	const t0 = int64(1772445600000)
	policy := `{"policy": {"credits": {"tok": {"price": {"amount": 0.01}}}, "plans": {"p": {"default": true,
		"entitlements": {"chat": {"limit": {"credit": "tok", "mode": "soft", "value": 100}}}}}}}`
	src.apply(t, t0, &fsm.Command{RequestID: "pol", SetPolicy: &fsm.PolicyOp{Text: policy, Format: "json", Version: 1}})
	src.apply(t, t0, &fsm.Command{RequestID: "c1", CreateCustomer: &engine.CreateCustomerRequest{ID: "u1"}})
	src.apply(t, t0, &fsm.Command{RequestID: "c2", CreateCustomer: &engine.CreateCustomerRequest{ID: "u2"}})
	allow := func(id, cu, v string) {
		src.apply(t, t0+1, &fsm.Command{RequestID: id, Allow: &engine.AllowRequest{Customer: cu, Entitlement: "chat", Value: decimalOf(t, v)}})
	}
	allow("a1", "u1", "150") // meter-overage, overage 50
	allow("a2", "u2", "10")  // meter-changed

	mux := http.NewServeMux()
	mux.Handle(capstanv1connect.NewEventServiceHandler(events{src: src}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := capstanv1connect.NewEventServiceClient(srv.Client(), srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Only u1's overages, from the start, without following.
	stream, err := client.Subscribe(ctx, connect.NewRequest(&capstanv1.SubscribeRequest{Customer: "u1", Types: []string{"meter-overage"}}))
	if err != nil {
		t.Fatal(err)
	}
	var got []*capstanv1.SubscribeResponse
	for stream.Receive() {
		got = append(got, stream.Msg())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Event.Type != "meter-overage" || got[0].Event.Overage != "50" || got[0].RequestId != "a1" {
		t.Fatalf("overage stream: %v", got)
	}
	last := got[0].Cursor

	// Follow the whole shard after that cursor; a new allow arrives while waiting.
	follow, err := client.Subscribe(ctx, connect.NewRequest(&capstanv1.SubscribeRequest{Shard: 0, After: last, Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	if !follow.Receive() || follow.Msg().Event.Type != "meter-changed" || follow.Msg().Event.Customer != "u2" {
		t.Fatalf("first followed event: %v %v", follow.Msg(), follow.Err())
	}
	go allow("a3", "u1", "5")
	if !follow.Receive() || follow.Msg().RequestId != "a3" || follow.Msg().Cursor.Index <= last.Index {
		t.Fatalf("followed new event: %v %v", follow.Msg(), follow.Err())
	}
	cancel()

	// A shard the cluster does not have is refused, naming the field.
	_, err = client.Subscribe(context.Background(), connect.NewRequest(&capstanv1.SubscribeRequest{Shard: 7}))
	if err == nil {
		s, _ := client.Subscribe(context.Background(), connect.NewRequest(&capstanv1.SubscribeRequest{Shard: 7}))
		for s.Receive() {
		}
		err = s.Err()
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		t.Fatalf("bad shard: %v", err)
	}
}

func decimalOf(t *testing.T, s string) decimal.Decimal {
	t.Helper()
	d, err := decimal.NewFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestEventStreamUnsetCursorAfterWrap: once the event ring has dropped old
// events, a subscriber without a cursor starts at the oldest event still kept
// (as the API promises) instead of being refused, while an explicit cursor
// older than what is kept is still OUT_OF_RANGE (never a silent gap).
func TestEventStreamUnsetCursorAfterWrap(t *testing.T) {
	src := &oneShard{f: fsm.New(fsm.Options{EventLogSize: 2})}
	const t0 = int64(1772445600000)
	policy := `{"policy": {"credits": {"tok": {"price": {"amount": 0.01}}}, "plans": {"p": {"default": true,
		"entitlements": {"chat": {"limit": {"credit": "tok", "mode": "soft", "value": 100}}}}}}}`
	src.apply(t, t0, &fsm.Command{RequestID: "pol", SetPolicy: &fsm.PolicyOp{Text: policy, Format: "json", Version: 1}})
	src.apply(t, t0, &fsm.Command{RequestID: "c1", CreateCustomer: &engine.CreateCustomerRequest{ID: "u1"}})
	for i, v := range []string{"10", "20", "30", "40"} {
		src.apply(t, t0+int64(i), &fsm.Command{RequestID: "a" + v, Allow: &engine.AllowRequest{Customer: "u1", Entitlement: "chat", Value: decimalOf(t, v)}})
	}
	mux := http.NewServeMux()
	mux.Handle(capstanv1connect.NewEventServiceHandler(events{src: src}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := capstanv1connect.NewEventServiceClient(srv.Client(), srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	read := func(req *capstanv1.SubscribeRequest) ([]*capstanv1.SubscribeResponse, error) {
		s, err := client.Subscribe(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		var got []*capstanv1.SubscribeResponse
		for s.Receive() {
			got = append(got, s.Msg())
		}
		return got, s.Err()
	}
	got, err := read(&capstanv1.SubscribeRequest{Shard: 0})
	if err != nil {
		t.Fatalf("unset cursor after the ring wrapped: %v", err)
	}
	if len(got) == 0 || len(got) > 2 || got[len(got)-1].RequestId != "a40" {
		t.Fatalf("unset cursor: want the newest kept events ending with a40, got %v", got)
	}
	_, err = read(&capstanv1.SubscribeRequest{Shard: 0, After: &capstanv1.EventCursor{Index: 1}})
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeOutOfRange {
		t.Fatalf("explicit compacted cursor: want OUT_OF_RANGE, got %v", err)
	}
}
