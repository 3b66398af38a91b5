package rpc

import (
	"fmt"
	"sort"
	"time"

	"github.com/capstanhq/capstan/engine"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/shopspring/decimal"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Conversions from engine values to API messages. Amounts become decimal
// strings; instants (Unix ms, 0 = never) become Timestamps (nil = never).

var thousand = decimal.NewFromInt(1000)

func ts(ms int64) *timestamppb.Timestamp {
	if ms == 0 {
		return nil
	}
	return timestamppb.New(time.UnixMilli(ms).UTC())
}

func decStr(d *decimal.Decimal) string {
	if d == nil {
		return ""
	}
	return d.String()
}

func durationStr(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return fmt.Sprintf("%dms", ms)
}

// decision is the part every decision response shares.
type decision struct {
	allowed   bool
	reason    string
	capID     string
	remaining string
	resetsAt  *timestamppb.Timestamp
	events    []*capstanv1.Event
}

func decisionOf(d *engine.Decision) decision {
	if d == nil {
		return decision{}
	}
	return decision{
		allowed:   d.Allowed,
		reason:    d.Reason,
		capID:     d.CapID,
		remaining: decStr(d.Remaining),
		resetsAt:  ts(d.ResetsAt),
		events:    eventsOf(d.Events),
	}
}

func eventsOf(evs []engine.Event) []*capstanv1.Event {
	if len(evs) == 0 {
		return nil
	}
	out := make([]*capstanv1.Event, len(evs))
	for i := range evs {
		out[i] = eventOf(&evs[i])
	}
	return out
}

func eventOf(ev *engine.Event) *capstanv1.Event {
	pe := &capstanv1.Event{
		Type:              ev.Type,
		Customer:          ev.Customer,
		Caller:            ev.Caller,
		Entitlement:       ev.Entitlement,
		Plan:              ev.Plan,
		Credit:            ev.Credit,
		Remaining:         decStr(ev.Remaining),
		Overage:           decStr(ev.Overage),
		GrantValueApplied: decStr(ev.GrantValueApplied),
		InvalidValue:      decStr(ev.InvalidValue),
		PriceDiff:         decStr(ev.PriceDiff),
		OveragePrice:      decStr(ev.OveragePrice),
		CapId:             ev.CapID,
		Topup:             ev.Topup,
		PreviousPlan:      ev.PreviousPlan,
		NewPlan:           ev.NewPlan,
		EventData:         ev.EventData,
		Notification:      ev.Notification,
	}
	if m := ev.Meter; m != nil {
		pe.Meter = &capstanv1.EventMeter{
			Old: m.Old.String(), Value: m.Value.String(), Limit: m.Limit.String(), Diff: m.Diff.String(),
			Overhead: m.Overhead.String(), OverheadDiff: m.OverheadDiff.String(), Invalid: decStr(m.Invalid),
		}
	}
	if c := ev.Cap; c != nil {
		pe.Cap = &capstanv1.EventCap{
			Id: c.ID, Credit: c.Credit, Value: c.Value.String(), MeterValue: c.MeterValue.String(),
			Requested: decStr(c.Requested),
		}
	}
	if g := ev.Governor; g != nil {
		pe.Governor = &capstanv1.EventGovernor{
			Tokens: g.Tokens.String(), Capacity: g.Capacity.String(), Requested: g.Requested.String(),
		}
	}
	return pe
}

// usageOf converts a read. Rates are per second (the engine keeps per ms).
func usageOf(entitlement string, u engine.Usage) *capstanv1.Usage {
	pu := &capstanv1.Usage{Found: u.Found, Reason: u.Reason, Entitlement: entitlement}
	if !u.Found {
		return pu
	}
	pu.Limited = u.Limited
	if !u.Limited {
		return pu
	}
	pu.Mode = u.Mode
	pu.Credit = u.Credit
	pu.Value = u.Value.String()
	pu.Limit = decStr(u.Limit)
	pu.LimitBase = u.LimitBase.String()
	pu.Remaining = decStr(u.Remaining)
	pu.Allowance = decStr(u.Allowance)
	pu.Held = u.Held.String()
	pu.Overhead = u.Overhead.String()
	pu.Grants = u.Grants.String()
	pu.ResetsAt = ts(u.ResetsAt)
	pu.PeriodStart = ts(u.Started)
	pu.Rate = u.Rate.Mul(thousand).String()
	pu.EwmaRate = u.EWMARate.Mul(thousand).String()
	pu.ProjectedExhaustion = ts(u.ProjectedExhaustion)
	return pu
}

// capOf converts a cap as stored (AddCap's answer): the view as of its creation.
func capOf(customer string, c *engine.Cap) *capstanv1.Cap {
	if c == nil {
		return nil
	}
	rem := c.Value.Sub(c.MeterValue)
	if rem.IsNegative() {
		rem = decimal.Zero
	}
	return capMessage(customer, c, c.MeterValue, rem, c.Started, c.Period.NextReset(c.Started))
}

// capViewOf converts a cap read as of now.
func capViewOf(customer string, v *engine.CapView) *capstanv1.Cap {
	if v == nil {
		return nil
	}
	return capMessage(customer, &v.Cap, v.MeterValue, v.Remaining, v.Started, v.NextReset)
}

func capMessage(customer string, c *engine.Cap, meter, remaining decimal.Decimal, started, next int64) *capstanv1.Cap {
	return &capstanv1.Cap{
		Customer:         customer,
		CapId:            c.ID,
		Credit:           c.Credit,
		Value:            c.Value.String(),
		MeterValue:       meter.String(),
		Remaining:        remaining.String(),
		Exchangeable:     c.Exchangeable,
		OverageOnly:      c.OverageOnly,
		IgnoreGrants:     c.IgnoreGrants,
		ObserveOnly:      c.ObserveOnly,
		OverheadCost:     c.OverheadCost,
		FollowDecrements: c.FollowDecrements,
		HardTrailing:     c.HardTrailing,
		Shared:           c.Shared,
		SharedWith:       append([]string(nil), c.SharedWith...),
		Scope:            append([]string(nil), c.Scope...),
		ResetInc:         periodInc(c.Period),
		ResetSch:         c.Period.ResetSch(),
		CreatedAt:        ts(c.Created),
		PeriodStart:      ts(started),
		ResetsAt:         ts(next),
		ExpiresOn:        ts(c.ExpiresOn),
	}
}

func periodInc(p engine.Period) string {
	if p.Sch != nil {
		return ""
	}
	return durationStr(p.Inc)
}

func grantOf(g *engine.Grant) *capstanv1.Grant {
	if g == nil {
		return nil
	}
	return &capstanv1.Grant{
		Id:            g.ID,
		Credit:        g.Credit,
		Topup:         g.Topup,
		StartingValue: g.Starting.String(),
		Value:         g.Value.String(),
		CreatedAt:     ts(g.Created),
		ExpiresOn:     ts(g.ExpiresOn),
		ResetMode:     g.ResetMode,
		ResetSch:      g.Period.ResetSch(),
		ResetInc:      periodInc(g.Period),
	}
}

// customerOf reads a customer with its usage, grants and caps as of now. It
// runs inside a Backend read, so it copies everything it keeps.
func customerOf(e *engine.Engine, now int64, c *engine.Customer) (*capstanv1.Customer, error) {
	pc := &capstanv1.Customer{
		Id:        c.ID,
		Plan:      c.Plan,
		Type:      c.Type,
		Label:     c.Label,
		AltIds:    append([]string(nil), c.AltIDs...),
		Refs:      append([]string(nil), c.Refs...),
		CreatedAt: ts(c.Created),
	}
	if len(c.Metadata) > 0 {
		pc.Metadata = make(map[string]string, len(c.Metadata))
		for k, v := range c.Metadata {
			pc.Metadata[k] = v
		}
	}
	for _, ent := range sortedKeys(c.Meters) {
		pc.Usage = append(pc.Usage, usageOf(ent, e.Read(now, c.ID, ent)))
	}
	grants, err := e.Grants(now, c.ID)
	if err != nil {
		return nil, err
	}
	for i := range grants {
		pc.Grants = append(pc.Grants, grantOf(&grants[i]))
	}
	caps, err := e.ListCaps(now, c.ID)
	if err != nil {
		return nil, err
	}
	for _, v := range caps {
		pc.Caps = append(pc.Caps, capViewOf(c.ID, v))
	}
	for name := range c.Overrides {
		pc.Overrides = append(pc.Overrides, name)
	}
	sort.Strings(pc.Overrides)
	return pc, nil
}

func limitOf(l *engine.Limit) *capstanv1.Limit {
	if l == nil {
		return nil
	}
	return &capstanv1.Limit{
		Credit:       l.Credit,
		Mode:         l.Mode,
		Value:        l.Value.String(),
		Increment:    l.Increment.String(),
		Minimum:      decStr(l.Minimum),
		GrantsApply:  l.GrantsApply,
		HardTrailing: l.HardTrailing,
		ResetInc:     periodInc(l.Period),
		ResetSch:     l.Period.ResetSch(),
		ExpiresOn:    ts(l.OverrideExpiresOn),
	}
}
