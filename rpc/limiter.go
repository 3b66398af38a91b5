package rpc

import (
	"context"
	"github.com/shopspring/decimal"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// limiter serves capstan.v1.LimiterService.
type limiter struct{ *core }

var _ capstanv1connect.LimiterServiceHandler = limiter{}

// allowFields are the fields Allow, Check, Reserve and Settle share.
type allowFields struct {
	customer, entitlement, value, unit, eventData, overhead string
	caps                                                    map[string]string
}

// allowRequest validates the shared fields; valueRule says which values the
// method accepts.
func (s limiter) allowRequest(ck *check, f allowFields, valueRule sign) engine.AllowRequest {
	ck.id("customer", f.customer)
	ck.id("entitlement", f.entitlement)
	v := ck.amountOrZero("value", f.value, valueRule)
	ck.unit("unit", f.unit)
	ck.eventData("event_data", f.eventData)
	oh := ck.optAmount("overhead", f.overhead, nonNegative)
	var caps []engine.CallCap
	if len(f.caps) > 0 {
		caps = ck.callCaps("caps", f.caps, s.policy())
	}
	return engine.AllowRequest{
		Customer: f.customer, Entitlement: f.entitlement, Value: v, Unit: f.unit,
		EventData: f.eventData, Caps: caps, Overhead: oh,
	}
}

func (s limiter) Allow(ctx context.Context, req *connect.Request[capstanv1.AllowRequest]) (*connect.Response[capstanv1.AllowResponse], error) {
	m := req.Msg
	var ck check
	ar := s.allowRequest(&ck, allowFields{m.Customer, m.Entitlement, m.Value, m.Unit, m.EventData, m.Overhead, m.Caps}, anySign)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	ar.NoEvents, ar.Force = m.NoEvents, m.Force
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{Allow: &ar}, nil)
	if err != nil {
		return nil, err
	}
	d := decisionOf(res.Decision)
	s.metrics.decision("Allow", d.allowed, d.reason)
	return connect.NewResponse(&capstanv1.AllowResponse{
		Allowed: d.allowed, Reason: d.reason, CapId: d.capID, Remaining: d.remaining, ResetsAt: d.resetsAt,
		PolicyVersion: res.PolicyVersion, Events: d.events, Duplicate: res.Duplicate,
	}), nil
}

func (s limiter) Check(ctx context.Context, req *connect.Request[capstanv1.CheckRequest]) (*connect.Response[capstanv1.CheckResponse], error) {
	m := req.Msg
	var ck check
	ar := s.allowRequest(&ck, allowFields{m.Customer, m.Entitlement, m.Value, m.Unit, m.EventData, m.Overhead, m.Caps}, anySign)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	out := &capstanv1.CheckResponse{}
	resp := connect.NewResponse(out)
	a, err := s.read(ctx, routeKey(m.RoutingKey, m.Customer), m.Stale, queryCheck, checkArgs(&ar), out, resp.Header())
	if err != nil {
		return nil, err
	}
	// The version of the policy this very read ran under, not the node's newest.
	out.PolicyVersion = a.PolicyVersion
	s.metrics.decision("Check", out.Allowed, out.Reason)
	return resp, nil
}

// step validates Increment and Decrement.
func (s limiter) step(ck *check, customer, entitlement, eventData, key string, noEvents bool, caps map[string]string) *engine.AllowRequest {
	ck.id("customer", customer)
	ck.id("entitlement", entitlement)
	ck.eventData("event_data", eventData)
	var cc []engine.CallCap
	if len(caps) > 0 {
		cc = ck.callCaps("caps", caps, s.policy())
	}
	ck.optID("idempotency_key", key)
	return &engine.AllowRequest{Customer: customer, Entitlement: entitlement, EventData: eventData, NoEvents: noEvents, Caps: cc}
}

func (s limiter) Increment(ctx context.Context, req *connect.Request[capstanv1.IncrementRequest]) (*connect.Response[capstanv1.IncrementResponse], error) {
	m := req.Msg
	var ck check
	ar := s.step(&ck, m.Customer, m.Entitlement, m.EventData, m.IdempotencyKey, m.NoEvents, m.Caps)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{Increment: ar}, nil)
	if err != nil {
		return nil, err
	}
	d := decisionOf(res.Decision)
	s.metrics.decision("Increment", d.allowed, d.reason)
	return connect.NewResponse(&capstanv1.IncrementResponse{
		Allowed: d.allowed, Reason: d.reason, CapId: d.capID, Remaining: d.remaining, ResetsAt: d.resetsAt,
		PolicyVersion: res.PolicyVersion, Events: d.events, Duplicate: res.Duplicate,
	}), nil
}

func (s limiter) Decrement(ctx context.Context, req *connect.Request[capstanv1.DecrementRequest]) (*connect.Response[capstanv1.DecrementResponse], error) {
	m := req.Msg
	var ck check
	ar := s.step(&ck, m.Customer, m.Entitlement, m.EventData, m.IdempotencyKey, m.NoEvents, m.Caps)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{Decrement: ar}, nil)
	if err != nil {
		return nil, err
	}
	d := decisionOf(res.Decision)
	s.metrics.decision("Decrement", d.allowed, d.reason)
	return connect.NewResponse(&capstanv1.DecrementResponse{
		Allowed: d.allowed, Reason: d.reason, CapId: d.capID, Remaining: d.remaining, ResetsAt: d.resetsAt,
		PolicyVersion: res.PolicyVersion, Events: d.events, Duplicate: res.Duplicate,
	}), nil
}

func (s limiter) Reserve(ctx context.Context, req *connect.Request[capstanv1.ReserveRequest]) (*connect.Response[capstanv1.ReserveResponse], error) {
	m := req.Msg
	var ck check
	ar := s.allowRequest(&ck, allowFields{m.Customer, m.Entitlement, m.Value, m.Unit, m.EventData, m.Overhead, m.Caps}, nonNegative)
	ttl := ck.duration("ttl", m.Ttl)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ar.Segment, ar.Basis = s.estimateKey(&ck, m.Segment, m.Basis)
	quantile := ck.amountOrZero("quantile", m.Quantile, nonNegative)
	if quantile.GreaterThanOrEqual(decimal.NewFromInt(1)) {
		ck.fail("quantile", "must be below 1, got %s", m.Quantile)
	}
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	rr := &engine.ReserveRequest{AllowRequest: ar, Omitted: m.Value == "", TTL: ttl, Quantile: quantile}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{Reserve: rr}, nil)
	if err != nil {
		return nil, err
	}
	d := decisionOf(res.Decision)
	var hold string
	if res.Decision != nil {
		hold = res.Decision.HoldID
	}
	s.metrics.decision("Reserve", d.allowed, d.reason)
	return connect.NewResponse(&capstanv1.ReserveResponse{
		Allowed: d.allowed, Reason: d.reason, CapId: d.capID, HoldId: hold, Remaining: d.remaining,
		ResetsAt: d.resetsAt, PolicyVersion: res.PolicyVersion, Duplicate: res.Duplicate,
	}), nil
}

func (s limiter) Settle(ctx context.Context, req *connect.Request[capstanv1.SettleRequest]) (*connect.Response[capstanv1.SettleResponse], error) {
	m := req.Msg
	var ck check
	ar := s.allowRequest(&ck, allowFields{m.Customer, m.Entitlement, m.Value, m.Unit, m.EventData, m.Overhead, nil}, anySign)
	ck.id("hold_id", m.HoldId)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ar.Segment, ar.Basis = s.estimateKey(&ck, m.Segment, m.Basis)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	ar.NoEvents = m.NoEvents
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{Settle: &fsm.SettleOp{HoldID: m.HoldId, AllowRequest: ar}}, nil)
	if err != nil {
		return nil, err
	}
	d := decisionOf(res.Decision)
	s.metrics.decision("Settle", d.allowed, d.reason)
	return connect.NewResponse(&capstanv1.SettleResponse{
		Allowed: d.allowed, Reason: d.reason, CapId: d.capID, Remaining: d.remaining, ResetsAt: d.resetsAt,
		PolicyVersion: res.PolicyVersion, Events: d.events, Duplicate: res.Duplicate,
	}), nil
}

func (s limiter) Release(ctx context.Context, req *connect.Request[capstanv1.ReleaseRequest]) (*connect.Response[capstanv1.ReleaseResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("entitlement", m.Entitlement)
	ck.id("hold_id", m.HoldId)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &fsm.ReleaseOp{Customer: m.Customer, Entitlement: m.Entitlement, HoldID: m.HoldId}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{Release: op}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.ReleaseResponse{Released: res.Released, Duplicate: res.Duplicate}), nil
}

func (s limiter) GetUsage(ctx context.Context, req *connect.Request[capstanv1.GetUsageRequest]) (*connect.Response[capstanv1.GetUsageResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("entitlement", m.Entitlement)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	out := &capstanv1.GetUsageResponse{}
	resp := connect.NewResponse(out)
	args := &capstanv1.GetUsageRequest{Customer: m.Customer, Entitlement: m.Entitlement}
	if _, err := s.read(ctx, routeKey(m.RoutingKey, m.Customer), m.Stale, queryUsage, protoArgs(args), out, resp.Header()); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s limiter) GetCustomerCap(ctx context.Context, req *connect.Request[capstanv1.GetCustomerCapRequest]) (*connect.Response[capstanv1.GetCustomerCapResponse], error) {
	m := req.Msg
	resp := connect.NewResponse(&capstanv1.GetCustomerCapResponse{})
	cp, err := s.getCap(ctx, m.Customer, m.CapId, m.RoutingKey, m.Stale, resp.Header())
	if err != nil {
		return nil, err
	}
	resp.Msg.Cap = cp
	return resp, nil
}

// getCap is the cap read both LimiterService and CustomerService offer.
func (c *core) getCap(ctx context.Context, customer, capID, routingKey string, stale bool, header interface{ Set(string, string) }) (*capstanv1.Cap, error) {
	var ck check
	ck.id("customer", customer)
	ck.id("cap_id", capID)
	ck.optID("routing_key", routingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	out := &capstanv1.Cap{}
	if _, err := c.read(ctx, routeKey(routingKey, customer), stale, queryCap, protoArgs(&capstanv1.GetCapRequest{Customer: customer, CapId: capID}), out, header); err != nil {
		return nil, err
	}
	return out, nil
}

func (s limiter) estimateKey(ck *check, segment, basis string) (string, *decimal.Decimal) {
	if segment != "" {
		ck.id("segment", segment)
	}
	return segment, ck.optAmount("basis", basis, nonNegative)
}
