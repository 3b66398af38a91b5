package fsm

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/shopspring/decimal"

	"github.com/capstanhq/capstan/engine"
)

// testPolicy has a soft metered entitlement with a calendar reset, a hard one with
// a huge limit (every allow succeeds: the crash test counts them), a feature flag,
// a topup and a second plan.
const testPolicy = `{"policy": {
 "credits": {"tok": {"price": {"amount": 0.0003}, "overhead_cost": 1.5e-7}},
 "plans": {
  "pro": {"default": true, "entitlements": {
    "chat": {"limit": {"credit": "tok", "mode": "soft", "value": 1000, "reset_sch": "monthly:1"}},
    "api": {"limit": {"credit": "tok", "mode": "hard", "value": 1000000000000}},
    "export": {}},
   "topups": {"promo": {"credit": "tok", "value": 500}}},
  "free": {"entitlements": {
    "chat": {"limit": {"credit": "tok", "mode": "hard", "value": 100}},
    "api": {"limit": {"credit": "tok", "mode": "hard", "value": 1000000000000}}}}}}}`

// testPolicy2 is a later version: the free plan's chat limit doubles.
const testPolicy2 = `{"policy": {
 "credits": {"tok": {"price": {"amount": 0.0003}, "overhead_cost": 1.5e-7}},
 "plans": {
  "pro": {"default": true, "entitlements": {
    "chat": {"limit": {"credit": "tok", "mode": "soft", "value": 1000, "reset_sch": "monthly:1"}},
    "api": {"limit": {"credit": "tok", "mode": "hard", "value": 1000000000000}},
    "export": {}},
   "topups": {"promo": {"credit": "tok", "value": 500}}},
  "free": {"entitlements": {
    "chat": {"limit": {"credit": "tok", "mode": "hard", "value": 200}},
    "api": {"limit": {"credit": "tok", "mode": "hard", "value": 1000000000000}}}}}}}`

const t0 = int64(1772445600000) // 2026-03-02T10:00:00Z

func dec(s string) decimal.Decimal { return decimal.RequireFromString(s) }

func decp(s string) *decimal.Decimal { d := dec(s); return &d }

func setPolicy(version uint64, text string) *Command {
	return &Command{RequestID: fmt.Sprintf("policy-v%d", version), SetPolicy: &PolicyOp{Text: text, Format: "json", Version: version}}
}

// applier feeds commands to an FSM as raft would, one log index at a time.
type applier struct {
	t     testing.TB
	f     *FSM
	index uint64
}

func newApplier(t testing.TB, opts Options) *applier {
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	return &applier{t: t, f: New(opts)}
}

// testLogger discards logs unless CAPSTAN_TEST_LOG is set (then: stderr, debug).
func testLogger() *slog.Logger {
	if os.Getenv("CAPSTAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (a *applier) apply(ts int64, cmd *Command) *Result {
	a.t.Helper()
	cmd.Timestamp = ts
	data, err := EncodeCommand(cmd)
	if err != nil {
		a.t.Fatalf("encode %s: %v", cmd.OpName(), err)
	}
	return a.applyRaw(data)
}

func (a *applier) applyRaw(data []byte) *Result {
	a.t.Helper()
	a.index++
	r, ok := a.f.Apply(&raft.Log{Index: a.index, Term: 1, Type: raft.LogCommand, Data: data}).(*Result)
	if !ok || r == nil {
		a.t.Fatalf("apply at %d: no *Result", a.index)
	}
	return r
}

func (a *applier) ok(ts int64, cmd *Command) *Result {
	a.t.Helper()
	r := a.apply(ts, cmd)
	if r.Err != nil {
		a.t.Fatalf("%s: refused: %v (code %d, field %q)", cmd.OpName(), r.Err, r.Err.Code, r.Err.Field)
	}
	return r
}

// meter reads one customer's meter value.
func meter(t testing.TB, f *FSM, customer, ent string) decimal.Decimal {
	t.Helper()
	var v decimal.Decimal
	err := f.Read(func(e *engine.Engine, _ int64) error {
		c := e.Customer(customer)
		if c == nil {
			return fmt.Errorf("no customer %q", customer)
		}
		if m := c.Meters[ent]; m != nil {
			v = m.Value
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// cmdGen produces a random but valid-looking command stream over a few customers:
// creates, allows of every kind, caps, grants, topups, holds, overrides, plan and
// metadata changes, occasional deletes and policy updates, and some commands that
// the engine refuses. Request ids are unique unless dup is used.
type cmdGen struct {
	rng       *rand.Rand
	customers []string
	seq       int
	policyVer uint64
	holds     []ReleaseOp
}

func newCmdGen(seed uint64, customers int) *cmdGen {
	g := &cmdGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), policyVer: 1}
	for i := range customers {
		g.customers = append(g.customers, fmt.Sprintf("cus_%03d", i))
	}
	return g
}

func (g *cmdGen) next() *Command {
	g.seq++
	c := &Command{RequestID: fmt.Sprintf("req-%d", g.seq)}
	cus := g.customers[g.rng.IntN(len(g.customers))]
	val := decimal.New(int64(g.rng.IntN(5000)), -int32(g.rng.IntN(3)))
	switch p := g.rng.IntN(100); {
	case p < 8:
		plan := ""
		if g.rng.IntN(3) == 0 {
			plan = "free"
		}
		c.CreateCustomer = &engine.CreateCustomerRequest{ID: cus, Plan: plan, Metadata: map[string]string{"n": fmt.Sprint(g.seq), "a": "b"}}
	case p < 40:
		c.Allow = &engine.AllowRequest{Customer: cus, Entitlement: []string{"chat", "api", "export", "nope"}[g.rng.IntN(4)], Value: val}
	case p < 45:
		c.Increment = &engine.AllowRequest{Customer: cus, Entitlement: "chat"}
	case p < 48:
		c.Decrement = &engine.AllowRequest{Customer: cus, Entitlement: "chat"}
	case p < 53:
		c.Reserve = &engine.ReserveRequest{AllowRequest: engine.AllowRequest{Customer: cus, Entitlement: "chat", Value: val}, TTL: 60_000}
		g.holds = append(g.holds, ReleaseOp{Customer: cus, Entitlement: "chat"})
	case p < 56 && len(g.holds) > 0:
		h := g.holds[0]
		g.holds = g.holds[1:]
		c.Settle = &SettleOp{HoldID: "hold-1", AllowRequest: engine.AllowRequest{Customer: h.Customer, Entitlement: h.Entitlement, Value: val}}
	case p < 58:
		c.Release = &ReleaseOp{Customer: cus, Entitlement: "chat", HoldID: fmt.Sprintf("hold-%d", g.rng.IntN(4))}
	case p < 64:
		c.AddCap = &engine.AddCapRequest{Customer: cus, Value: decimal.New(int64(g.rng.IntN(100)), 0), OverageOnly: g.rng.IntN(2) == 0, ResetSch: "weekly:mon"}
	case p < 67:
		c.ResetCap = &CapOp{Customer: cus, CapID: fmt.Sprintf("cap-%d", g.rng.IntN(5))}
	case p < 69:
		c.RemoveCap = &CapOp{Customer: cus, CapID: fmt.Sprintf("cap-%d", g.rng.IntN(5))}
	case p < 74:
		c.Grant = &engine.GrantRequest{Customer: cus, Credit: "tok", Value: val}
	case p < 77:
		c.ApplyTopup = &TopupOp{Customer: cus, Topup: "promo"}
	case p < 80:
		c.CreateOverride = &engine.OverrideRequest{Customer: cus, Entitlement: "chat", Value: decp("2000")}
	case p < 82:
		c.RemoveOverride = &OverrideOp{Customer: cus, Entitlement: "chat"}
	case p < 85:
		c.SetPlan = &SetPlanOp{Customer: cus, Plan: []string{"pro", "free"}[g.rng.IntN(2)], OverwriteMeters: g.rng.IntN(4) == 0}
	case p < 87:
		c.SetMetadata = &SetMetadataOp{Customer: cus, Metadata: map[string]string{"k": fmt.Sprint(g.seq)}}
	case p < 88:
		c.SetAltID = &AltOp{Customer: cus, Alt: "alt_" + cus}
	case p < 89:
		c.DeleteAltID = &AltOp{Customer: cus, Alt: "alt_" + cus}
	case p < 90:
		c.DeleteCustomer = &CustomerOp{Customer: cus}
	case p < 91:
		g.policyVer++
		text := testPolicy
		if g.policyVer%2 == 0 {
			text = testPolicy2
		}
		c = setPolicy(g.policyVer, text)
	case p < 93:
		// Refused by the engine: negative grant.
		c.Grant = &engine.GrantRequest{Customer: cus, Credit: "tok", Value: dec("-1")}
	default:
		c.Allow = &engine.AllowRequest{Customer: cus, Entitlement: "api", Value: decimal.New(1, 0)}
	}
	return c
}
