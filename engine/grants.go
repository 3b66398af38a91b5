package engine

import (
	"sort"

	"github.com/shopspring/decimal"
)

// MaxGrantsPerCustomer bounds grants per customer.
const MaxGrantsPerCustomer = 256

// grantValueAt is a grant's balance as of now: zero when expired, rolled forward
// through any reset periods that have passed (without changing the grant).
func grantValueAt(g *Grant, now int64) decimal.Decimal {
	if g.ExpiresOn != 0 && g.ExpiresOn <= now {
		return decimal.Zero
	}
	if _, periods, reset := g.Period.Advance(g.Started, now); reset {
		return g.valueAfterResets(periods)
	}
	return g.Value
}

// valueAfterResets applies n elapsed reset periods to the balance.
func (g *Grant) valueAfterResets(n int64) decimal.Decimal {
	if g.CatchupCap > 0 && n > g.CatchupCap {
		n = g.CatchupCap
	}
	v := g.Value
	for i := int64(0); i < n && i < 1000; i++ {
		switch g.ResetMode {
		case "add":
			v = v.Add(g.Starting)
		case "rollover":
			carry := v
			if g.RolloverPct != nil {
				carry = carry.Mul(*g.RolloverPct)
			}
			if g.RolloverMin != nil {
				carry = maxDec(carry, *g.RolloverMin)
			}
			if g.RolloverMax != nil {
				carry = minDec(carry, *g.RolloverMax)
			}
			v = carry.Add(g.Starting)
		default: // hard
			v = g.Starting
		}
		if g.MaxBalance != nil {
			v = minDec(v, *g.MaxBalance)
		}
		if g.ResetMode == "" || g.ResetMode == "hard" {
			break // every further hard reset gives the same balance
		}
	}
	return v
}

// settle brings a grant's stored state up to now.
func (g *Grant) settle(now int64) {
	if start, periods, reset := g.Period.Advance(g.Started, now); reset {
		g.Value = g.valueAfterResets(periods)
		g.Started = start
	}
}

// grantsAvailable is the balance of every unexpired grant usable for credit,
// converted into that credit, in draw order. For a tiered credit, grant money buys
// units from the customer's billable position (offset) on.
func (e *Engine) grantsAvailable(c *Customer, credit string, now int64, offset decimal.Decimal) decimal.Decimal {
	if len(c.Grants) == 0 {
		return decimal.Zero
	}
	sum := decimal.Zero
	for _, g := range e.grantOrder(c, credit, now) {
		v := grantValueAt(g, now)
		if g.Credit != credit {
			conv, err := e.policy.unitsFrom(v, g.Credit, credit, offset.Add(sum))
			if err != nil {
				continue
			}
			v = conv
		}
		sum = sum.Add(v)
	}
	return sum
}

// grantOrder returns the customer's usable grants in the policy's draw order.
func (e *Engine) grantOrder(c *Customer, credit string, now int64) []*Grant {
	if len(c.Grants) == 1 {
		// The common case needs no copy and no sort.
		g := c.Grants[0]
		if !grantValueAt(g, now).IsPositive() {
			return nil
		}
		if g.Credit != credit {
			if _, err := e.policy.runeRate(g.Credit); err != nil {
				return nil
			}
			if _, err := e.policy.runeRate(credit); err != nil {
				return nil
			}
		}
		return c.Grants
	}
	var gs []*Grant
	for _, g := range c.Grants {
		if !grantValueAt(g, now).IsPositive() {
			continue
		}
		if g.Credit != credit {
			if _, err := e.policy.Convert(one, g.Credit, credit); err != nil {
				continue
			}
		}
		gs = append(gs, g)
	}
	switch e.policy.Exchange.GrantStrategy {
	case StrategyCheapestFirst, StrategyValuableFirst:
		rate := func(g *Grant) decimal.Decimal {
			r, err := e.policy.runeRate(g.Credit)
			if err != nil {
				return decimal.Zero
			}
			return r
		}
		cheap := e.policy.Exchange.GrantStrategy == StrategyCheapestFirst
		sort.SliceStable(gs, func(i, j int) bool {
			a, b := rate(gs[i]), rate(gs[j])
			if cheap {
				return a.LessThan(b)
			}
			return a.GreaterThan(b)
		})
	default:
		// expires_first: soonest expiry first, never-expiring last; ties keep creation order.
		sort.SliceStable(gs, func(i, j int) bool {
			a, b := gs[i].ExpiresOn, gs[j].ExpiresOn
			if a == 0 {
				return false
			}
			return b == 0 || a < b
		})
	}
	return gs
}

// drawGrants takes amount (in credit units, bought from billable position offset)
// from the customer's grants in draw order.
func (e *Engine) drawGrants(c *Customer, credit string, amount, offset decimal.Decimal, now int64) {
	for _, g := range e.grantOrder(c, credit, now) {
		if !amount.IsPositive() {
			return
		}
		g.settle(now)
		avail := g.Value
		if g.Credit != credit {
			conv, err := e.policy.unitsFrom(avail, g.Credit, credit, offset)
			if err != nil {
				continue
			}
			avail = conv
		}
		if !avail.GreaterThan(amount) {
			g.Value = decimal.Zero
			amount = amount.Sub(avail)
			offset = offset.Add(avail)
			continue
		}
		take := amount
		if g.Credit != credit {
			conv, err := e.policy.amountFor(amount, credit, g.Credit, offset)
			if err != nil {
				continue
			}
			take = conv
		}
		g.Value = maxDec(decimal.Zero, g.Value.Sub(take))
		amount = decimal.Zero
	}
}

// CreditRemaining is the customer's grant balance in credit (other credits converted).
func (e *Engine) CreditRemaining(now int64, customer, credit string) (decimal.Decimal, error) {
	c := e.Customer(customer)
	if c == nil {
		return decimal.Zero, notFound("customer", customer)
	}
	if !e.policy.knownCurrency(credit) {
		return decimal.Zero, inputErr("credit", "unknown credit or currency %q", credit)
	}
	return e.grantsAvailable(c, credit, now, decimal.Zero), nil
}

// ApplyTopup grants a plan topup to a customer (after the customer paid for it).
func (e *Engine) ApplyTopup(now int64, customer, topup string) (*Grant, []Event, error) {
	c := e.Customer(customer)
	if c == nil {
		return nil, nil, notFound("customer", customer)
	}
	plan := e.planFor(c)
	if plan == nil {
		return nil, nil, inputErr("customer", "customer %q has no plan", c.ID)
	}
	t := plan.Topups[topup]
	if t == nil {
		return nil, nil, inputErr("topup", "plan %q has no topup %q", plan.Name, topup)
	}
	if len(c.Grants) >= MaxGrantsPerCustomer {
		return nil, nil, inputErr("topup", "customer %q has the maximum of %d grants", c.ID, MaxGrantsPerCustomer)
	}
	g := e.grantFromTopup(now, c, t)
	c.Grants = append(c.Grants, g)
	return g, []Event{{Type: EventCustomerTopupGranted, Customer: c.ID, Topup: topup, Plan: plan.Name, Credit: t.Credit, GrantValueApplied: decPtr(t.Value)}}, nil
}

func (e *Engine) grantFromTopup(now int64, c *Customer, t *Topup) *Grant {
	g := &Grant{
		ID: c.nextID("grant"), Credit: t.Credit, Topup: t.Name, Created: now,
		Starting: t.Value, Value: t.Value, Period: t.Period, Started: now,
		ResetMode: t.ResetMode, RolloverMin: cloneDec(t.RolloverMin), RolloverMax: cloneDec(t.RolloverMax),
		RolloverPct: cloneDec(t.RolloverPct), MaxBalance: cloneDec(t.MaxBalance), CatchupCap: t.ResetCatchupCap,
	}
	if t.Period.Sch != nil {
		g.Started = t.Period.Sch.Prev(now)
	}
	if t.ExpiresAfter > 0 {
		g.ExpiresOn = now + t.ExpiresAfter
	}
	return g
}

// ensureIncludedTopups grants the plan's included topups the customer lacks.
func (e *Engine) ensureIncludedTopups(now int64, c *Customer, plan *Plan) bool {
	added := false
	for _, name := range plan.TopupOrder {
		t := plan.Topups[name]
		if !t.Included || (t.IncludedScopes != nil && !contains(t.IncludedScopes, c.Type)) {
			continue
		}
		has := false
		for _, g := range c.Grants {
			if g.Topup == name {
				has = true
				break
			}
		}
		if !has {
			c.Grants = append(c.Grants, e.grantFromTopup(now, c, t))
			added = true
		}
	}
	return added
}

// GrantRequest is a direct promo grant (no topup needed).
type GrantRequest struct {
	Customer  string
	ID        string // generated (grant-N) when empty
	Credit    string
	Value     decimal.Decimal
	ExpiresOn int64 // ms; 0 = never
}

// Grant gives a customer a balance of a credit directly (goodwill, promos).
func (e *Engine) Grant(now int64, req GrantRequest) (*Grant, []Event, error) {
	c := e.Customer(req.Customer)
	if c == nil {
		return nil, nil, notFound("customer", req.Customer)
	}
	if req.Credit == "" {
		return nil, nil, inputErr("credit", "required")
	}
	if !e.policy.knownCurrency(req.Credit) {
		return nil, nil, inputErr("credit", "unknown credit or currency %q", req.Credit)
	}
	if err := CheckAmount("value", req.Value); err != nil {
		return nil, nil, err
	}
	if !req.Value.IsPositive() {
		return nil, nil, inputErr("value", "must be > 0")
	}
	if req.ExpiresOn < 0 || (req.ExpiresOn != 0 && req.ExpiresOn <= now) {
		return nil, nil, inputErr("expires_on", "must be in the future")
	}
	if req.ID != "" {
		if err := validID("id", req.ID); err != nil {
			return nil, nil, err
		}
		for _, g := range c.Grants {
			if g.ID == req.ID {
				return nil, nil, inputErr("id", "customer %q already has a grant %q", c.ID, req.ID)
			}
		}
	}
	if len(c.Grants) >= MaxGrantsPerCustomer {
		return nil, nil, inputErr("id", "customer %q has the maximum of %d grants", c.ID, MaxGrantsPerCustomer)
	}
	id := req.ID
	if id == "" {
		id = c.nextID("grant")
	}
	g := &Grant{ID: id, Credit: req.Credit, Created: now, Starting: req.Value, Value: req.Value, ExpiresOn: req.ExpiresOn, Started: now}
	c.Grants = append(c.Grants, g)
	return g, []Event{{Type: EventCustomerSet, Customer: c.ID}}, nil
}

// Grants lists a customer's grants as of now.
func (e *Engine) Grants(now int64, customer string) ([]Grant, error) {
	c := e.Customer(customer)
	if c == nil {
		return nil, notFound("customer", customer)
	}
	out := make([]Grant, 0, len(c.Grants))
	for _, g := range c.Grants {
		v := *g
		v.Value = grantValueAt(g, now)
		out = append(out, v)
	}
	return out, nil
}
