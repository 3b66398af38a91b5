package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

const seedPolicy = `
policy: {
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
mode: 'soft' // allow overage & send overage events
value: 16667 // ~$50 included at $0.0003/token
resets: true
reset_sch: 'monthly:1'
}
}
}
}
}
}`

func ms(t *testing.T, s string) int64 {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm.UnixMilli()
}

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func mustEngine(t *testing.T, text, format string) *Engine {
	t.Helper()
	p, err := LoadPolicy(text, format)
	if err != nil {
		t.Fatalf("load policy: %v", err)
	}
	return New(p)
}

func eventTypes(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func TestSeedSpendCaps(t *testing.T) {
	e := mustEngine(t, seedPolicy, "stof")
	now := ms(t, "2026-03-02T10:00:00Z")
	if _, _, err := e.CreateCustomer(now, CreateCustomerRequest{ID: "cus_123", Plan: "starter", Type: "user", Label: "Jane Doe", Metadata: map[string]string{"email": "jane@example.com"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []AddCapRequest{
		{Customer: "cus_123", Value: dec("20"), CapID: "ai_overage_cap", OverageOnly: true, IgnoreGrants: true, ResetSch: "monthly:1"},
		{Customer: "cus_123", Value: dec("15"), CapID: "ai_weekly_guardrail", OverageOnly: true, IgnoreGrants: true, ResetSch: "weekly:mon"},
	} {
		if _, _, err := e.AddCap(now, c); err != nil {
			t.Fatal(err)
		}
	}
	allow := func(v string, want bool, wantCap string) Decision {
		t.Helper()
		d, err := e.Allow(now, AllowRequest{Customer: "cus_123", Entitlement: "ai_chat", Value: dec(v)})
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != want || d.CapID != wantCap {
			t.Fatalf("allow %s: allowed=%v reason=%q cap=%q events=%v; want allowed=%v cap=%q", v, d.Allowed, d.Reason, d.CapID, eventTypes(d.Events), want, wantCap)
		}
		return d
	}
	capv := func(id, want string) {
		t.Helper()
		v, err := e.GetCap(now, "cus_123", id)
		if err != nil {
			t.Fatal(err)
		}
		if !v.MeterValue.Equal(dec(want)) {
			t.Fatalf("cap %s meter_value = %s, want %s", id, v.MeterValue, want)
		}
	}
	allow("6420", true, "")
	allow("6420", true, "")
	capv("ai_overage_cap", "0")
	d := allow("6420", true, "")
	if len(d.Events) != 1 || d.Events[0].Type != EventMeterOverage || !d.Events[0].Overage.Equal(dec("2593")) {
		t.Fatalf("crossing events = %+v", d.Events)
	}
	capv("ai_overage_cap", "0.7779")
	capv("ai_weekly_guardrail", "0.7779")
	d = allow("50000", false, "ai_weekly_guardrail")
	if got := eventTypes(d.Events); len(got) != 1 || got[0] != EventCapLimit {
		t.Fatalf("deny events = %v", got)
	}
	allow("40000", true, "")
	capv("ai_weekly_guardrail", "12.7779")
	allow("10000", false, "ai_weekly_guardrail")
	now = ms(t, "2026-03-09T00:00:01Z")
	capv("ai_weekly_guardrail", "0")
	capv("ai_overage_cap", "12.7779")
	allow("10000", true, "")
	allow("20000", false, "ai_overage_cap")
	allow("10000", true, "")
	capv("ai_overage_cap", "18.7779")
	if u := e.Read(now, "cus_123", "ai_chat"); !u.Value.Equal(dec("79260")) {
		t.Fatalf("value = %s", u.Value)
	}
	now = ms(t, "2026-04-01T00:00:01Z")
	if u := e.Read(now, "cus_123", "ai_chat"); !u.Value.IsZero() {
		t.Fatalf("april value = %s", u.Value)
	}
	d = allow("16667", true, "")
	if got := eventTypes(d.Events); len(got) != 2 {
		t.Fatalf("april events = %v", got)
	}
	if u := e.Read(now, "cus_123", "ai_chat"); !u.Remaining.IsZero() {
		t.Fatalf("remaining = %s", u.Remaining)
	}
	capv("ai_overage_cap", "0")
}

func TestMarginBreakdown(t *testing.T) {
	e := mustEngine(t, seedPolicy, "stof")
	now := ms(t, "2026-03-02T10:00:00Z")
	if _, _, err := e.CreateCustomer(now, CreateCustomerRequest{ID: "c", Plan: "starter"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Allow(now, AllowRequest{Customer: "c", Entitlement: "ai_chat", Value: dec("26667")}); err != nil {
		t.Fatal(err)
	}
	m, err := e.MarginBreakdown(now, "c")
	if err != nil {
		t.Fatal(err)
	}
	// 10000 tokens past the plan at $0.0003 = $3 revenue; 26667 tokens at 1.5e-7 = $0.00400005 cost.
	if !m.Revenue.Equal(dec("3")) || !m.Cost.Equal(dec("0.00400005")) {
		t.Fatalf("revenue %s cost %s", m.Revenue, m.Cost)
	}
	if m.MarginPct == nil || !m.MarginPct.Equal(dec("99.87")) {
		t.Fatalf("margin %v", m.MarginPct)
	}
	// Next month the period is empty.
	m, _ = e.MarginBreakdown(ms(t, "2026-04-01T00:00:01Z"), "c")
	if !m.Revenue.IsZero() || !m.Cost.IsZero() || m.MarginPct != nil {
		t.Fatalf("april %+v", m)
	}
}

func TestReserveLearnsEstimates(t *testing.T) {
	e := mustEngine(t, `{"policy": {"credits": {"tok": {"overhead_cost": 0.001}}, "plans": {"p": {"default": true,
		"entitlements": {"chat": {"limit": {"credit": "tok", "value": 100000, "increment": 7}}}}}}}`, "json")
	now := ms(t, "2026-03-02T10:00:00Z")
	if _, _, err := e.CreateCustomer(now, CreateCustomerRequest{ID: "u"}); err != nil {
		t.Fatal(err)
	}
	reserve := func() Decision {
		d, err := e.Reserve(now, ReserveRequest{AllowRequest: AllowRequest{Customer: "u", Entitlement: "chat", Segment: "sonnet-4.5"}, Omitted: true})
		if err != nil || !d.Allowed {
			t.Fatalf("reserve: %v %+v", err, d)
		}
		return d
	}
	// Without samples the hold is the standard increment.
	d := reserve()
	if u := e.Read(now, "u", "chat"); !u.Held.Equal(dec("7")) {
		t.Fatalf("held %s, want the increment 7", u.Held)
	}
	// Settle five calls of 100, 200, 300, 400, 500 tokens: mean 300, population sd ~141.42.
	for i, v := range []string{"100", "200", "300", "400", "500"} {
		if i > 0 {
			d = reserve()
		}
		if _, err := e.Settle(now, d.HoldID, AllowRequest{Customer: "u", Entitlement: "chat", Value: dec(v), Segment: "sonnet-4.5"}); err != nil {
			t.Fatal(err)
		}
	}
	est, err := e.EstimateUsage("u", "chat", "sonnet-4.5", nil, decimal.Zero)
	if err != nil || est == nil {
		t.Fatalf("estimate: %v %v", est, err)
	}
	// 300 + 1.2816 * sqrt(20000) = 481.2461...
	if est.Samples != 5 || est.Value.Round(2).String() != "481.25" || est.Segment != "sonnet-4_5" || est.Source != "customer" {
		t.Fatalf("estimate %+v", est)
	}
	if u := e.Read(now, "u", "chat"); !u.Held.IsZero() || !u.Value.Equal(dec("1500")) {
		t.Fatalf("after settles: held %s value %s", u.Held, u.Value)
	}
	reserve()
	if u := e.Read(now, "u", "chat"); u.Held.Round(2).String() != "481.25" {
		t.Fatalf("held %s, want the 0.9 estimate", u.Held)
	}
}

func TestStofFunctionsWarnNotFail(t *testing.T) {
	p, err := LoadPolicy(`policy: {
  credits: { ai_token: { price: { amount: 0.00002 } overhead_cost: 0.000003
      fn overhead(units: float, context?: obj) -> float { units * self.overhead_cost } } }
  plans: { free: { default: true entitlements: { chat: { limit: { credit: 'ai_token', value: 10 } } } } }
  notifications: { low: { fn matches(type: str, event: obj) -> bool { true } } }
}`, "stof")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 2 || !strings.Contains(p.Warnings[0], "policy.credits.ai_token.overhead: Stof function overhead() is not executed") {
		t.Fatalf("warnings %q", p.Warnings)
	}
	e := New(p)
	now := ms(t, "2026-03-02T10:00:00Z")
	e.CreateCustomer(now, CreateCustomerRequest{ID: "u"})
	d, err := e.Allow(now, AllowRequest{Customer: "u", Entitlement: "chat", Value: dec("4")})
	if err != nil || !d.Allowed || !d.Events[0].Meter.OverheadDiff.Equal(dec("0.000012")) {
		t.Fatalf("static fallback: %v %+v", err, d)
	}
}

func TestCheckAmountBounds(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"0", true}, {"1.500000000000000000000", true}, {"0.000000000000000001", true},
		{"0.0000000000000000001", false}, {"999999999999999999999999", true},
		{"1000000000000000000000000", false}, {"-12.5", true}, {"1e24", false}, {"1e23", true},
	} {
		err := CheckAmount("value", dec(tc.v))
		if (err == nil) != tc.ok {
			t.Errorf("CheckAmount(%s) = %v, want ok=%v", tc.v, err, tc.ok)
		}
	}
	// A hostile exponent is refused without formatting the number.
	if err := CheckAmount("value", decimal.New(1, 2_000_000_000)); err == nil {
		t.Fatal("1e2000000000 accepted")
	}
	if err := CheckAmount("value", decimal.New(1, -2_000_000_000)); err == nil {
		t.Fatal("1e-2000000000 accepted")
	}
}
