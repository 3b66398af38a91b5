package engine

import (
	"strings"

	"github.com/shopspring/decimal"
)

// Estimate learns the usage (and overhead) of calls on a meter so reserve can hold a
// predicted amount: a running mean and variance, exact for the first 1/alpha samples,
// then exponentially weighted (alpha 0.1), as Limitr's.
type Estimate struct {
	Samples      int64           `json:"samples"`
	PerBasis     bool            `json:"per_basis,omitempty"`
	ValueMean    decimal.Decimal `json:"value_mean"`
	ValueVar     decimal.Decimal `json:"value_var"`
	OverheadMean decimal.Decimal `json:"overhead_mean"`
	OverheadVar  decimal.Decimal `json:"overhead_var"`
	Source       string          `json:"source,omitempty"`
	Updated      int64           `json:"updated,omitempty"`
}

var (
	estimateAlpha = decimal.RequireFromString("0.1")
	estimateExact = int64(10) // 1/alpha
	// zScores maps the supported quantiles to standard-normal z values.
	zScores = []struct{ q, z decimal.Decimal }{
		{decimal.RequireFromString("0.5"), decimal.Zero},
		{decimal.RequireFromString("0.75"), decimal.RequireFromString("0.6745")},
		{decimal.RequireFromString("0.8"), decimal.RequireFromString("0.8416")},
		{decimal.RequireFromString("0.9"), decimal.RequireFromString("1.2816")},
		{decimal.RequireFromString("0.95"), decimal.RequireFromString("1.6449")},
		{decimal.RequireFromString("0.99"), decimal.RequireFromString("2.3263")},
		{decimal.RequireFromString("0.999"), decimal.RequireFromString("3.0902")},
	}
	// DefaultQuantile is the quantile reserve predicts at when none is given.
	DefaultQuantile = decimal.RequireFromString("0.9")
)

// segmentKey normalises a segment name as Limitr does ('.' and ' ' become '_').
func segmentKey(s string) string {
	if s == "" {
		return "all"
	}
	return strings.NewReplacer(".", "_", " ", "_").Replace(s)
}

func zFor(q decimal.Decimal) decimal.Decimal {
	z := zScores[0].z
	for _, e := range zScores {
		if !q.LessThan(e.q) {
			z = e.z
		}
	}
	return z
}

// sqrtDec is a Newton square root to DivScale places (deterministic).
func sqrtDec(x decimal.Decimal) decimal.Decimal {
	if !x.IsPositive() {
		return decimal.Zero
	}
	two := decimal.NewFromInt(2)
	g := x
	if x.LessThan(one) {
		g = one
	}
	for i := 0; i < 100; i++ {
		n := g.Add(div(x, g)).DivRound(two, DivScale)
		if n.Equal(g) {
			break
		}
		g = n
	}
	return g
}

func (es *Estimate) learn(now int64, value, overhead decimal.Decimal, basis *decimal.Decimal) {
	if es.Samples == 0 && basis != nil && basis.IsPositive() {
		es.PerBasis = true
	}
	if es.PerBasis {
		if basis == nil || !basis.IsPositive() {
			return // a per-basis estimate cannot learn from a call without basis
		}
		value, overhead = div(value, *basis), div(overhead, *basis)
	}
	es.Samples++
	update := func(mean, variance *decimal.Decimal, x decimal.Decimal) {
		delta := x.Sub(*mean)
		if es.Samples <= estimateExact {
			n := decimal.NewFromInt(es.Samples)
			*mean = mean.Add(div(delta, n))
			// Welford: population variance.
			*variance = div(variance.Mul(n.Sub(one)).Add(delta.Mul(x.Sub(*mean))), n)
		} else {
			*mean = mean.Add(estimateAlpha.Mul(delta))
			*variance = one.Sub(estimateAlpha).Mul(variance.Add(estimateAlpha.Mul(delta).Mul(delta))).Round(DivScale)
		}
	}
	update(&es.ValueMean, &es.ValueVar, value)
	update(&es.OverheadMean, &es.OverheadVar, overhead)
	es.Updated = now
}

// EstimateView is what an estimate predicts at a quantile.
type EstimateView struct {
	Value    decimal.Decimal
	Overhead decimal.Decimal
	Samples  int64
	Source   string // "customer" or the policy prior's source
	Segment  string
}

func (es *Estimate) predict(q decimal.Decimal, basis *decimal.Decimal) (decimal.Decimal, decimal.Decimal, bool) {
	z := zFor(q)
	v := es.ValueMean.Add(z.Mul(sqrtDec(es.ValueVar)))
	o := es.OverheadMean.Add(z.Mul(sqrtDec(es.OverheadVar)))
	if es.PerBasis {
		if basis == nil || !basis.IsPositive() {
			return decimal.Zero, decimal.Zero, false
		}
		v, o = v.Mul(*basis), o.Mul(*basis)
	}
	return maxDec(v, decimal.Zero).Round(DivScale), maxDec(o, decimal.Zero).Round(DivScale), true
}

// estimateFor picks the customer's own estimate once it has enough samples, else the
// policy-wide prior, else nothing.
func (e *Engine) estimateFor(m *Meter, entitlement, segment string) (*Estimate, string) {
	key := segmentKey(segment)
	if m != nil {
		if es := m.Estimates[key]; es != nil && es.Samples >= int64(e.policy.EstimateMinSamples) {
			return es, "customer"
		}
	}
	if es := e.policy.Estimates[entitlement+"."+key]; es != nil {
		src := es.Source
		if src == "" {
			src = "policy"
		}
		return es, src
	}
	if m != nil {
		if es := m.Estimates[key]; es != nil && es.Samples > 0 {
			return es, "customer"
		}
	}
	return nil, ""
}

// EstimateUsage predicts a call's usage at quantile q (0 = the default 0.9).
func (e *Engine) EstimateUsage(customer, entitlement, segment string, basis *decimal.Decimal, q decimal.Decimal) (*EstimateView, error) {
	owner, m, reason := e.meterFor(customer, entitlement)
	if reason == ReasonUnknownCustomer {
		return nil, notFound("customer", customer)
	}
	if owner == nil {
		return nil, inputErr("entitlement", "%s", reason)
	}
	if q.IsZero() {
		q = DefaultQuantile
	}
	es, src := e.estimateFor(m, entitlement, segment)
	if es == nil {
		return nil, nil
	}
	v, o, ok := es.predict(q, basis)
	if !ok {
		return nil, nil
	}
	return &EstimateView{Value: v, Overhead: o, Samples: es.Samples, Source: src, Segment: segmentKey(segment)}, nil
}

// learnFrom records a settled call on its meter's estimate.
func (e *Engine) learnFrom(now int64, owner *Customer, entitlement string, req *AllowRequest, overhead decimal.Decimal) {
	m := owner.Meters[entitlement]
	if m == nil || !req.Value.IsPositive() {
		return
	}
	if m.Estimates == nil {
		m.Estimates = map[string]*Estimate{}
	}
	key := segmentKey(req.Segment)
	es := m.Estimates[key]
	if es == nil {
		es = &Estimate{Source: "customer"}
		m.Estimates[key] = es
	}
	es.learn(now, req.Value, overhead, req.Basis)
}
