package bench

import (
	"fmt"

	"github.com/shopspring/decimal"
)

// SeedPolicy is the seed's spend-caps example (shared/conformance/seed-spend-caps.yaml):
// a soft monthly plan limit of 16667 tokens at $0.0003 a token, with overage capped
// per customer. Every target decides under it (the baselines under the same numbers).
const SeedPolicy = `policy: {
credits: {
claude_sonnet_4: {
description: 'Claude Sonnet 4 token'
overhead_cost: 1.5e-7
price: { amount: 0.0003 }
}
}
plans: {
starter: {
label: 'Starter Plan'
entitlements: {
ai_chat: {
description: 'AI chat feature'
limit: {
credit: 'claude_sonnet_4'
mode: 'soft'
value: 16667
resets: true
reset_sch: 'monthly:1'
}
}
}
}
}
}`

// The seed policy's numbers, for the baselines that implement the same capped
// counter by hand.
const (
	SeedPolicyFormat  = "stof"
	SeedPlan          = "starter"
	SeedEntitlement   = "ai_chat"
	SeedLimitTokens   = 16667
	SeedPriceMicroUSD = 300 // $0.0003 per token, in millionths of a dollar
)

// CapSpec is one standing cap every customer of a population gets. Caps are
// overage-only and ignore grants, as in the seed: they count the dollars spent past
// the plan's soft limit.
type CapSpec struct {
	ID       string
	USD      int64
	ResetSch string
}

// Population is a group of customers set up alike.
type Population struct {
	Prefix string
	Count  int
	Caps   []CapSpec
}

// Fixture is the state every target is set up with before it is measured: the
// policy, the customers (in two populations) and the table of call values that
// schedules index into, so a request never formats or parses a number.
type Fixture struct {
	Open   Population // caps far above anything a run can spend: caps are checked on every call, never hit
	Capped Population // the seed's caps ($20 monthly overage, $15 weekly guardrail): the caps workload hits them

	// Prime is the value each customer is charged once at setup, so every measured
	// call is past the soft limit and does the full overage and cap arithmetic.
	Prime int64

	ids    []string // Open then Capped
	Values []int64  // call values in tokens; Op.Value indexes it
	strs   []string
	decs   []decimal.Decimal
}

// Values used by the built-in workloads (indexes into Fixture.Values).
const (
	valSmall   = 0 // one ordinary call
	valReserve = 1 // a reservation
	valCapped  = 2 // a large call on a capped customer: $0.60 of overage
	valSettle0 = 3 // settle values follow: valSettle0 .. valSettle0+settleValues-1
)

const settleValues = 8

// NewFixture returns the default fixture with open and capped customers.
func NewFixture(open, capped int) *Fixture {
	f := &Fixture{
		Open: Population{Prefix: "bo", Count: open, Caps: []CapSpec{
			{ID: "ai_overage_cap", USD: 1_000_000_000, ResetSch: "monthly:1"},
			{ID: "ai_weekly_guardrail", USD: 1_000_000_000, ResetSch: "weekly:mon"},
		}},
		Capped: Population{Prefix: "bc", Count: capped, Caps: []CapSpec{
			{ID: "ai_overage_cap", USD: 20, ResetSch: "monthly:1"},
			{ID: "ai_weekly_guardrail", USD: 15, ResetSch: "weekly:mon"},
		}},
		Prime:  SeedLimitTokens,
		Values: []int64{10, 50, 2000},
	}
	for i := 0; i < settleValues; i++ {
		f.Values = append(f.Values, int64(10+i*5)) // 10..45, never more than the reservation
	}
	for i := 0; i < open; i++ {
		f.ids = append(f.ids, fmt.Sprintf("%s_%06d", f.Open.Prefix, i))
	}
	for i := 0; i < capped; i++ {
		f.ids = append(f.ids, fmt.Sprintf("%s_%06d", f.Capped.Prefix, i))
	}
	for _, v := range f.Values {
		f.strs = append(f.strs, fmt.Sprint(v))
		f.decs = append(f.decs, decimal.NewFromInt(v))
	}
	return f
}

// IDs returns every customer id: the open population first, then the capped one.
func (f *Fixture) IDs() []string { return f.ids }

// ID returns customer i's id.
func (f *Fixture) ID(i uint32) string { return f.ids[i] }

// CapsOf returns the caps customer i is set up with.
func (f *Fixture) CapsOf(i int) []CapSpec {
	if i < f.Open.Count {
		return f.Open.Caps
	}
	return f.Capped.Caps
}

// CapMicroUSD is the tightest cap of customer i in millionths of a dollar (what the
// baselines check: the seed's caps count the same overage, so the smallest decides).
func (f *Fixture) CapMicroUSD(i int) int64 {
	caps := f.CapsOf(i)
	m := caps[0].USD
	for _, c := range caps[1:] {
		m = min(m, c.USD)
	}
	return m * 1_000_000
}

// ValueString is a value's decimal text (for wire formats that carry strings).
func (f *Fixture) ValueString(i uint16) string { return f.strs[i] }

// ValueDecimal is a value as a decimal.
func (f *Fixture) ValueDecimal(i uint16) decimal.Decimal { return f.decs[i] }
