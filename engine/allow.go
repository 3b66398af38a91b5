package engine

import (
	"math/big"

	"github.com/shopspring/decimal"
)

// Reasons a call was denied.
const (
	ReasonLimit              = "limit"
	ReasonCap                = "cap"
	ReasonGovernor           = "governor"
	ReasonUnknownCustomer    = "unknown_customer"
	ReasonUnknownEntitlement = "unknown_entitlement"
	ReasonNotEntitled        = "not_entitled"
	ReasonNoScope            = "no_scope_owner"
	ReasonNoHold             = "unknown_hold"
)

// CallCap is a call-scoped ceiling: credit (or currency) -> value.
type CallCap struct {
	Credit string
	Value  decimal.Decimal
}

// AllowRequest is one allow/check/reserve call.
type AllowRequest struct {
	Customer    string
	Entitlement string
	Value       decimal.Decimal
	Unit        string // optional unit of Value ("GB"), converted to the credit's stof_units
	EventData   string // optional JSON object: carried on events and the cost function's context
	NoEvents    bool   // Limitr's event = false
	Caps        []CallCap
	Overhead    *decimal.Decimal // the call's actual provider cost in runes, when known
	Force       bool             // record usage that already happened (past limits and caps)
	// Segment and Basis key and scale usage estimates (reserve predicts, settle learns).
	Segment string
	Basis   *decimal.Decimal
}

// Decision is the answer to allow/check/increment/decrement/reserve/settle.
type Decision struct {
	Allowed   bool
	Reason    string // "" when allowed
	CapID     string // the cap that denied the call
	Remaining *decimal.Decimal
	ResetsAt  int64 // ms; 0 = never
	HoldID    string
	Events    []Event
}

// capHit is one cap that applies to a call and what the call adds to it.
type capHit struct {
	cap    *Cap
	holder *Customer // nil for call-scoped caps
	amount decimal.Decimal
	cur    decimal.Decimal // meter value as of now
	held   decimal.Decimal // what the meter's unexpired holds would add (checked, never committed)
	reset  bool
}

// call is everything a decision computes before anything changes.
type call struct {
	req          *AllowRequest
	caller       *Customer
	owner        *Customer
	plan         *Plan
	limit        *Limit
	credit       *Credit
	meter        *Meter
	value        decimal.Decimal
	reset        bool
	start        int64
	old, newVal  decimal.Decimal
	limVal       decimal.Decimal
	offset       decimal.Decimal // billable units already used this period: max(0, old - limit)
	prevValue    decimal.Decimal // the stored meter value before the call (before a reset)
	held         decimal.Decimal
	heldOverhead decimal.Decimal
	overhead     decimal.Decimal
	overage      decimal.Decimal // billable units past the limit
	cover        decimal.Decimal // of which grants cover
	avail        decimal.Decimal // grant balance usable for the limit's credit, from offset
	caps         []capHit
	capBuf       [4]capHit
	govTokens    decimal.Decimal
	govUsed      bool
	featureFlag  bool
	denied       *Decision
	overrideGone bool // an expired override was ignored (removed on commit)
}

// Allow decides and, when allowed, meters the call.
func (e *Engine) Allow(now int64, req AllowRequest) (Decision, error) {
	c, err := e.decide(now, &req, false)
	if err != nil {
		return Decision{}, err
	}
	if c.denied != nil {
		d := *c.denied
		d.Events = e.notify(d.Events)
		return d, nil
	}
	d := e.commit(now, c)
	d.Events = e.notify(d.Events)
	return d, nil
}

// Check makes the same decision as Allow and changes nothing.
func (e *Engine) Check(now int64, req AllowRequest) (Decision, error) {
	c, err := e.decide(now, &req, false)
	if err != nil {
		return Decision{}, err
	}
	if c.denied != nil {
		d := *c.denied
		d.Events = nil
		return d, nil
	}
	return Decision{Allowed: true, Remaining: c.remainingAfter(e, now), ResetsAt: c.resetsAt()}, nil
}

// Increment allows the limit's standard increment.
func (e *Engine) Increment(now int64, req AllowRequest) (Decision, error) {
	return e.step(now, req, false)
}

// Decrement allows minus the limit's standard increment.
func (e *Engine) Decrement(now int64, req AllowRequest) (Decision, error) {
	return e.step(now, req, true)
}

func (e *Engine) step(now int64, req AllowRequest, down bool) (Decision, error) {
	req.Value = decimal.Zero
	req.Unit = ""
	if lim, d := e.resolveLimit(now, req.Customer, req.Entitlement); d != nil {
		return *d, nil
	} else if lim != nil {
		req.Value = lim.Increment
		if down {
			req.Value = lim.Increment.Neg()
		}
	}
	return e.Allow(now, req)
}

// resolveLimit finds the limit a call would use, or the denial for an unknown
// customer or entitlement.
func (e *Engine) resolveLimit(now int64, customer, entitlement string) (*Limit, *Decision) {
	caller := e.Customer(customer)
	if caller == nil {
		return nil, &Decision{Reason: ReasonUnknownCustomer}
	}
	owner, _, ent, deny := e.entitlementFor(caller, entitlement)
	if deny != "" {
		return nil, &Decision{Reason: deny}
	}
	lim, _ := e.effectiveLimit(now, owner, entitlement, ent)
	return lim, nil
}

// entitlementFor resolves the plan entitlement and the customer whose meter it uses
// (the nearest customer of the entitlement's scope type through refs).
func (e *Engine) entitlementFor(caller *Customer, name string) (owner *Customer, plan *Plan, ent *Entitlement, reason string) {
	plan = e.planFor(caller)
	if plan != nil {
		ent = plan.Entitlements[name]
	}
	if ent == nil {
		if e.policy.HasEntitlement(name) {
			return nil, plan, nil, ReasonNotEntitled
		}
		return nil, plan, nil, ReasonUnknownEntitlement
	}
	owner = caller
	if ent.Scope != "" && ent.Scope != caller.Type {
		owner = nil
		e.refsBFS(caller, func(r *Customer) bool {
			if r.Type == ent.Scope {
				owner = r
				return false
			}
			return true
		})
		if owner == nil {
			return nil, plan, ent, ReasonNoScope
		}
	}
	return owner, plan, ent, ""
}

// effectiveLimit is the customer's override (unless expired) or the plan's limit.
func (e *Engine) effectiveLimit(now int64, owner *Customer, name string, ent *Entitlement) (*Limit, bool) {
	if o := owner.Overrides[name]; o != nil {
		if o.OverrideExpiresOn != 0 && now >= o.OverrideExpiresOn {
			return ent.Limit, true
		}
		return o, false
	}
	return ent.Limit, false
}

// maxAmountDigits bounds every amount accepted from callers (before any arithmetic).
const (
	maxAmountScale = 18
	maxAmountInt   = 24
)

// CheckAmount refuses amounts with more than 18 decimal places or 24 integer digits.
// It inspects the coefficient's digit count and the exponent, never formatting the
// number (which on a hostile exponent would be the attack).
func CheckAmount(field string, d decimal.Decimal) error {
	if d.IsZero() {
		return nil
	}
	exp := int64(d.Exponent())
	digits := int64(d.NumDigits())
	if exp < -maxAmountScale {
		// Trailing zeros in the coefficient do not count as places: 1.500 is 1.5.
		c := d.Coefficient()
		ten := big.NewInt(10)
		var q, r big.Int
		for exp < -maxAmountScale {
			q.QuoRem(c, ten, &r)
			if r.Sign() != 0 {
				return inputErr(field, "more than %d decimal places", maxAmountScale)
			}
			c = new(big.Int).Set(&q)
			exp++
			digits--
		}
	}
	if digits+exp > maxAmountInt {
		return inputErr(field, "more than %d integer digits", maxAmountInt)
	}
	return nil
}

func (e *Engine) decide(now int64, req *AllowRequest, reserve bool) (*call, error) {
	if err := CheckAmount("value", req.Value); err != nil {
		return nil, err
	}
	if req.Overhead != nil {
		if err := CheckAmount("overhead", *req.Overhead); err != nil {
			return nil, err
		}
		if req.Overhead.IsNegative() {
			return nil, inputErr("overhead", "must be >= 0")
		}
	}
	for i := range req.Caps {
		cc := &req.Caps[i]
		if err := CheckAmount("caps."+cc.Credit, cc.Value); err != nil {
			return nil, err
		}
		if cc.Value.IsNegative() {
			return nil, inputErr("caps."+cc.Credit, "must be >= 0")
		}
		if !e.policy.knownCurrency(cc.Credit) {
			return nil, inputErr("caps."+cc.Credit, "unknown credit or currency %q", cc.Credit)
		}
	}
	c := &call{req: req}
	c.caller = e.Customer(req.Customer)
	if c.caller == nil {
		c.denied = &Decision{Reason: ReasonUnknownCustomer}
		return c, nil
	}
	owner, plan, ent, reason := e.entitlementFor(c.caller, req.Entitlement)
	if reason != "" {
		c.denied = &Decision{Reason: reason}
		return c, nil
	}
	c.owner, c.plan = owner, plan
	c.limit, c.overrideGone = e.effectiveLimit(now, owner, req.Entitlement, ent)
	if c.limit == nil {
		// A feature flag: entitled, nothing to meter.
		c.featureFlag = true
		return c, nil
	}
	c.credit = e.policy.Credits[c.limit.Credit]
	if c.credit == nil {
		// Only reachable through an override naming a credit a later policy removed.
		return nil, inputErr("entitlement", "limit credit %q is not in the policy", c.limit.Credit)
	}
	c.value = req.Value
	if req.Unit != "" {
		v, err := ConvertUnits(Number{Value: req.Value, Unit: req.Unit}, c.credit.StofUnits)
		if err != nil {
			return nil, inputErr("unit", "%v", err)
		}
		c.value = v
	}
	c.limVal = c.limit.Value
	c.meter = owner.Meters[req.Entitlement]

	// 1. Period reset.
	c.start = now
	if c.meter != nil {
		c.start = c.meter.Started
		c.old = c.meter.Value
		c.prevValue = c.meter.Value
		if ns, _, reset := c.limit.Period.Advance(c.meter.Started, now); reset {
			c.reset, c.start, c.old = true, ns, decimal.Zero
		}
		if !req.Force {
			c.held, c.heldOverhead = holdsAt(c.meter, now)
		}
	}
	if c.old.GreaterThan(c.limVal) {
		c.offset = c.old.Sub(c.limVal)
	}
	c.newVal = c.old.Add(c.value)
	if c.limit.Minimum != nil && c.newVal.LessThan(*c.limit.Minimum) {
		c.newVal = *c.limit.Minimum
	}
	c.overhead = e.overheadFor(c)

	// The limit's verdict, before grants.
	increasing := c.value.IsPositive()
	valid := true
	if increasing {
		switch c.limit.Mode {
		case ModeHard:
			effNew, effOld := c.newVal.Add(c.held), c.old.Add(c.held)
			valid = !effNew.GreaterThan(c.limVal) || (c.limit.HardTrailing && effOld.LessThan(c.limVal))
			if !valid {
				c.overage = effNew.Sub(maxDec(effOld, c.limVal))
			}
		case ModeSoft:
			valid = !c.newVal.GreaterThan(c.limVal)
			if !valid {
				c.overage = c.newVal.Sub(maxDec(c.old, c.limVal))
			}
		}
	}

	// 3. Grants: how much of the overage they cover (computed before caps, which see it).
	if c.limit.GrantsApply && len(owner.Grants) > 0 {
		c.avail = e.grantsAvailable(owner, c.limit.Credit, now, c.offset)
	}
	if c.overage.IsPositive() && c.limit.GrantsApply {
		avail := c.avail
		switch {
		case c.limit.Mode == ModeHard && !avail.LessThan(c.overage):
			c.cover, valid = c.overage, true
		case c.limit.Mode == ModeHard && !req.Force:
			// Hard mode is all-or-nothing: the grant covers all of it or the call is denied.
		default:
			c.cover = minDec(avail, c.overage)
		}
	}

	// 2. Caps (checked first; they see the grant-adjusted amounts).
	if err := e.collectCaps(now, c); err != nil {
		return nil, err
	}
	if !req.Force && increasing {
		for i := range c.caps {
			h := &c.caps[i]
			if h.cap.ObserveOnly || !h.amount.IsPositive() {
				continue
			}
			over := false
			if h.cap.HardTrailing {
				over = !h.cur.Add(h.held).LessThan(h.cap.Value)
			} else {
				over = h.cur.Add(h.held).Add(h.amount).GreaterThan(h.cap.Value)
			}
			if over {
				c.denied = e.denyCap(c, h)
				return c, nil
			}
		}
	}

	// 4. Governor.
	if g := c.limit.Governor; g != nil && increasing {
		tokens := g.Capacity
		if c.meter != nil && c.meter.GovTokens != nil && !c.reset {
			elapsed := now - c.meter.GovLastRefill
			if elapsed < 0 {
				elapsed = 0
			}
			tokens = minDec(g.Capacity, c.meter.GovTokens.Add(g.RefillPerMs.Mul(decimal.NewFromInt(elapsed))))
		}
		c.govTokens, c.govUsed = tokens, true
		if !req.Force && c.value.GreaterThan(tokens) {
			c.denied = e.denyGovernor(c)
			return c, nil
		}
	}

	// 5. Limit. Only a hard limit denies; soft usage past the limit is overage.
	if c.limit.Mode != ModeHard {
		valid = true
	}
	if !valid && !req.Force {
		c.denied = e.denyLimit(now, c)
		return c, nil
	}
	if !valid && req.Force {
		// Forced past a hard limit: the uncovered part is overage to bill.
		c.cover = minDec(c.cover, c.overage)
	}
	return c, nil
}

// heldAt sums a meter's unexpired holds.
func heldAt(m *Meter, now int64) decimal.Decimal {
	v, _ := holdsAt(m, now)
	return v
}

// holdsAt sums a meter's unexpired holds: their units and their overhead.
func holdsAt(m *Meter, now int64) (decimal.Decimal, decimal.Decimal) {
	units, overhead := decimal.Zero, decimal.Zero
	for i := range m.Holds {
		if m.Holds[i].Expires > now {
			units = units.Add(m.Holds[i].Value)
			overhead = overhead.Add(m.Holds[i].Overhead)
		}
	}
	return units, overhead
}

// overheadFor is the call's provider cost in runes: the caller's actual cost, else
// the credit's cost expression, else units * overhead_cost. Decrements cost nothing.
func (e *Engine) overheadFor(c *call) decimal.Decimal {
	if c.req.Overhead != nil {
		return *c.req.Overhead
	}
	if !c.value.IsPositive() {
		return decimal.Zero
	}
	if c.credit.overhead != nil {
		if v, ok := c.credit.overhead.eval(c.value, c.req.EventData); ok {
			return v
		}
	}
	if c.credit.OverheadCost.IsZero() {
		return decimal.Zero
	}
	return c.value.Mul(c.credit.OverheadCost)
}

// collectCaps gathers the caps that apply, in evaluation order: the caller's own,
// shared caps up its refs (nearest first), then the call's caps.
func (e *Engine) collectCaps(now int64, c *call) error {
	add := func(cp *Cap, holder *Customer) {
		if (cp.ExpiresOn != 0 && cp.ExpiresOn < now) || !cp.appliesTo(c.req.Entitlement) {
			return
		}
		amt, ok := e.capAmount(c, cp)
		if !ok {
			return
		}
		held := e.capHeld(c, cp)
		cur := cp.MeterValue
		_, _, reset := cp.Period.Advance(cp.Started, now)
		if reset {
			cur = decimal.Zero
		}
		if c.caps == nil {
			c.caps = c.capBuf[:0]
		}
		c.caps = append(c.caps, capHit{cap: cp, holder: holder, amount: amt, cur: cur, held: held, reset: reset})
	}
	for _, cp := range c.caller.Caps {
		add(cp, c.caller)
	}
	if len(c.caller.Refs) > 0 {
		e.refsBFS(c.caller, func(r *Customer) bool {
			for _, cp := range r.Caps {
				if cp.Shared && (len(cp.SharedWith) == 0 || contains(cp.SharedWith, c.caller.Type)) {
					add(cp, r)
				}
			}
			return true
		})
	}
	for _, cc := range c.req.Caps {
		tmp := &Cap{ID: "tmp-" + cc.Credit, Credit: cc.Credit, Value: cc.Value, Exchangeable: cc.Credit == Rune || e.isCurrency(cc.Credit)}
		add(tmp, nil)
	}
	return nil
}

func (e *Engine) isCurrency(name string) bool {
	_, ok := e.policy.Exchange.Pairs[name]
	return ok
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// capAmount is what the call adds to a cap, in the cap's credit, and whether the cap
// applies to the call's credit at all. Units inside the plan limit are worth the
// credit's first rate; billable units are priced at the meter's position.
func (e *Engine) capAmount(c *call, cp *Cap) (decimal.Decimal, bool) {
	if !cp.Exchangeable && !cp.OverheadCost && cp.Credit != c.limit.Credit {
		return decimal.Zero, false
	}
	if !c.value.IsPositive() {
		switch {
		case c.value.IsZero() && cp.OverheadCost && c.overhead.IsPositive():
			// Overhead recorded with no units (a settle of 0) still costs.
			return e.capWorth(c, cp, decimal.Zero, decimal.Zero, decimal.Zero, c.overhead)
		case c.value.IsNegative() && cp.FollowDecrements && !cp.OverheadCost:
			if cp.Credit == c.limit.Credit {
				return c.value, true
			}
			v, err := e.policy.Convert(c.value, c.limit.Credit, cp.Credit)
			return v, err == nil
		}
		_, ok := e.capWorth(c, cp, decimal.Zero, decimal.Zero, decimal.Zero, decimal.Zero)
		return decimal.Zero, ok
	}
	inc, bill, off := c.value.Sub(c.overage), c.overage, c.offset
	if cp.IgnoreGrants {
		bill, off = bill.Sub(c.cover), off.Add(c.cover)
	}
	if cp.OverageOnly {
		inc = decimal.Zero
	}
	overhead := c.overhead
	if cp.OverheadCost {
		if base := inc.Add(bill); !base.Equal(c.value) {
			overhead = div(c.overhead.Mul(base), c.value)
		}
	}
	return e.capWorth(c, cp, inc, bill, off, overhead)
}

// capHeld is what the meter's unexpired holds would add to a cap: holds count against
// caps too, so concurrent reservations cannot overspend a cap together.
func (e *Engine) capHeld(c *call, cp *Cap) decimal.Decimal {
	if !c.held.IsPositive() && !c.heldOverhead.IsPositive() {
		return decimal.Zero
	}
	bill := c.old.Add(c.held).Sub(maxDec(c.old, c.limVal))
	if bill.IsNegative() || c.limit.Mode == ModeObserve {
		bill = decimal.Zero
	}
	inc := c.held.Sub(bill)
	if cp.OverageOnly {
		inc = decimal.Zero
	}
	overhead := c.heldOverhead
	if cp.OverheadCost && cp.OverageOnly && c.held.IsPositive() {
		overhead = div(c.heldOverhead.Mul(bill), c.held)
	}
	v, _ := e.capWorth(c, cp, inc, bill, c.offset, overhead)
	return v
}

// capWorth converts included and billable units (or the overhead, for overhead caps)
// into the cap's credit.
func (e *Engine) capWorth(c *call, cp *Cap, inc, bill, off, overhead decimal.Decimal) (decimal.Decimal, bool) {
	if cp.OverheadCost {
		v, err := e.policy.Convert(overhead, Rune, cp.Credit)
		return v, err == nil
	}
	units := inc.Add(bill)
	if cp.Credit == c.limit.Credit {
		return units, true
	}
	if e.policy.positionalCredit(c.limit.Credit) != nil {
		r, err := e.policy.runeRate(cp.Credit)
		if err != nil || r.IsZero() {
			return decimal.Zero, false
		}
		runes := c.credit.Worth(inc, bill, off)
		if r.Equal(one) {
			return runes, true
		}
		return div(runes, r), true
	}
	v, err := e.policy.Convert(units, c.limit.Credit, cp.Credit)
	return v, err == nil
}

// priceDiff is what the call's billable units are worth at the meter's position, in
// runes: zero inside the limit, negative for a decrement that takes billable usage
// back. Nil for unpriced credits.
func (c *call) priceDiff() *decimal.Decimal {
	if c.credit == nil || !c.credit.Priced() {
		return nil
	}
	switch {
	case c.value.IsPositive():
		bill := c.newVal.Sub(maxDec(c.old, c.limVal))
		return decPtr(c.credit.PriceOf(bill, c.offset))
	case c.value.IsNegative():
		after := maxDec(decimal.Zero, c.newVal.Sub(c.limVal))
		refund := c.offset.Sub(after)
		if refund.IsPositive() {
			return decPtr(c.credit.PriceOf(refund, after).Neg())
		}
	}
	return decPtr(decimal.Zero)
}

func (c *call) resetsAt() int64 {
	if c.limit == nil {
		return 0
	}
	return c.limit.Period.NextReset(c.start)
}

// remainingAfter is limit - value after the call, plus remaining grants (Limitr's
// remaining(): grants extend the limit from wherever the meter is).
func (c *call) remainingAfter(e *Engine, now int64) *decimal.Decimal {
	if c.limit == nil || c.limit.Mode == ModeObserve {
		return nil
	}
	lval := c.limVal
	if c.limit.GrantsApply {
		avail := c.avail.Sub(c.cover)
		if avail.IsPositive() {
			lval = maxDec(c.newVal, lval).Add(avail)
		}
	}
	r := lval.Sub(c.newVal)
	return &r
}

func (c *call) remainingBefore(e *Engine, now int64) *decimal.Decimal {
	if c.limit == nil || c.limit.Mode == ModeObserve {
		return nil
	}
	lval := c.limVal
	if c.limit.GrantsApply {
		if avail := c.avail; avail.IsPositive() {
			lval = maxDec(c.old, lval).Add(avail)
		}
	}
	r := lval.Sub(c.old)
	return &r
}

func (c *call) baseEvent(typ string) Event {
	ev := Event{Type: typ, Customer: c.owner.ID, Entitlement: c.req.Entitlement, Credit: c.limit.Credit, EventData: c.req.EventData}
	if c.owner != c.caller {
		ev.Caller = c.caller.ID
	}
	if c.plan != nil {
		ev.Plan = c.plan.Name
	}
	return ev
}

func (e *Engine) denyCap(c *call, h *capHit) *Decision {
	d := &Decision{Reason: ReasonCap, CapID: h.cap.ID, Remaining: c.remainingBefore(e, 0), ResetsAt: c.resetsAt()}
	if !c.req.NoEvents {
		ev := Event{Type: EventCapLimit, Customer: c.caller.ID, Entitlement: c.req.Entitlement, Credit: c.limit.Credit, CapID: h.cap.ID, EventData: c.req.EventData}
		if h.holder != nil && h.holder != c.caller {
			ev.Customer, ev.Caller = h.holder.ID, c.caller.ID
		}
		snap := capSnapshot(h.cap)
		snap.MeterValue = h.cur
		snap.Requested = decPtr(h.amount)
		ev.Cap = snap
		ev.PriceDiff = c.priceDiff()
		d.Events = []Event{ev}
	}
	return d
}

func (e *Engine) denyGovernor(c *call) *Decision {
	d := &Decision{Reason: ReasonGovernor, Remaining: c.remainingBefore(e, 0), ResetsAt: c.resetsAt()}
	if !c.req.NoEvents {
		ev := c.baseEvent(EventMeterGoverned)
		ev.Meter = &MeterSnapshot{Value: c.old, Limit: c.limVal, Overhead: c.meterOverhead()}
		ev.Governor = &GovernorSnapshot{Tokens: c.govTokens, Capacity: c.limit.Governor.Capacity, Requested: c.value}
		d.Events = []Event{ev}
	}
	return d
}

func (e *Engine) denyLimit(now int64, c *call) *Decision {
	d := &Decision{Reason: ReasonLimit, Remaining: c.remainingBefore(e, now), ResetsAt: c.resetsAt()}
	if !c.req.NoEvents {
		ev := c.baseEvent(EventMeterLimit)
		inv := c.newVal
		ev.Meter = &MeterSnapshot{Old: c.old, Value: c.old, Limit: c.limVal, Diff: c.value, Overhead: c.meterOverhead(), OverheadDiff: c.overhead, Invalid: &inv}
		ev.InvalidValue = decPtr(inv)
		ev.Overage = decPtr(c.overage)
		ev.PriceDiff = c.priceDiff()
		d.Events = []Event{ev}
	}
	return d
}

func (c *call) meterOverhead() decimal.Decimal {
	if c.meter == nil || c.reset {
		return decimal.Zero
	}
	return c.meter.Overhead
}

// commit applies an allowed call: meter, overhead, history, governor, grants, caps,
// then the events, in that order.
func (e *Engine) commit(now int64, c *call) Decision {
	if c.featureFlag {
		return Decision{Allowed: true}
	}
	owner := c.owner
	if c.overrideGone {
		delete(owner.Overrides, c.req.Entitlement)
	}
	m := c.meter
	if m == nil {
		m = &Meter{Credit: c.limit.Credit, Started: now}
		if owner.Meters == nil {
			owner.Meters = map[string]*Meter{}
		}
		owner.Meters[c.req.Entitlement] = m
	}
	oldOverhead := m.Overhead
	if c.reset {
		m.Started = c.start
		m.History = m.History[:0]
		m.EWMARate = decimal.Zero
		m.GovTokens = nil
		m.GovLastRefill = 0
		oldOverhead = decimal.Zero
	}
	m.Credit = c.limit.Credit
	m.Value = c.newVal
	m.Overhead = oldOverhead.Add(c.overhead)
	if !c.value.IsZero() {
		pushHistory(m, now, c.value, c.limit.EWMAAlpha)
	}
	if c.govUsed {
		t := c.govTokens
		if c.value.IsPositive() {
			t = t.Sub(c.value)
		}
		m.GovTokens = &t
		m.GovLastRefill = now
	}
	if len(m.Holds) > 0 {
		pruneHolds(m, now)
	}
	if c.cover.IsPositive() {
		e.drawGrants(owner, c.limit.Credit, c.cover, c.offset, now)
	}

	d := Decision{Allowed: true, ResetsAt: c.resetsAt()}
	d.Remaining = c.remainingAfterCommit(e, now)
	changed := !c.value.IsZero() || !c.overhead.IsZero() || c.reset
	emit := !c.req.NoEvents
	if emit && changed {
		if c.reset {
			d.Events = append(d.Events, c.meterEvent(EventMeterReset, oldOverhead, m))
		}
		uncovered := c.overage.Sub(c.cover)
		typ := EventMeterChanged
		if uncovered.IsPositive() {
			typ = EventMeterOverage
		}
		if !c.value.IsZero() || !c.overhead.IsZero() {
			d.Events = append(d.Events, c.meterEvent(typ, oldOverhead, m))
		}
	}
	// Caps move after the meter, and report crossings.
	for i := range c.caps {
		h := &c.caps[i]
		if h.holder == nil || h.amount.IsZero() {
			continue
		}
		cp := h.cap
		if h.reset {
			cp.Started, _, _ = cp.Period.Advance(cp.Started, now)
			cp.MeterValue = decimal.Zero
		}
		before := cp.MeterValue
		cp.MeterValue = before.Add(h.amount)
		if emit && before.LessThan(cp.Value) && !cp.MeterValue.LessThan(cp.Value) {
			ev := Event{Type: EventCapThresholdCrossed, Customer: h.holder.ID, Entitlement: c.req.Entitlement, CapID: cp.ID, Cap: capSnapshot(cp), EventData: c.req.EventData}
			if h.holder != c.caller {
				ev.Caller = c.caller.ID
			}
			d.Events = append(d.Events, ev)
		}
		if emit && h.holder != c.owner {
			d.Events = append(d.Events, Event{Type: EventCustomerSet, Customer: h.holder.ID})
		}
	}
	e.tidyCaps(c.caller, now)
	return d
}

func (c *call) remainingAfterCommit(e *Engine, now int64) *decimal.Decimal {
	if c.limit == nil || c.limit.Mode == ModeObserve {
		return nil
	}
	lval := c.limVal
	if c.limit.GrantsApply && len(c.owner.Grants) > 0 {
		// What the grants had, less what this call drew; a positional credit's
		// grants are worth other amounts from the new position, so recount them.
		avail := c.avail.Sub(c.cover)
		if e.policy.positionalCredit(c.limit.Credit) != nil {
			avail = e.grantsAvailable(c.owner, c.limit.Credit, now, maxDec(decimal.Zero, c.newVal.Sub(c.limVal)))
		}
		if avail.IsPositive() {
			lval = maxDec(c.newVal, lval).Add(avail)
		}
	}
	r := lval.Sub(c.newVal)
	return &r
}

func (c *call) meterEvent(typ string, oldOverhead decimal.Decimal, m *Meter) Event {
	ev := c.baseEvent(typ)
	ev.Meter = &MeterSnapshot{Old: c.oldForEvent(), Value: c.newVal, Limit: c.limVal, Diff: c.value, Overhead: m.Overhead, OverheadDiff: c.overhead}
	ev.Remaining = decPtr(c.limVal.Sub(c.newVal))
	if typ == EventMeterReset {
		return ev
	}
	uncovered := c.overage.Sub(c.cover)
	ev.PriceDiff = c.priceDiff()
	if c.overage.IsPositive() {
		ev.Overage = decPtr(uncovered)
		if c.credit.Priced() {
			ev.OveragePrice = decPtr(c.credit.PriceOf(uncovered, c.offset.Add(c.cover)))
		}
	}
	if c.cover.IsPositive() {
		ev.GrantValueApplied = decPtr(c.cover)
	}
	return ev
}

// oldForEvent is the meter value before the call (before the reset, on a reset).
func (c *call) oldForEvent() decimal.Decimal {
	if c.reset {
		return c.prevValue
	}
	return c.old
}

// pushHistory keeps the last three movements and the smoothed rate (units per ms).
func pushHistory(m *Meter, now int64, delta, alpha decimal.Decimal) {
	if n := len(m.History); n > 0 {
		dt := now - m.History[n-1].TS
		if dt > 0 {
			inst := div(delta, decimal.NewFromInt(dt))
			if m.EWMARate.IsZero() {
				m.EWMARate = inst
			} else {
				m.EWMARate = alpha.Mul(inst).Add(one.Sub(alpha).Mul(m.EWMARate)).Round(DivScale)
			}
		}
	}
	if len(m.History) >= 3 {
		copy(m.History, m.History[1:])
		m.History = m.History[:2]
	}
	m.History = append(m.History, HistoryEntry{TS: now, Delta: delta})
}

func pruneHolds(m *Meter, now int64) {
	out := m.Holds[:0]
	for _, h := range m.Holds {
		if h.Expires > now {
			out = append(out, h)
		}
	}
	m.Holds = out
}

// tidyCaps removes a customer's expired caps.
func (e *Engine) tidyCaps(cu *Customer, now int64) {
	n := 0
	for _, cp := range cu.Caps {
		if cp.ExpiresOn != 0 && cp.ExpiresOn < now {
			continue
		}
		cu.Caps[n] = cp
		n++
	}
	for i := n; i < len(cu.Caps); i++ {
		cu.Caps[i] = nil
	}
	cu.Caps = cu.Caps[:n]
}
