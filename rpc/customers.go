package rpc

import (
	"context"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// customers serves capstan.v1.CustomerService.
type customers struct{ *core }

var _ capstanv1connect.CustomerServiceHandler = customers{}

func (s customers) CreateCustomer(ctx context.Context, req *connect.Request[capstanv1.CreateCustomerRequest]) (*connect.Response[capstanv1.CreateCustomerResponse], error) {
	m := req.Msg
	var ck check
	ck.id("id", m.Id)
	ck.optID("plan", m.Plan)
	ck.plan("plan", m.Plan, s.policy())
	ck.text("type", m.Type)
	ck.text("label", m.Label)
	ck.ids("refs", m.Refs)
	ck.ids("alt_ids", m.AltIds)
	ck.metadata("metadata", m.Metadata)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &engine.CreateCustomerRequest{
		ID: m.Id, Plan: m.Plan, Type: m.Type, Label: m.Label, Refs: m.Refs, Alts: m.AltIds,
	}
	if len(m.Metadata) > 0 {
		op.Metadata = m.Metadata
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Id), m.IdempotencyKey, &fsm.Command{CreateCustomer: op}, map[string]string{"alts": "alt_ids"})
	if err != nil {
		return nil, err
	}
	c, err := s.customer(ctx, m.Id, routeKey(m.RoutingKey, m.Id), false, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.CreateCustomerResponse{Customer: c, Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

// customer reads one customer (id or alt id); NotFound when there is none.
func (c *core) customer(ctx context.Context, id, key string, stale bool, header interface{ Set(string, string) }) (*capstanv1.Customer, error) {
	out := &capstanv1.Customer{}
	if _, err := c.read(ctx, key, stale, queryCustomer, protoArgs(&capstanv1.GetCustomerRequest{Id: id}), out, header); err != nil {
		return nil, err
	}
	return out, nil
}

func (s customers) GetCustomer(ctx context.Context, req *connect.Request[capstanv1.GetCustomerRequest]) (*connect.Response[capstanv1.GetCustomerResponse], error) {
	m := req.Msg
	var ck check
	ck.id("id", m.Id)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	resp := connect.NewResponse(&capstanv1.GetCustomerResponse{})
	c, err := s.customer(ctx, m.Id, routeKey(m.RoutingKey, m.Id), m.Stale, resp.Header())
	if err != nil {
		return nil, err
	}
	resp.Msg.Customer = c
	return resp, nil
}

func (s customers) DeleteCustomer(ctx context.Context, req *connect.Request[capstanv1.DeleteCustomerRequest]) (*connect.Response[capstanv1.DeleteCustomerResponse], error) {
	m := req.Msg
	var ck check
	ck.id("id", m.Id)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Id), m.IdempotencyKey, &fsm.Command{DeleteCustomer: &fsm.CustomerOp{Customer: m.Id}}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.DeleteCustomerResponse{Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) SetPlan(ctx context.Context, req *connect.Request[capstanv1.SetPlanRequest]) (*connect.Response[capstanv1.SetPlanResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("plan", m.Plan)
	ck.plan("plan", m.Plan, s.policy())
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &fsm.SetPlanOp{Customer: m.Customer, Plan: m.Plan, OverwriteMeters: m.OverwriteMeters}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{SetPlan: op}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.SetPlanResponse{Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) SetRefs(ctx context.Context, req *connect.Request[capstanv1.SetRefsRequest]) (*connect.Response[capstanv1.SetRefsResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.ids("refs", m.Refs)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{SetRefs: &fsm.SetRefsOp{Customer: m.Customer, Refs: m.Refs}}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.SetRefsResponse{Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) SetMetadata(ctx context.Context, req *connect.Request[capstanv1.SetMetadataRequest]) (*connect.Response[capstanv1.SetMetadataResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.metadata("metadata", m.Metadata)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &fsm.SetMetadataOp{Customer: m.Customer, Metadata: m.Metadata}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{SetMetadata: op}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.SetMetadataResponse{Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) SetAltId(ctx context.Context, req *connect.Request[capstanv1.SetAltIdRequest]) (*connect.Response[capstanv1.SetAltIdResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("alt_id", m.AltId)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &fsm.AltOp{Customer: m.Customer, Alt: m.AltId}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{SetAltID: op}, map[string]string{"alt": "alt_id"})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.SetAltIdResponse{Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) DeleteAltId(ctx context.Context, req *connect.Request[capstanv1.DeleteAltIdRequest]) (*connect.Response[capstanv1.DeleteAltIdResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("alt_id", m.AltId)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &fsm.AltOp{Customer: m.Customer, Alt: m.AltId}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{DeleteAltID: op}, map[string]string{"alt": "alt_id"})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.DeleteAltIdResponse{Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) CreateOverride(ctx context.Context, req *connect.Request[capstanv1.CreateOverrideRequest]) (*connect.Response[capstanv1.CreateOverrideResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("entitlement", m.Entitlement)
	expires := ck.instant("expires_on", m.ExpiresOn)
	ck.optID("credit", m.Credit)
	ck.currency("credit", m.Credit, s.policy())
	switch m.Mode {
	case "", engine.ModeHard, engine.ModeSoft, engine.ModeObserve:
	default:
		ck.fail("mode", "unknown mode %q (want hard, soft or observe)", m.Mode)
	}
	value := ck.optAmount("value", m.Value, nonNegative)
	inc := ck.optAmount("increment", m.Increment, anySign)
	resetInc := ck.duration("reset_inc", m.ResetInc)
	ck.schedule("reset_sch", m.ResetSch)
	if resetInc != 0 && m.ResetSch != "" {
		ck.fail("reset_sch", "reset_inc and reset_sch are mutually exclusive")
	}
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &engine.OverrideRequest{
		Customer: m.Customer, Entitlement: m.Entitlement, Expires: expires, Credit: m.Credit, Mode: m.Mode,
		Value: value, Increment: inc, Resets: m.Resets, ResetInc: resetInc, ResetSch: m.ResetSch,
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{CreateOverride: op}, map[string]string{"expires": "expires_on"})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.CreateOverrideResponse{Limit: limitOf(res.Limit), Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) RemoveOverride(ctx context.Context, req *connect.Request[capstanv1.RemoveOverrideRequest]) (*connect.Response[capstanv1.RemoveOverrideResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("entitlement", m.Entitlement)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &fsm.OverrideOp{Customer: m.Customer, Entitlement: m.Entitlement}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{RemoveOverride: op}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.RemoveOverrideResponse{Removed: res.Released, Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) ApplyTopup(ctx context.Context, req *connect.Request[capstanv1.ApplyTopupRequest]) (*connect.Response[capstanv1.ApplyTopupResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("topup", m.Topup)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{ApplyTopup: &fsm.TopupOp{Customer: m.Customer, Topup: m.Topup}}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.ApplyTopupResponse{Grant: grantOf(res.Grant), Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) Grant(ctx context.Context, req *connect.Request[capstanv1.GrantRequest]) (*connect.Response[capstanv1.GrantResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.optID("grant_id", m.GrantId)
	ck.id("credit", m.Credit)
	ck.currency("credit", m.Credit, s.policy())
	value := ck.amount("value", m.Value, positive)
	expires := ck.instant("expires_on", m.ExpiresOn)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &engine.GrantRequest{Customer: m.Customer, ID: m.GrantId, Credit: m.Credit, Value: value, ExpiresOn: expires}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{Grant: op}, map[string]string{"id": "grant_id"})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.GrantResponse{Grant: grantOf(res.Grant), Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) CreditRemaining(ctx context.Context, req *connect.Request[capstanv1.CreditRemainingRequest]) (*connect.Response[capstanv1.CreditRemainingResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("credit", m.Credit)
	ck.currency("credit", m.Credit, s.policy())
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	out := &capstanv1.CreditRemainingResponse{}
	resp := connect.NewResponse(out)
	args := &capstanv1.CreditRemainingRequest{Customer: m.Customer, Credit: m.Credit}
	if _, err := s.read(ctx, routeKey(m.RoutingKey, m.Customer), m.Stale, queryCredit, protoArgs(args), out, resp.Header()); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s customers) AddCap(ctx context.Context, req *connect.Request[capstanv1.AddCapRequest]) (*connect.Response[capstanv1.AddCapResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.optID("cap_id", m.CapId)
	value := ck.amount("value", m.Value, nonNegative)
	ck.optID("credit", m.Credit)
	ck.currency("credit", m.Credit, s.policy())
	ck.ids("shared_with", m.SharedWith)
	ck.ids("scope", m.Scope)
	resetInc := ck.duration("reset_inc", m.ResetInc)
	ck.schedule("reset_sch", m.ResetSch)
	if resetInc != 0 && m.ResetSch != "" {
		ck.fail("reset_sch", "reset_inc and reset_sch are mutually exclusive")
	}
	expires := ck.instant("expires_on", m.ExpiresOn)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	op := &engine.AddCapRequest{
		Customer: m.Customer, CapID: m.CapId, Value: value, Credit: m.Credit, Exchangeable: m.Exchangeable,
		OverageOnly: m.OverageOnly, IgnoreGrants: m.IgnoreGrants, ObserveOnly: m.ObserveOnly,
		OverheadCost: m.OverheadCost, FollowDecrements: m.FollowDecrements, HardTrailing: m.HardTrailing,
		Shared: m.Shared, SharedWith: m.SharedWith, Scope: m.Scope,
		Resets: m.Resets, ResetInc: resetInc, ResetSch: m.ResetSch, ExpiresOn: expires,
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{AddCap: op}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.AddCapResponse{Cap: capOf(m.Customer, res.Cap), Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) GetCap(ctx context.Context, req *connect.Request[capstanv1.GetCapRequest]) (*connect.Response[capstanv1.GetCapResponse], error) {
	m := req.Msg
	resp := connect.NewResponse(&capstanv1.GetCapResponse{})
	cp, err := s.getCap(ctx, m.Customer, m.CapId, m.RoutingKey, m.Stale, resp.Header())
	if err != nil {
		return nil, err
	}
	resp.Msg.Cap = cp
	return resp, nil
}

func (s customers) ResetCap(ctx context.Context, req *connect.Request[capstanv1.ResetCapRequest]) (*connect.Response[capstanv1.ResetCapResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("cap_id", m.CapId)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{ResetCap: &fsm.CapOp{Customer: m.Customer, CapID: m.CapId}}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.ResetCapResponse{Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) RemoveCap(ctx context.Context, req *connect.Request[capstanv1.RemoveCapRequest]) (*connect.Response[capstanv1.RemoveCapResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.id("cap_id", m.CapId)
	ck.optID("idempotency_key", m.IdempotencyKey)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	res, err := s.apply(ctx, routeKey(m.RoutingKey, m.Customer), m.IdempotencyKey, &fsm.Command{RemoveCap: &fsm.CapOp{Customer: m.Customer, CapID: m.CapId}}, nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&capstanv1.RemoveCapResponse{Events: eventsOf(res.Events), Duplicate: res.Duplicate}), nil
}

func (s customers) ListCaps(ctx context.Context, req *connect.Request[capstanv1.ListCapsRequest]) (*connect.Response[capstanv1.ListCapsResponse], error) {
	m := req.Msg
	var ck check
	ck.id("customer", m.Customer)
	ck.optID("routing_key", m.RoutingKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	out := &capstanv1.ListCapsResponse{}
	resp := connect.NewResponse(out)
	if _, err := s.read(ctx, routeKey(m.RoutingKey, m.Customer), m.Stale, queryCaps, protoArgs(&capstanv1.ListCapsRequest{Customer: m.Customer}), out, resp.Header()); err != nil {
		return nil, err
	}
	return resp, nil
}
