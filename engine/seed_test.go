package engine

import (
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
