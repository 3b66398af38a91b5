package engine

import (
	"errors"
	"fmt"

	"github.com/shopspring/decimal"
)

// DivScale is the number of decimal places every division rounds to.
const DivScale = 18

var (
	one = decimal.NewFromInt(1)

	errNoPath = errors.New("no exchange path to runes")
)

func div(a, b decimal.Decimal) decimal.Decimal { return a.DivRound(b, DivScale) }

func minDec(a, b decimal.Decimal) decimal.Decimal {
	if a.LessThan(b) {
		return a
	}
	return b
}

func maxDec(a, b decimal.Decimal) decimal.Decimal {
	if a.GreaterThan(b) {
		return a
	}
	return b
}

// toRunesRate is how many runes one unit of name is worth: rune is 1; an exchange pair
// multiplies through to its currency; a priced credit converts through its price (flat
// price, or the first tier's per-unit price for tiered and volume pricing).
func toRunesRate(credits map[string]*Credit, ex Exchange, name string) (decimal.Decimal, error) {
	rate := one
	cur := name
	for hop := 0; hop < maxExchangeHops; hop++ {
		if cur == Rune {
			return rate, nil
		}
		if pair, ok := ex.Pairs[cur]; ok {
			rate = rate.Mul(pair.Value)
			cur = pair.Currency
			continue
		}
		if c, ok := credits[cur]; ok {
			if unit, ok := c.unitPrice(); ok {
				return rate.Mul(unit), nil
			}
			return decimal.Zero, fmt.Errorf("%w: credit %q has no price and no exchange pair", errNoPath, cur)
		}
		return decimal.Zero, fmt.Errorf("%w: unknown currency or credit %q", errNoPath, cur)
	}
	return decimal.Zero, fmt.Errorf("%w: exchange pairs from %q loop or chain more than %d times", errNoPath, name, maxExchangeHops)
}

// unitPrice is the credit's per-unit price for exchange purposes.
func (c *Credit) unitPrice() (decimal.Decimal, bool) {
	if c.Price != nil {
		return c.Price.Amount, true
	}
	if len(c.Tiers) > 0 && c.PricingModel != PricingStairstep {
		return c.Tiers[0].Price.Amount, true
	}
	return decimal.Zero, false
}

// runeRate is toRunesRate through the table computed when the policy loaded.
func (p *Policy) runeRate(name string) (decimal.Decimal, error) {
	if name == Rune {
		return one, nil
	}
	if r, ok := p.runeRates[name]; ok {
		return r, nil
	}
	return toRunesRate(p.Credits, p.Exchange, name)
}

// computeRuneRates fills the rune-rate table for every credit and exchange pair that
// reaches runes; policies are immutable, so conversions never re-walk the chain.
func (p *Policy) computeRuneRates() {
	p.runeRates = map[string]decimal.Decimal{}
	for _, name := range sortedKeys(p.Credits) {
		if r, err := toRunesRate(p.Credits, p.Exchange, name); err == nil {
			p.runeRates[name] = r
		}
	}
	for _, name := range sortedKeys(p.Exchange.Pairs) {
		if r, err := toRunesRate(p.Credits, p.Exchange, name); err == nil {
			p.runeRates[name] = r
		}
	}
}

// Convert converts value units of `from` into `to` through runes.
func (p *Policy) Convert(value decimal.Decimal, from, to string) (decimal.Decimal, error) {
	if from == to {
		return value, nil
	}
	a, err := p.runeRate(from)
	if err != nil {
		return decimal.Zero, err
	}
	b, err := p.runeRate(to)
	if err != nil {
		return decimal.Zero, err
	}
	if b.IsZero() {
		return decimal.Zero, fmt.Errorf("%w: %q is worth zero runes", errNoPath, to)
	}
	runes := value.Mul(a)
	if b.Equal(one) {
		return runes, nil
	}
	return div(runes, b), nil
}

// knownCurrency reports whether name is rune, an exchange pair or a credit.
func (p *Policy) knownCurrency(name string) bool {
	if name == Rune {
		return true
	}
	if _, ok := p.Exchange.Pairs[name]; ok {
		return true
	}
	_, ok := p.Credits[name]
	return ok
}

// PriceOf prices quantity billable units bought after offset billable units this
// period, in runes, by the credit's pricing model: the marginal price at the
// customer's position. Unpriced credits cost zero. The marginal price can be negative
// (entering a cheaper volume band reprices everything); events report it as is.
func (c *Credit) PriceOf(quantity, offset decimal.Decimal) decimal.Decimal {
	if !quantity.IsPositive() {
		return decimal.Zero
	}
	if offset.IsNegative() {
		offset = decimal.Zero
	}
	var p decimal.Decimal
	switch c.PricingModel {
	case PricingTiered:
		// Graduated: each band prices its own slice.
		p = c.tieredTotal(offset.Add(quantity)).Sub(c.tieredTotal(offset))
	case PricingVolume:
		// The band the running total falls in prices every unit.
		p = c.volumeTotal(offset.Add(quantity)).Sub(c.volumeTotal(offset))
	case PricingStairstep:
		// A band's fee is paid once, on entering it.
		p = c.stairTotal(offset.Add(quantity)).Sub(c.stairTotal(offset))
	default:
		if c.Price == nil {
			return decimal.Zero
		}
		return quantity.Mul(c.Price.Amount)
	}
	return p
}

// positional reports whether the credit's worth depends on the customer's position
// (tiered, volume, stairstep) rather than a flat rate.
func (c *Credit) positional() bool {
	return len(c.Tiers) > 0 && c.PricingModel != PricingFlat
}

// includedRate prices units inside the plan limit: the first band's rate (stairstep
// fees apply to billable units only).
func (c *Credit) includedRate() decimal.Decimal {
	if c.PricingModel == PricingStairstep {
		return decimal.Zero
	}
	r, _ := c.unitPrice()
	return r
}

// Worth is what included units (inside the limit) plus billable units bought at
// offset are worth, in runes.
// A negative marginal price never lowers a cap: it counts as zero.
func (c *Credit) Worth(included, billable, offset decimal.Decimal) decimal.Decimal {
	w := maxDec(decimal.Zero, c.PriceOf(billable, offset))
	if included.IsPositive() {
		w = w.Add(included.Mul(c.includedRate()))
	}
	return w
}

// QuantityFor is how many billable units runes buy from offset: the inverse of PriceOf
// for tiered and flat pricing; volume uses the band at offset; stairstep buys none.
func (c *Credit) QuantityFor(runes, offset decimal.Decimal) decimal.Decimal {
	if !runes.IsPositive() {
		return decimal.Zero
	}
	switch c.PricingModel {
	case PricingTiered:
		q := decimal.Zero
		pos := offset
		for _, t := range c.Tiers {
			if t.UpTo != nil && !pos.LessThan(*t.UpTo) {
				continue
			}
			rate := t.Price.Amount
			if !rate.IsPositive() {
				if t.UpTo == nil {
					return q // free open band: unbounded; report what money bought before it
				}
				q = q.Add(t.UpTo.Sub(pos))
				pos = *t.UpTo
				continue
			}
			if t.UpTo == nil {
				return q.Add(div(runes, rate))
			}
			room := t.UpTo.Sub(pos)
			cost := room.Mul(rate)
			if !cost.LessThan(runes) {
				return q.Add(div(runes, rate))
			}
			runes = runes.Sub(cost)
			q = q.Add(room)
			pos = *t.UpTo
		}
		return q
	case PricingVolume:
		if b := c.band(offset.Add(one)); b != nil && b.Price.Amount.IsPositive() {
			return div(runes, b.Price.Amount)
		}
		return decimal.Zero
	case PricingStairstep:
		return decimal.Zero
	default:
		if c.Price == nil || !c.Price.Amount.IsPositive() {
			return decimal.Zero
		}
		return div(runes, c.Price.Amount)
	}
}

// positionalCredit returns the credit when conversions into or out of it depend on
// the customer's position (a tiered credit with no exchange pair of its own).
func (p *Policy) positionalCredit(name string) *Credit {
	if _, isPair := p.Exchange.Pairs[name]; isPair {
		return nil
	}
	if c := p.Credits[name]; c != nil && c.positional() {
		return c
	}
	return nil
}

// unitsFrom converts an amount of `from` into units of credit `to` bought at offset.
func (p *Policy) unitsFrom(amount decimal.Decimal, from, to string, offset decimal.Decimal) (decimal.Decimal, error) {
	if from == to {
		return amount, nil
	}
	if c := p.positionalCredit(to); c != nil {
		r, err := p.runeRate(from)
		if err != nil {
			return decimal.Zero, err
		}
		return c.QuantityFor(amount.Mul(r), offset), nil
	}
	return p.Convert(amount, from, to)
}

// amountFor converts units of credit `from` bought at offset into an amount of `to`.
func (p *Policy) amountFor(units decimal.Decimal, from, to string, offset decimal.Decimal) (decimal.Decimal, error) {
	if from == to {
		return units, nil
	}
	if c := p.positionalCredit(from); c != nil {
		r, err := p.runeRate(to)
		if err != nil {
			return decimal.Zero, err
		}
		if r.IsZero() {
			return decimal.Zero, fmt.Errorf("%w: %q is worth zero runes", errNoPath, to)
		}
		return div(c.PriceOf(units, offset), r), nil
	}
	return p.Convert(units, from, to)
}

func (c *Credit) tieredTotal(n decimal.Decimal) decimal.Decimal {
	total := decimal.Zero
	prev := decimal.Zero
	for _, t := range c.Tiers {
		if !n.GreaterThan(prev) {
			break
		}
		if t.UpTo == nil {
			return total.Add(n.Sub(prev).Mul(t.Price.Amount))
		}
		slice := minDec(n, *t.UpTo).Sub(prev)
		total = total.Add(slice.Mul(t.Price.Amount))
		prev = *t.UpTo
	}
	return total
}

func (c *Credit) band(n decimal.Decimal) *PriceTier {
	for i := range c.Tiers {
		t := &c.Tiers[i]
		if t.UpTo == nil || !n.GreaterThan(*t.UpTo) {
			return t
		}
	}
	if len(c.Tiers) > 0 {
		return &c.Tiers[len(c.Tiers)-1]
	}
	return nil
}

func (c *Credit) volumeTotal(n decimal.Decimal) decimal.Decimal {
	if !n.IsPositive() {
		return decimal.Zero
	}
	if b := c.band(n); b != nil {
		return n.Mul(b.Price.Amount)
	}
	return decimal.Zero
}

func (c *Credit) stairTotal(n decimal.Decimal) decimal.Decimal {
	if !n.IsPositive() {
		return decimal.Zero
	}
	if b := c.band(n); b != nil {
		return b.Price.Amount
	}
	return decimal.Zero
}
