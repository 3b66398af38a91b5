package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/capstanhq/capstan/engine"
	"github.com/shopspring/decimal"
)

// InProcess is the engine called directly under one lock, the way the replicated
// state machine serialises it, with no log, network or disk: the upper bound every
// other target is compared with.
type InProcess struct {
	mu  sync.Mutex
	eng *engine.Engine
	f   *Fixture
}

// NewInProcess returns the in-process target.
func NewInProcess() *InProcess { return &InProcess{} }

func (t *InProcess) Name() string { return "in-process" }
func (t *InProcess) Describe() string {
	return "engine.Allow under one mutex in the bench process: no replication, no network, no disk"
}
func (t *InProcess) Regions() []string    { return []string{"local"} }
func (t *InProcess) Supports(OpKind) bool { return true }
func (t *InProcess) Close() error         { return nil }

func (t *InProcess) Start(context.Context) error {
	p, err := engine.LoadPolicy(SeedPolicy, SeedPolicyFormat)
	if err != nil {
		return fmt.Errorf("in-process: load policy: %w", err)
	}
	t.eng = engine.New(p)
	return nil
}

func (t *InProcess) Setup(_ context.Context, f *Fixture) error {
	t.f = f
	now := time.Now().UnixMilli()
	prime := decimal.NewFromInt(f.Prime)
	for i, id := range f.IDs() {
		if _, _, err := t.eng.CreateCustomer(now, engine.CreateCustomerRequest{ID: id, Plan: SeedPlan}); err != nil {
			return fmt.Errorf("in-process: create %s: %w", id, err)
		}
		for _, c := range f.CapsOf(i) {
			req := engine.AddCapRequest{
				Customer: id, CapID: c.ID, Value: decimal.NewFromInt(c.USD),
				OverageOnly: true, IgnoreGrants: true, ResetSch: c.ResetSch,
			}
			if _, _, err := t.eng.AddCap(now, req); err != nil {
				return fmt.Errorf("in-process: cap %s on %s: %w", c.ID, id, err)
			}
		}
		if f.Prime > 0 {
			req := engine.AllowRequest{Customer: id, Entitlement: SeedEntitlement, Value: prime}
			if _, err := t.eng.Allow(now, req); err != nil {
				return fmt.Errorf("in-process: prime %s: %w", id, err)
			}
		}
	}
	return nil
}

func (t *InProcess) Client(int, int) (Client, error) { return inProcessClient{t}, nil }

type inProcessClient struct{ t *InProcess }

func (c inProcessClient) Do(_ context.Context, op *Op) (Outcome, error) {
	t := c.t
	req := engine.AllowRequest{Customer: t.f.ID(op.Customer), Entitlement: SeedEntitlement, Value: t.f.ValueDecimal(op.Value)}
	var d engine.Decision
	var err error
	// Each engine call takes the lock and the time on its own, as each would be its
	// own log entry; a reserve→settle pair is two calls.
	t.mu.Lock()
	if op.Kind == OpAllow {
		d, err = t.eng.Allow(time.Now().UnixMilli(), req)
	} else {
		d, err = t.eng.Reserve(time.Now().UnixMilli(), engine.ReserveRequest{AllowRequest: req})
	}
	t.mu.Unlock()
	out, err := outcome(d, err)
	if op.Kind == OpAllow || out != Allowed {
		return out, err
	}
	req.Value = t.f.ValueDecimal(op.Settle)
	t.mu.Lock()
	d, err = t.eng.Settle(time.Now().UnixMilli(), d.HoldID, req)
	t.mu.Unlock()
	return outcome(d, err)
}

func outcome(d engine.Decision, err error) (Outcome, error) {
	switch {
	case err != nil:
		return Failed, err
	case d.Allowed:
		return Allowed, nil
	default:
		return Denied, nil
	}
}

// ClosedLoop calls Allow back to back on one goroutine for d (uniform customers of
// the open population, 10 tokens each) and returns allow/s: the engine's capacity
// without the harness, the network or the lock hand-off between workers.
func (t *InProcess) ClosedLoop(d time.Duration) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	req := engine.AllowRequest{Entitlement: SeedEntitlement, Value: t.f.ValueDecimal(valSmall)}
	start := time.Now()
	n := 0
	for ; n%256 != 0 || time.Since(start) < d; n++ {
		req.Customer = t.f.ID(uint32(n % t.f.Open.Count))
		if _, err := t.eng.Allow(start.UnixMilli(), req); err != nil {
			return 0
		}
	}
	return float64(n) / time.Since(start).Seconds()
}
