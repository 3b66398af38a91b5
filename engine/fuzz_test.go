package engine

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

// fuzzPolicy builds a policy from a few fuzzed knobs: the limit mode, value and
// period, a priced and an unpriced credit, an exchange pair and a topup.
func fuzzPolicy(mode byte, value byte, period byte) string {
	modes := []string{"hard", "soft", "observe"}
	periods := []string{`"reset_inc": "1day"`, `"reset_sch": "weekly:mon"`, `"reset_sch": "monthly:last"`, `"resets": false`}
	return fmt.Sprintf(`{"policy": {
  "credits": {
    "tok": {"price": {"amount": 0.25}, "overhead_cost": 0.01},
    "req": {}
  },
  "exchange": {"eur": {"value": 1.25, "currency": "usd"}},
  "plans": {
    "base": {"default": true,
      "entitlements": {
        "chat": {"limit": {"credit": "tok", "mode": %q, "value": %d, %s}},
        "api": {"limit": {"credit": "req", "mode": "hard", "value": 5, "hard_trailing": true}},
        "flag": {}
      },
      "topups": {"pack": {"credit": "tok", "value": 7}}
    },
    "org": {"entitlements": {"seats": {"scope": "org", "limit": {"credit": "req", "value": 3}}}}
  }}}`, modes[int(mode)%3], int(value)%50, periods[int(period)%4])
}

func snapshotState(t *testing.T, e *Engine) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, id := range e.CustomerIDs() {
		b, err := e.EncodeCustomer(id)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func cloneEngine(t *testing.T, e *Engine) *Engine {
	t.Helper()
	c := New(e.Policy())
	for _, id := range e.CustomerIDs() {
		b, err := e.EncodeCustomer(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.RestoreCustomer(b); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// op is one fuzzed call; applying it returns a comparable summary.
func applyOp(e *Engine, now int64, op []byte) (string, AllowRequest, bool) {
	customers := []string{"a", "b", "c"}
	ents := []string{"chat", "api", "flag", "seats", "nope"}
	cu := customers[int(op[1])%3]
	ent := ents[int(op[2])%5]
	val := decimal.New(int64(op[3])%40-5, -int32(op[4]%3))
	switch op[0] % 11 {
	case 0:
		_, _, err := e.CreateCustomer(now, CreateCustomerRequest{ID: cu, Refs: []string{"org1"}})
		return fmt.Sprint("create", err), AllowRequest{}, false
	case 1:
		_, _, err := e.AddCap(now, AddCapRequest{Customer: cu, Value: decimal.New(int64(op[3]%20), -1), OverageOnly: op[4]&1 == 1,
			IgnoreGrants: op[4]&2 == 2, ObserveOnly: op[4]&4 == 4, HardTrailing: op[4]&8 == 8, ResetSch: []string{"", "weekly:tue", "monthly:1"}[op[4]%3]})
		return fmt.Sprint("cap", err), AllowRequest{}, false
	case 2:
		_, _, err := e.ApplyTopup(now, cu, "pack")
		return fmt.Sprint("topup", err), AllowRequest{}, false
	case 3:
		_, _, err := e.Grant(now, GrantRequest{Customer: cu, Credit: []string{"tok", "eur", "rune"}[op[4]%3], Value: decimal.New(int64(op[3]%9)+1, 0)})
		return fmt.Sprint("grant", err), AllowRequest{}, false
	case 4:
		d, err := e.Reserve(now, ReserveRequest{AllowRequest: AllowRequest{Customer: cu, Entitlement: ent, Value: val.Abs()}, TTL: int64(op[4]) * 1000})
		return fmt.Sprint("reserve", d.Allowed, d.Reason, d.HoldID, err), AllowRequest{}, false
	case 5:
		_, _, err := e.CreateOverride(now, OverrideRequest{Customer: cu, Entitlement: ent, Value: &val, Expires: now + int64(op[4])*1000})
		return fmt.Sprint("override", err), AllowRequest{}, false
	case 6:
		_, _, err := e.CreateCustomer(now, CreateCustomerRequest{ID: "org1", Type: "org", Plan: "org"})
		return fmt.Sprint("org", err), AllowRequest{}, false
	default:
		req := AllowRequest{Customer: cu, Entitlement: ent, Value: val, Force: op[4] == 7}
		if op[0]%11 == 10 {
			req.Caps = []CallCap{{Credit: Rune, Value: decimal.New(int64(op[3]%10), 0)}}
		}
		d, err := e.Allow(now, req)
		return fmt.Sprint("allow", d.Allowed, d.Reason, d.CapID, eventTypes(d.Events), err), req, d.Allowed
	}
}

func FuzzEngine(f *testing.F) {
	f.Add(byte(1), byte(20), byte(0), []byte{0, 0, 0, 0, 0, 1, 0, 0, 5, 1, 7, 0, 1, 3, 9, 0, 8, 0, 0, 30, 2})
	f.Add(byte(0), byte(10), byte(1), []byte{6, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 0, 0, 0, 9, 1, 3, 25, 0, 10, 1, 0, 39, 0})
	f.Add(byte(2), byte(3), byte(2), []byte{0, 2, 0, 0, 0, 4, 2, 0, 20, 30, 9, 2, 0, 30, 1, 9, 2, 0, 30, 1})
	f.Fuzz(func(t *testing.T, mode, value, period byte, ops []byte) {
		if len(ops) > 5*200 {
			ops = ops[:5*200]
		}
		p, err := LoadPolicy(fuzzPolicy(mode, value, period), "json")
		if err != nil {
			t.Fatalf("policy: %v", err)
		}
		e := New(p)
		now := int64(1772445600000) // 2026-03-02T10:00Z
		for i := 0; i+5 <= len(ops); i += 5 {
			op := ops[i : i+5]
			now += int64(op[0]) * 3_600_000 // up to ~10 days a step

			// check never mutates, and agrees with allow.
			req := AllowRequest{Customer: []string{"a", "b", "c"}[int(op[1])%3], Entitlement: "chat", Value: decimal.New(int64(op[3]%30), 0)}
			before := snapshotState(t, e)
			cd, cerr := e.Check(now, req)
			if after := snapshotState(t, e); !bytes.Equal(before, after) {
				t.Fatalf("check changed state")
			}
			twin := cloneEngine(t, e)
			ad, aerr := twin.Allow(now, req)
			if (cerr == nil) != (aerr == nil) || cd.Allowed != ad.Allowed || cd.Reason != ad.Reason || cd.CapID != ad.CapID {
				t.Fatalf("check %+v/%v disagrees with allow %+v/%v", cd, cerr, ad, aerr)
			}

			// serialise -> restore -> same decisions and same state.
			clone := cloneEngine(t, e)
			got1, areq, allowed := applyOp(e, now, op)
			got2, _, _ := applyOp(clone, now, op)
			if got1 != got2 {
				t.Fatalf("restored engine decided differently: %s vs %s", got1, got2)
			}
			if a, b := snapshotState(t, e), snapshotState(t, clone); !bytes.Equal(a, b) {
				t.Fatalf("restored engine diverged after %s", got1)
			}

			// A cap never admits past its value unless observe_only, hard_trailing or force.
			if allowed && !areq.Force && areq.Value.IsPositive() {
				if c := e.Customer(areq.Customer); c != nil {
					for _, cp := range c.Caps {
						if cp.ObserveOnly || cp.HardTrailing {
							continue
						}
						if v, expired := cp.current(now); !expired && v.GreaterThan(cp.Value) {
							t.Fatalf("cap %s admitted past its value: %s > %s after %s", cp.ID, v, cp.Value, got1)
						}
					}
				}
			}
			if strings.Contains(got1, "panic") {
				t.Fatal(got1)
			}
		}
	})
}
