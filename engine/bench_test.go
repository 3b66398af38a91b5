package engine

import (
	"fmt"
	"testing"
)

const benchPolicy = `{"policy": {
 "credits": {"tok": {"price": {"amount": 0.0003}, "overhead_cost": 1.5e-7}},
 "plans": {"pro": {"default": true, "entitlements": {
   "chat": {"limit": {"credit": "tok", "mode": "soft", "value": 1000, "reset_sch": "monthly:1"}}},
   "topups": {"promo": {"credit": "tok", "value": 1000000000}}}}}}`

// benchEngine has n customers, each past its plan limit with a large grant and two
// caps (an overage-only billed cap and a margin cap), so every allow exercises reset,
// caps, grants and the soft limit.
func benchEngine(b *testing.B, n int) (*Engine, []string) {
	p, err := LoadPolicy(benchPolicy, "json")
	if err != nil {
		b.Fatal(err)
	}
	e := New(p)
	now := int64(1772445600000)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("cus_%d", i)
		if _, _, err := e.CreateCustomer(now, CreateCustomerRequest{ID: ids[i]}); err != nil {
			b.Fatal(err)
		}
		if _, _, err := e.ApplyTopup(now, ids[i], "promo"); err != nil {
			b.Fatal(err)
		}
		for _, c := range []AddCapRequest{
			{Customer: ids[i], CapID: "billed", Value: dec("1000000000"), OverageOnly: true, IgnoreGrants: true, ResetSch: "monthly:1"},
			{Customer: ids[i], CapID: "margin", Value: dec("1000000000"), OverageOnly: true, ResetSch: "weekly:mon"},
		} {
			if _, _, err := e.AddCap(now, c); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := e.Allow(now, AllowRequest{Customer: ids[i], Entitlement: "chat", Value: dec("1000")}); err != nil {
			b.Fatal(err)
		}
	}
	return e, ids
}

func BenchmarkAllowSoftTwoCapsGrant(b *testing.B) {
	e, ids := benchEngine(b, 1024)
	req := AllowRequest{Entitlement: "chat", Value: dec("10")}
	now := int64(1772445600000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Customer = ids[i&1023]
		d, err := e.Allow(now+int64(i), req)
		if err != nil || !d.Allowed {
			b.Fatalf("allow: %v %+v", err, d)
		}
	}
}

func BenchmarkCheckSoftTwoCapsGrant(b *testing.B) {
	e, ids := benchEngine(b, 1024)
	req := AllowRequest{Entitlement: "chat", Value: dec("10")}
	now := int64(1772445600000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Customer = ids[i&1023]
		if d, err := e.Check(now, req); err != nil || !d.Allowed {
			b.Fatalf("check: %v %+v", err, d)
		}
	}
}
