package engine

import (
	"github.com/shopspring/decimal"
)

// ReserveRequest holds room for a call whose usage is only known afterwards.
type ReserveRequest struct {
	AllowRequest
	Omitted  bool            // Value not given: hold the estimate (at Quantile), else the standard increment
	TTL      int64           // ms; 0 = the policy's hold_ttl
	Quantile decimal.Decimal // 0 = DefaultQuantile (0.9)
}

// Reserve holds Value (or the standard increment) on the meter when a call of that
// size would be allowed now, counting other unexpired holds. Holds count on their
// own meter only and are never billed.
func (e *Engine) Reserve(now int64, req ReserveRequest) (Decision, error) {
	if req.TTL < 0 {
		return Decision{}, inputErr("ttl", "must not be negative")
	}
	if req.Omitted {
		lim, d := e.resolveLimit(now, req.Customer, req.Entitlement)
		if d != nil {
			return *d, nil
		}
		if lim != nil {
			req.Value = lim.Increment
			q := req.Quantile
			if q.IsZero() {
				q = DefaultQuantile
			}
			_, m, _ := e.meterFor(req.Customer, req.Entitlement)
			if es, _ := e.estimateFor(m, req.Entitlement, req.Segment); es != nil {
				if v, o, ok := es.predict(q, req.Basis); ok {
					req.Value = v
					if req.Overhead == nil {
						req.Overhead = &o
					}
				}
			}
		}
	}
	if !req.Value.IsPositive() && !req.Omitted {
		return Decision{}, inputErr("value", "a reservation must be > 0")
	}
	areq := req.AllowRequest
	areq.Force = false
	c, err := e.decide(now, &areq, true)
	if err != nil {
		return Decision{}, err
	}
	if c.denied != nil {
		d := *c.denied
		d.Events = nil
		return d, nil
	}
	if c.featureFlag {
		return Decision{Allowed: true}, nil
	}
	m := c.meter
	if m == nil {
		m = &Meter{Credit: c.limit.Credit, Started: now}
		if c.owner.Meters == nil {
			c.owner.Meters = map[string]*Meter{}
		}
		c.owner.Meters[req.Entitlement] = m
	}
	pruneHolds(m, now)
	ttl := req.TTL
	if ttl == 0 {
		ttl = e.policy.HoldTTL
	}
	id := c.owner.nextID("hold")
	m.Holds = append(m.Holds, Hold{ID: id, Value: c.value, Overhead: c.overhead, Expires: now + ttl})
	rem := c.remainingBefore(e, now)
	if rem != nil {
		r := rem.Sub(heldAt(m, now))
		rem = &r
	}
	return Decision{Allowed: true, HoldID: id, Remaining: rem, ResetsAt: c.resetsAt()}, nil
}

// meterFor resolves the meter (and owner) a customer's entitlement uses.
func (e *Engine) meterFor(customer, entitlement string) (*Customer, *Meter, string) {
	caller := e.Customer(customer)
	if caller == nil {
		return nil, nil, ReasonUnknownCustomer
	}
	owner, _, _, reason := e.entitlementFor(caller, entitlement)
	if reason != "" {
		return nil, nil, reason
	}
	return owner, owner.Meters[entitlement], ""
}

// Settle drops a hold and records the actual usage with force (it already happened).
// Usage is recorded even when the hold has expired or was never made.
// Settle then learns the call's usage into the meter's estimate for req.Segment.
func (e *Engine) Settle(now int64, holdID string, req AllowRequest) (Decision, error) {
	owner, m, reason := e.meterFor(req.Customer, req.Entitlement)
	if reason != "" {
		return Decision{Reason: reason}, nil
	}
	if err := CheckAmount("value", req.Value); err != nil {
		return Decision{}, err
	}
	if m != nil {
		removeHold(m, holdID)
	}
	req.Force = true
	d, err := e.Allow(now, req)
	if err != nil || !d.Allowed {
		return d, err
	}
	overhead := decimal.Zero
	if req.Overhead != nil {
		overhead = *req.Overhead
	} else {
		for _, ev := range d.Events {
			if ev.Meter != nil && (ev.Type == EventMeterChanged || ev.Type == EventMeterOverage) {
				overhead = ev.Meter.OverheadDiff
			}
		}
	}
	e.learnFrom(now, owner, req.Entitlement, &req, overhead)
	return d, nil
}

// Release drops a hold; false when there was none.
func (e *Engine) Release(now int64, customer, entitlement, holdID string) (bool, error) {
	_, m, reason := e.meterFor(customer, entitlement)
	if reason == ReasonUnknownCustomer {
		return false, notFound("customer", customer)
	}
	if m == nil {
		return false, nil
	}
	for _, h := range m.Holds {
		if h.ID == holdID {
			removeHold(m, holdID)
			return h.Expires > now, nil
		}
	}
	return false, nil
}

func removeHold(m *Meter, id string) {
	for i, h := range m.Holds {
		if h.ID == id {
			m.Holds = append(m.Holds[:i], m.Holds[i+1:]...)
			return
		}
	}
}

// Usage is every read of one customer's entitlement, as of a moment. Reads meter
// nothing and show the current period (zero after a pending reset).
type Usage struct {
	Found     bool
	Reason    string // why not found: unknown_customer, unknown_entitlement, ...
	Limited   bool   // false: a feature flag
	Mode      string
	Credit    string
	Value     decimal.Decimal
	Limit     *decimal.Decimal // limit + converted grants; nil for observe
	LimitBase decimal.Decimal  // the limit alone
	Remaining *decimal.Decimal // nil for observe and feature flags
	Allowance *decimal.Decimal // remaining, capped by governor tokens
	Held      decimal.Decimal
	Overhead  decimal.Decimal
	Grants    decimal.Decimal // grant balance usable for this credit
	ResetsAt  int64           // 0 = never
	Started   int64
	Rate      decimal.Decimal // units per ms from the last two movements
	EWMARate  decimal.Decimal
	// ProjectedExhaustion (ms) is when the limit is reached at the current rate; 0 = unknown.
	ProjectedExhaustion int64
}

// Read returns every read for a customer's entitlement.
func (e *Engine) Read(now int64, customer, entitlement string) Usage {
	caller := e.Customer(customer)
	if caller == nil {
		return Usage{Reason: ReasonUnknownCustomer}
	}
	owner, _, ent, reason := e.entitlementFor(caller, entitlement)
	if reason != "" {
		return Usage{Reason: reason}
	}
	u := Usage{Found: true}
	lim, _ := e.effectiveLimit(now, owner, entitlement, ent)
	if lim == nil {
		return u
	}
	u.Limited, u.Mode, u.Credit, u.LimitBase = true, lim.Mode, lim.Credit, lim.Value
	m := owner.Meters[entitlement]
	start := now
	if m != nil {
		start = m.Started
		u.Value, u.Overhead = m.Value, m.Overhead
		if ns, _, reset := lim.Period.Advance(m.Started, now); reset {
			start = ns
			u.Value, u.Overhead = decimal.Zero, decimal.Zero
		} else {
			u.Rate = rateOf(m)
			u.EWMARate = m.EWMARate
		}
		u.Held = heldAt(m, now)
	}
	u.Started = start
	u.ResetsAt = lim.Period.NextReset(start)
	if lim.GrantsApply {
		u.Grants = e.grantsAvailable(owner, lim.Credit, now, maxDec(decimal.Zero, u.Value.Sub(lim.Value)))
	}
	if lim.Mode == ModeObserve {
		return u
	}
	total := lim.Value.Add(u.Grants)
	u.Limit = &total
	lval := lim.Value
	if u.Grants.IsPositive() {
		lval = maxDec(u.Value, lval).Add(u.Grants)
	}
	rem := lval.Sub(u.Value)
	u.Remaining = &rem
	allow := rem
	if g := lim.Governor; g != nil && m != nil && m.GovTokens != nil && u.Value.Equal(m.Value) {
		elapsed := now - m.GovLastRefill
		if elapsed < 0 {
			elapsed = 0
		}
		tokens := minDec(g.Capacity, m.GovTokens.Add(g.RefillPerMs.Mul(decimal.NewFromInt(elapsed))))
		allow = minDec(allow, tokens)
	}
	u.Allowance = &allow
	if u.Rate.IsPositive() && rem.IsPositive() {
		ms := div(rem, u.Rate).IntPart()
		u.ProjectedExhaustion = now + ms
	}
	return u
}

func rateOf(m *Meter) decimal.Decimal {
	n := len(m.History)
	if n < 2 {
		return decimal.Zero
	}
	dt := m.History[n-1].TS - m.History[n-2].TS
	if dt <= 0 {
		return decimal.Zero
	}
	return div(m.History[n-1].Delta, decimal.NewFromInt(dt))
}

// OverrideRequest is Limitr's create_customer_override: unset fields copy the current
// limit (an existing override, else the plan's).
type OverrideRequest struct {
	Customer    string
	Entitlement string
	Expires     int64 // ms; 0 = never
	Credit      string
	Mode        string
	Value       *decimal.Decimal
	Increment   *decimal.Decimal
	Resets      *bool
	ResetInc    int64
	ResetSch    string
}

// CreateOverride replaces an entitlement's limit for one customer.
func (e *Engine) CreateOverride(now int64, req OverrideRequest) (*Limit, []Event, error) {
	c := e.Customer(req.Customer)
	if c == nil {
		return nil, nil, notFound("customer", req.Customer)
	}
	plan := e.planFor(c)
	var ent *Entitlement
	if plan != nil {
		ent = plan.Entitlements[req.Entitlement]
	}
	if ent == nil {
		return nil, nil, inputErr("entitlement", "customer %q's plan has no entitlement %q", c.ID, req.Entitlement)
	}
	base := ent.Limit
	if o := c.Overrides[req.Entitlement]; o != nil {
		base = o
	}
	l := &Limit{Mode: ModeHard, GrantsApply: true, Increment: one, EWMAAlpha: decimal.RequireFromString(defaultEWMAAlpha)}
	if base != nil {
		cp := *base
		l = &cp
	}
	if req.Credit != "" {
		l.Credit = req.Credit
	}
	if l.Credit == "" || e.policy.Credits[l.Credit] == nil {
		return nil, nil, inputErr("credit", "unknown credit %q", l.Credit)
	}
	if req.Mode != "" {
		switch req.Mode {
		case ModeHard, ModeSoft, ModeObserve:
			l.Mode = req.Mode
		default:
			return nil, nil, inputErr("mode", "unknown mode %q (want hard, soft or observe)", req.Mode)
		}
	}
	if req.Value != nil {
		if err := CheckAmount("value", *req.Value); err != nil {
			return nil, nil, err
		}
		if req.Value.IsNegative() {
			return nil, nil, inputErr("value", "must be >= 0")
		}
		l.Value = *req.Value
	}
	if req.Increment != nil {
		if err := CheckAmount("increment", *req.Increment); err != nil {
			return nil, nil, err
		}
		l.Increment = *req.Increment
	}
	if req.Resets != nil || req.ResetInc != 0 || req.ResetSch != "" {
		resets := req.Resets != nil && *req.Resets
		per, err := periodFrom("", resets, req.ResetInc, req.ResetSch)
		if err != nil {
			return nil, nil, err
		}
		if req.Resets != nil && !*req.Resets && req.ResetInc == 0 && req.ResetSch == "" {
			per = Period{}
		}
		l.Period = per
	}
	if req.Expires < 0 {
		return nil, nil, inputErr("expires", "must not be negative")
	}
	if req.Expires != 0 {
		l.OverrideExpiresOn = req.Expires
	}
	if c.Overrides == nil {
		c.Overrides = map[string]*Limit{}
	}
	c.Overrides[req.Entitlement] = l
	if c.Meters == nil {
		c.Meters = map[string]*Meter{}
	}
	if c.Meters[req.Entitlement] == nil {
		c.Meters[req.Entitlement] = &Meter{Credit: l.Credit, Started: now}
	}
	return l, []Event{{Type: EventCustomerSet, Customer: c.ID}}, nil
}

// RemoveOverride removes a customer's override; false when there was none.
func (e *Engine) RemoveOverride(customer, entitlement string) (bool, []Event, error) {
	c := e.Customer(customer)
	if c == nil {
		return false, nil, notFound("customer", customer)
	}
	if _, ok := c.Overrides[entitlement]; !ok {
		return false, nil, nil
	}
	delete(c.Overrides, entitlement)
	return true, []Event{{Type: EventCustomerSet, Customer: c.ID}}, nil
}
