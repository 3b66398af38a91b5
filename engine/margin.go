package engine

import "github.com/shopspring/decimal"

// Margin is a quick revenue / cost / margin snapshot (Limitr's
// customer_local_margin_breakdown): revenue is the billable usage past each limit
// priced by the credit's model, cost is the provider overhead recorded this period.
// Like Limitr's it ignores grants and topups.
type Margin struct {
	Revenue      decimal.Decimal
	Cost         decimal.Decimal
	MarginPct    *decimal.Decimal // nil when there is no revenue
	Entitlements []EntitlementMargin
}

// EntitlementMargin is one entitlement's part of a Margin.
type EntitlementMargin struct {
	Entitlement string
	Value       decimal.Decimal
	Limit       decimal.Decimal
	Revenue     decimal.Decimal
	Cost        decimal.Decimal
	MarginPct   *decimal.Decimal
}

var hundred = decimal.NewFromInt(100)

func marginPct(rev, cost decimal.Decimal) *decimal.Decimal {
	if !rev.IsPositive() {
		return nil
	}
	m := div(rev.Sub(cost).Mul(hundred), rev).Round(2)
	return &m
}

// MarginBreakdown computes the customer's margin for the current period, entitlement
// by entitlement in plan order.
func (e *Engine) MarginBreakdown(now int64, customer string) (*Margin, error) {
	c := e.Customer(customer)
	if c == nil {
		return nil, notFound("customer", customer)
	}
	plan := e.planFor(c)
	out := &Margin{}
	if plan == nil {
		return out, nil
	}
	for _, name := range plan.EntitlementOrder {
		ent := plan.Entitlements[name]
		lim, _ := e.effectiveLimit(now, c, name, ent)
		m := c.Meters[name]
		if lim == nil || m == nil {
			continue
		}
		credit := e.policy.Credits[lim.Credit]
		if credit == nil {
			continue
		}
		value, cost := m.Value, m.Overhead
		if _, _, reset := lim.Period.Advance(m.Started, now); reset {
			value, cost = decimal.Zero, decimal.Zero
		}
		em := EntitlementMargin{Entitlement: name, Value: value, Limit: lim.Value, Cost: cost}
		if over := value.Sub(lim.Value); over.IsPositive() {
			em.Revenue = credit.PriceOf(over, decimal.Zero)
		}
		em.MarginPct = marginPct(em.Revenue, em.Cost)
		out.Revenue = out.Revenue.Add(em.Revenue)
		out.Cost = out.Cost.Add(em.Cost)
		out.Entitlements = append(out.Entitlements, em)
	}
	out.MarginPct = marginPct(out.Revenue, out.Cost)
	return out, nil
}
