package fsm

import (
	"fmt"

	"github.com/shopspring/decimal"

	"github.com/capstanhq/capstan/engine"
	fsmv1 "github.com/capstanhq/capstan/internal/gen/capstan/fsm/v1"
)

func resultToPB(r *Result) *fsmv1.Result {
	p := &fsmv1.Result{
		Index: r.Index, TimestampMs: r.Timestamp, PolicyVersion: r.PolicyVersion,
		Released: r.Released, Duplicate: r.Duplicate,
	}
	if r.Decision != nil {
		p.Decision = decisionToPB(r.Decision)
	}
	if r.Cap != nil {
		p.Cap = capToPB(r.Cap)
	}
	if r.Grant != nil {
		p.Grant = grantToPB(r.Grant)
	}
	if r.Limit != nil {
		p.Limit = limitToPB(r.Limit)
	}
	p.Events = eventsToPB(r.Events)
	if r.Err != nil {
		p.Error = &fsmv1.Error{Code: fsmv1.ErrorCode(r.Err.Code), Field: r.Err.Field, Message: r.Err.Message}
	}
	return p
}

func resultFromPB(p *fsmv1.Result) (*Result, error) {
	r := &Result{
		Index: p.Index, Timestamp: p.TimestampMs, PolicyVersion: p.PolicyVersion,
		Released: p.Released, Duplicate: p.Duplicate,
	}
	var err error
	if p.Decision != nil {
		if r.Decision, err = decisionFromPB(p.Decision); err != nil {
			return nil, err
		}
	}
	if p.Cap != nil {
		if r.Cap, err = capFromPB(p.Cap); err != nil {
			return nil, err
		}
	}
	if p.Grant != nil {
		if r.Grant, err = grantFromPB(p.Grant); err != nil {
			return nil, err
		}
	}
	if p.Limit != nil {
		if r.Limit, err = limitFromPB(p.Limit); err != nil {
			return nil, err
		}
	}
	if r.Events, err = eventsFromPB(p.Events); err != nil {
		return nil, err
	}
	if p.Error != nil {
		r.Err = &Error{Code: ErrorCode(p.Error.Code), Field: p.Error.Field, Message: p.Error.Message}
	}
	return r, nil
}

func decisionToPB(d *engine.Decision) *fsmv1.Decision {
	return &fsmv1.Decision{
		Allowed: d.Allowed, Reason: d.Reason, CapId: d.CapID, Remaining: decPtrOut(d.Remaining),
		ResetsAtMs: d.ResetsAt, HoldId: d.HoldID, Events: eventsToPB(d.Events),
	}
}

func decisionFromPB(p *fsmv1.Decision) (*engine.Decision, error) {
	d := &engine.Decision{Allowed: p.Allowed, Reason: p.Reason, CapID: p.CapId, ResetsAt: p.ResetsAtMs, HoldID: p.HoldId}
	var err error
	if d.Remaining, err = parseDecPtr("remaining", p.Remaining, maxResultDecimalText); err != nil {
		return nil, err
	}
	if d.Events, err = eventsFromPB(p.Events); err != nil {
		return nil, err
	}
	return d, nil
}

func eventsToPB(evs []engine.Event) []*fsmv1.Event {
	if len(evs) == 0 {
		return nil
	}
	out := make([]*fsmv1.Event, len(evs))
	for i := range evs {
		ev := &evs[i]
		p := &fsmv1.Event{
			Type: ev.Type, Customer: ev.Customer, Caller: ev.Caller, Entitlement: ev.Entitlement,
			Plan: ev.Plan, Credit: ev.Credit,
			Remaining: decPtrOut(ev.Remaining), Overage: decPtrOut(ev.Overage),
			GrantValueApplied: decPtrOut(ev.GrantValueApplied), InvalidValue: decPtrOut(ev.InvalidValue),
			PriceDiff: decPtrOut(ev.PriceDiff), OveragePrice: decPtrOut(ev.OveragePrice),
			CapId: ev.CapID, Topup: ev.Topup, PreviousPlan: ev.PreviousPlan, NewPlan: ev.NewPlan,
			EventData: ev.EventData, Notification: ev.Notification,
		}
		if m := ev.Meter; m != nil {
			p.Meter = &fsmv1.MeterSnapshot{
				Old: decOut(m.Old), Value: decOut(m.Value), Limit: decOut(m.Limit), Diff: decOut(m.Diff),
				Overhead: decOut(m.Overhead), OverheadDiff: decOut(m.OverheadDiff), Invalid: decPtrOut(m.Invalid),
			}
		}
		if c := ev.Cap; c != nil {
			p.Cap = &fsmv1.CapSnapshot{
				Id: c.ID, Credit: c.Credit, Value: decOut(c.Value), MeterValue: decOut(c.MeterValue),
				Requested: decPtrOut(c.Requested),
			}
		}
		if g := ev.Governor; g != nil {
			p.Governor = &fsmv1.GovernorSnapshot{Tokens: decOut(g.Tokens), Capacity: decOut(g.Capacity), Requested: decOut(g.Requested)}
		}
		out[i] = p
	}
	return out
}

// decs parses a list of result amounts, stopping at the first error.
type decs struct{ err error }

func (d *decs) val(field, s string) (v decimal.Decimal) {
	if d.err != nil {
		return v
	}
	v, d.err = parseDec(field, s, maxResultDecimalText)
	return v
}

func (d *decs) ptr(field string, s *string) (v *decimal.Decimal) {
	if d.err != nil {
		return nil
	}
	v, d.err = parseDecPtr(field, s, maxResultDecimalText)
	return v
}

func eventsFromPB(ps []*fsmv1.Event) ([]engine.Event, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	out := make([]engine.Event, len(ps))
	var d decs
	for i, p := range ps {
		ev := engine.Event{
			Type: p.Type, Customer: p.Customer, Caller: p.Caller, Entitlement: p.Entitlement,
			Plan: p.Plan, Credit: p.Credit,
			Remaining: d.ptr("remaining", p.Remaining), Overage: d.ptr("overage", p.Overage),
			GrantValueApplied: d.ptr("grant_value_applied", p.GrantValueApplied),
			InvalidValue:      d.ptr("invalid_value", p.InvalidValue),
			PriceDiff:         d.ptr("price_diff", p.PriceDiff), OveragePrice: d.ptr("overage_price", p.OveragePrice),
			CapID: p.CapId, Topup: p.Topup, PreviousPlan: p.PreviousPlan, NewPlan: p.NewPlan,
			EventData: p.EventData, Notification: p.Notification,
		}
		if m := p.Meter; m != nil {
			ev.Meter = &engine.MeterSnapshot{
				Old: d.val("meter.old", m.Old), Value: d.val("meter.value", m.Value), Limit: d.val("meter.limit", m.Limit),
				Diff: d.val("meter.diff", m.Diff), Overhead: d.val("meter.overhead", m.Overhead),
				OverheadDiff: d.val("meter.overhead_diff", m.OverheadDiff), Invalid: d.ptr("meter.invalid", m.Invalid),
			}
		}
		if c := p.Cap; c != nil {
			ev.Cap = &engine.CapSnapshot{
				ID: c.Id, Credit: c.Credit, Value: d.val("cap.value", c.Value), MeterValue: d.val("cap.meter_value", c.MeterValue),
				Requested: d.ptr("cap.requested", c.Requested),
			}
		}
		if g := p.Governor; g != nil {
			ev.Governor = &engine.GovernorSnapshot{
				Tokens: d.val("governor.tokens", g.Tokens), Capacity: d.val("governor.capacity", g.Capacity),
				Requested: d.val("governor.requested", g.Requested),
			}
		}
		if d.err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, d.err)
		}
		out[i] = ev
	}
	return out, nil
}

func periodToPB(p engine.Period) *fsmv1.Period {
	if p.Inc == 0 && p.Sch == nil {
		return nil
	}
	return &fsmv1.Period{IncMs: p.Inc, Sch: p.ResetSch()}
}

func periodFromPB(p *fsmv1.Period) (engine.Period, error) {
	if p == nil {
		return engine.Period{}, nil
	}
	out := engine.Period{Inc: p.IncMs}
	if p.Sch != "" {
		s, err := engine.ParseSchedule(p.Sch)
		if err != nil {
			return engine.Period{}, fmt.Errorf("period: %w", err)
		}
		out.Sch = &s
	}
	return out, nil
}

func capToPB(c *engine.Cap) *fsmv1.Cap {
	return &fsmv1.Cap{
		Id: c.ID, Credit: c.Credit, Value: decOut(c.Value), MeterValue: decOut(c.MeterValue),
		Exchangeable: c.Exchangeable, OverageOnly: c.OverageOnly, IgnoreGrants: c.IgnoreGrants,
		ObserveOnly: c.ObserveOnly, OverheadCost: c.OverheadCost, FollowDecrements: c.FollowDecrements,
		HardTrailing: c.HardTrailing, Shared: c.Shared, SharedWith: c.SharedWith,
		Scope: c.Scope, ScopeSet: c.Scope != nil, Period: periodToPB(c.Period),
		CreatedOnMs: c.Created, StartedMs: c.Started, ExpiresOnMs: c.ExpiresOn,
	}
}

func capFromPB(p *fsmv1.Cap) (*engine.Cap, error) {
	var d decs
	c := &engine.Cap{
		ID: p.Id, Credit: p.Credit, Value: d.val("cap.value", p.Value), MeterValue: d.val("cap.meter_value", p.MeterValue),
		Exchangeable: p.Exchangeable, OverageOnly: p.OverageOnly, IgnoreGrants: p.IgnoreGrants,
		ObserveOnly: p.ObserveOnly, OverheadCost: p.OverheadCost, FollowDecrements: p.FollowDecrements,
		HardTrailing: p.HardTrailing, Shared: p.Shared, SharedWith: p.SharedWith, Scope: p.Scope,
		Created: p.CreatedOnMs, Started: p.StartedMs, ExpiresOn: p.ExpiresOnMs,
	}
	if d.err != nil {
		return nil, d.err
	}
	if p.ScopeSet && c.Scope == nil {
		c.Scope = []string{}
	}
	var err error
	if c.Period, err = periodFromPB(p.Period); err != nil {
		return nil, fmt.Errorf("cap: %w", err)
	}
	return c, nil
}

func grantToPB(g *engine.Grant) *fsmv1.Grant {
	return &fsmv1.Grant{
		Id: g.ID, Credit: g.Credit, Topup: g.Topup, CreatedOnMs: g.Created,
		StartingValue: decOut(g.Starting), Value: decOut(g.Value), ExpiresOnMs: g.ExpiresOn,
		Period: periodToPB(g.Period), StartedMs: g.Started, ResetMode: g.ResetMode,
		RolloverMin: decPtrOut(g.RolloverMin), RolloverMax: decPtrOut(g.RolloverMax),
		RolloverPct: decPtrOut(g.RolloverPct), MaxBalance: decPtrOut(g.MaxBalance),
		ResetCatchupCap: g.CatchupCap,
	}
}

func grantFromPB(p *fsmv1.Grant) (*engine.Grant, error) {
	var d decs
	g := &engine.Grant{
		ID: p.Id, Credit: p.Credit, Topup: p.Topup, Created: p.CreatedOnMs,
		Starting: d.val("grant.starting_value", p.StartingValue), Value: d.val("grant.value", p.Value),
		ExpiresOn: p.ExpiresOnMs, Started: p.StartedMs, ResetMode: p.ResetMode,
		RolloverMin: d.ptr("grant.rollover_min", p.RolloverMin), RolloverMax: d.ptr("grant.rollover_max", p.RolloverMax),
		RolloverPct: d.ptr("grant.rollover_pct", p.RolloverPct), MaxBalance: d.ptr("grant.max_balance", p.MaxBalance),
		CatchupCap: p.ResetCatchupCap,
	}
	if d.err != nil {
		return nil, d.err
	}
	var err error
	if g.Period, err = periodFromPB(p.Period); err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	return g, nil
}

func limitToPB(l *engine.Limit) *fsmv1.Limit {
	p := &fsmv1.Limit{
		Credit: l.Credit, Mode: l.Mode, Value: decOut(l.Value), Increment: decOut(l.Increment),
		Minimum: decPtrOut(l.Minimum), HardTrailing: l.HardTrailing, GrantsApply: l.GrantsApply,
		Period: periodToPB(l.Period), OverrideExpiresOnMs: l.OverrideExpiresOn, EwmaAlpha: decOut(l.EWMAAlpha),
	}
	if g := l.Governor; g != nil {
		p.Governor = &fsmv1.Governor{Capacity: decOut(g.Capacity), RefillPerMs: decOut(g.RefillPerMs)}
	}
	return p
}

func limitFromPB(p *fsmv1.Limit) (*engine.Limit, error) {
	var d decs
	l := &engine.Limit{
		Credit: p.Credit, Mode: p.Mode, Value: d.val("limit.value", p.Value), Increment: d.val("limit.increment", p.Increment),
		Minimum: d.ptr("limit.minimum", p.Minimum), HardTrailing: p.HardTrailing, GrantsApply: p.GrantsApply,
		OverrideExpiresOn: p.OverrideExpiresOnMs, EWMAAlpha: d.val("limit.ewma_alpha", p.EwmaAlpha),
	}
	if g := p.Governor; g != nil {
		l.Governor = &engine.Governor{Capacity: d.val("limit.governor.capacity", g.Capacity), RefillPerMs: d.val("limit.governor.refill_per_ms", g.RefillPerMs)}
	}
	if d.err != nil {
		return nil, d.err
	}
	var err error
	if l.Period, err = periodFromPB(p.Period); err != nil {
		return nil, fmt.Errorf("limit: %w", err)
	}
	return l, nil
}
