package rpc

import (
	"context"
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/capstanhq/capstan/cluster"
	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
)

// Reads run wherever the shard can answer them (its leader, or any replica for
// stale reads), so each is a registered query: a kind, encoded arguments (the
// API request, or for Check the validated allow as an fsm command) and an
// encoded answer (the API response). Every node registers the same set through
// Queries; the handlers only validate, call the query and set labels.

// Query kinds.
const (
	queryCheck    = "capstan.v1.check"
	queryUsage    = "capstan.v1.usage"
	queryCap      = "capstan.v1.cap"
	queryCustomer = "capstan.v1.customer"
	queryCredit   = "capstan.v1.credit_remaining"
	queryCaps     = "capstan.v1.list_caps"
)

// Headers labelling how a read was served.
const (
	// ReadHeader is "stale" when the answer came from a replica without
	// confirming leadership, else "linearizable".
	ReadHeader = "Capstan-Read"
	// ReadNodeHeader names the node that answered a read and ReadIndexHeader the
	// shard's applied index it saw.
	ReadNodeHeader  = "Capstan-Read-Node"
	ReadIndexHeader = "Capstan-Read-Index"
)

// Queries returns the reads every node must register (cluster.Config.Queries).
func Queries() map[string]cluster.QueryFunc {
	return map[string]cluster.QueryFunc{
		queryCheck:    wrapQuery(runCheck),
		queryUsage:    protoQuery(func() *capstanv1.GetUsageRequest { return new(capstanv1.GetUsageRequest) }, runUsage),
		queryCap:      protoQuery(func() *capstanv1.GetCapRequest { return new(capstanv1.GetCapRequest) }, runCap),
		queryCustomer: protoQuery(func() *capstanv1.GetCustomerRequest { return new(capstanv1.GetCustomerRequest) }, runCustomer),
		queryCredit:   protoQuery(func() *capstanv1.CreditRemainingRequest { return new(capstanv1.CreditRemainingRequest) }, runCredit),
		queryCaps:     protoQuery(func() *capstanv1.ListCapsRequest { return new(capstanv1.ListCapsRequest) }, runListCaps),
	}
}

// wrapQuery adapts a read to a cluster.QueryFunc. Errors are mapped to Connect
// errors here, so their codes travel between nodes.
func wrapQuery(run func(e *engine.Engine, now int64, args []byte) (proto.Message, error)) cluster.QueryFunc {
	return func(e *engine.Engine, now int64, args []byte) ([]byte, error) {
		out, err := run(e, now, args)
		if err != nil {
			return nil, toConnect(err)
		}
		return proto.Marshal(out)
	}
}

// protoQuery is wrapQuery for reads whose arguments are an API request.
func protoQuery[M proto.Message](newM func() M, run func(e *engine.Engine, now int64, m M) (proto.Message, error)) cluster.QueryFunc {
	return wrapQuery(func(e *engine.Engine, now int64, args []byte) (proto.Message, error) {
		m := newM()
		if err := proto.Unmarshal(args, m); err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("query arguments: %w", err))
		}
		return run(e, now, m)
	})
}

// runCheck's arguments are the validated allow, as an fsm command.
func runCheck(e *engine.Engine, now int64, args []byte) (proto.Message, error) {
	c, err := fsm.DecodeCommand(args)
	if err != nil || c.Allow == nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("check arguments: not an allow (%v)", err))
	}
	d, err := e.Check(now, *c.Allow)
	if err != nil {
		return nil, err
	}
	out := decisionOf(&d)
	return &capstanv1.CheckResponse{Allowed: out.allowed, Reason: out.reason, CapId: out.capID, Remaining: out.remaining, ResetsAt: out.resetsAt}, nil
}

func runUsage(e *engine.Engine, now int64, m *capstanv1.GetUsageRequest) (proto.Message, error) {
	return &capstanv1.GetUsageResponse{Usage: usageOf(m.Entitlement, e.Read(now, m.Customer, m.Entitlement))}, nil
}

func runCap(e *engine.Engine, now int64, m *capstanv1.GetCapRequest) (proto.Message, error) {
	v, err := e.GetCap(now, m.Customer, m.CapId)
	if err != nil {
		return nil, err
	}
	return capViewOf(e.Customer(m.Customer).ID, v), nil
}

func runCustomer(e *engine.Engine, now int64, m *capstanv1.GetCustomerRequest) (proto.Message, error) {
	cu := e.Customer(m.Id)
	if cu == nil {
		return nil, connect.NewError(connect.CodeNotFound, errorString("customer \""+m.Id+"\" not found"))
	}
	return customerOf(e, now, cu)
}

func runCredit(e *engine.Engine, now int64, m *capstanv1.CreditRemainingRequest) (proto.Message, error) {
	v, err := e.CreditRemaining(now, m.Customer, m.Credit)
	if err != nil {
		return nil, err
	}
	return &capstanv1.CreditRemainingResponse{Value: v.String()}, nil
}

func runListCaps(e *engine.Engine, now int64, m *capstanv1.ListCapsRequest) (proto.Message, error) {
	views, err := e.ListCaps(now, m.Customer)
	if err != nil {
		return nil, err
	}
	out := &capstanv1.ListCapsResponse{}
	id := e.Customer(m.Customer).ID
	for _, v := range views {
		out.Caps = append(out.Caps, capViewOf(id, v))
	}
	return out, nil
}

// checkArgs encodes Check's validated allow for the check query.
func checkArgs(ar *engine.AllowRequest) []byte {
	b, _ := fsm.EncodeCommand(&fsm.Command{Allow: ar})
	return b
}

// protoArgs encodes an API request as query arguments.
func protoArgs(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	return b
}

// read runs a registered query for the shard of key and decodes its answer
// into out; the answer's origin labels header.
func (c *core) read(ctx context.Context, key string, stale bool, kind string, args []byte, out proto.Message, header interface{ Set(string, string) }) (cluster.Answer, error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	a, err := c.backend.Query(ctx, key, stale, kind, args)
	if err != nil {
		return a, toConnect(err)
	}
	if err := proto.Unmarshal(a.Result, out); err != nil {
		return a, connect.NewError(connect.CodeInternal, fmt.Errorf("read answer: %w", err))
	}
	if header != nil {
		mode := "linearizable"
		if a.Stale {
			mode = "stale"
		}
		header.Set(ReadHeader, mode)
		if a.Node != "" {
			header.Set(ReadNodeHeader, a.Node)
		}
		header.Set(ReadIndexHeader, strconv.FormatUint(a.AppliedIndex, 10))
	}
	return a, nil
}
