package rpc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/capstanhq/capstan/cluster"
	"github.com/capstanhq/capstan/fsm"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
)

// EventSource is what the event stream needs from a backend: a shard's event log
// on this node. cluster.Node implements it.
type EventSource interface {
	ShardFor(routingKey string) int
	Shards() int
	ShardEvents(shard int, after fsm.Cursor, max int, customer string) (fsm.EventsPage, error)
}

// eventPage bounds one read of the log; the stream loops until it has caught up.
const eventPage = 512

type events struct {
	src EventSource
}

// Subscribe streams a shard's events after the request's cursor.
func (s events) Subscribe(ctx context.Context, req *connect.Request[capstanv1.SubscribeRequest], stream *connect.ServerStream[capstanv1.SubscribeResponse]) error {
	m := req.Msg
	var ck check
	shard := int(m.Shard)
	if m.Customer != "" {
		ck.id("customer", m.Customer)
		key := m.Customer
		if m.RoutingKey != "" {
			ck.id("routing_key", m.RoutingKey)
			key = m.RoutingKey
		}
		if !ck.failed() {
			shard = s.src.ShardFor(key)
		}
	} else if shard >= s.src.Shards() {
		ck.fail("shard", "no shard %d (the cluster has %d)", shard, s.src.Shards())
	}
	types := map[string]bool{}
	for i, t := range m.Types {
		ck.id(fmt.Sprintf("types[%d]", i), t)
		types[t] = true
	}
	if err := ck.err(); err != nil {
		return err
	}
	cursor := fsm.Cursor{}
	fromOldest := m.After == nil // unset: start at the oldest event still kept
	if !fromOldest {
		cursor = fsm.Cursor{Index: m.After.Index, Seq: m.After.Seq}
	}
	for {
		page, err := s.src.ShardEvents(shard, cursor, eventPage, m.Customer)
		if errors.Is(err, cluster.ErrShardNotHosted) {
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("shard %d has no replica on this node; subscribe through a node that hosts it (AdminService.Status lists replicas)", shard))
		}
		if err != nil {
			return connect.NewError(connect.CodeUnavailable, err)
		}
		if page.Compacted && fromOldest {
			// Nothing was promised to this reader yet: begin where the log
			// begins now instead of refusing.
			fromOldest, cursor = false, page.First
			continue
		}
		fromOldest = false
		if page.Compacted {
			return connect.NewError(connect.CodeOutOfRange, fmt.Errorf(
				"events after index %d seq %d are no longer kept on this node; resynchronise from meters and caps, then resume after index %d seq %d",
				cursor.Index, cursor.Seq, page.First.Index, page.First.Seq))
		}
		for i := range page.Records {
			r := &page.Records[i]
			if len(types) > 0 && !types[r.Event.Type] {
				continue
			}
			if err := stream.Send(&capstanv1.SubscribeResponse{
				Shard:         uint32(shard),
				Cursor:        &capstanv1.EventCursor{Index: r.Index, Seq: r.Seq},
				Time:          ts(r.Time),
				RequestId:     r.RequestID,
				PolicyVersion: r.PolicyVersion,
				Event:         eventOf(&r.Event),
			}); err != nil {
				return err
			}
		}
		cursor = page.Next
		if len(page.Records) == eventPage {
			continue // more to catch up on
		}
		if !m.Follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-page.Wait:
		}
	}
}

var _ EventSource = (*cluster.Node)(nil)
