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
// period, in runes, by the credit's pricing model. Unpriced credits cost zero.
func (c *Credit) PriceOf(quantity, offset decimal.Decimal) decimal.Decimal {
	if !quantity.IsPositive() {
		return decimal.Zero
	}
	if offset.IsNegative() {
		offset = decimal.Zero
	}
	switch c.PricingModel {
	case PricingTiered:
		// Graduated: each band prices its own slice.
		return c.tieredTotal(offset.Add(quantity)).Sub(c.tieredTotal(offset))
	case PricingVolume:
		// The band the running total falls in prices every unit.
		return c.volumeTotal(offset.Add(quantity)).Sub(c.volumeTotal(offset))
	case PricingStairstep:
		return c.stairTotal(offset.Add(quantity)).Sub(c.stairTotal(offset))
	default:
		if c.Price == nil {
			return decimal.Zero
		}
		return quantity.Mul(c.Price.Amount)
	}
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
