package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	"github.com/capstanhq/capstan/internal/raftgroup"
)

const testPolicy = `{"policy": {
 "credits": {"tok": {"price": {"amount": 0.0003}}},
 "plans": {"pro": {"default": true, "entitlements": {
   "chat": {"limit": {"credit": "tok", "mode": "hard", "value": 100}},
   "api": {"limit": {"credit": "tok", "mode": "hard", "value": 1000000000000}}}}}}}`

const testPolicy2 = `{"policy": {
 "credits": {"tok": {"price": {"amount": 0.0003}}},
 "plans": {"pro": {"default": true, "entitlements": {
   "chat": {"limit": {"credit": "tok", "mode": "hard", "value": 200}},
   "api": {"limit": {"credit": "tok", "mode": "hard", "value": 1000000000000}}}}}}}`

// freeAddr finds a loopback port to reuse across a restart.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func fastRaft(_ int, c *raftgroup.Config) {
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
}

func testConfig(t *testing.T, dir, addr string) Config {
	return Config{
		NodeID: "n1", DataDir: dir, RaftAddr: addr, Shards: 8, Bootstrap: true,
		Policy: testPolicy, PolicyFormat: "json", Logger: testLogger(), Raft: fastRaft,
	}
}

func openNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustApply(t *testing.T, n *Node, customer string, cmd *fsm.Command) *fsm.Result {
	t.Helper()
	r, err := n.Apply(ctxT(t), customer, cmd)
	if err != nil {
		t.Fatalf("apply %s for %s: %v", cmd.OpName(), customer, err)
	}
	if r.Err != nil {
		t.Fatalf("apply %s for %s: refused: %v", cmd.OpName(), customer, r.Err)
	}
	return r
}

func allow(customer, id string, v int64) *fsm.Command {
	return &fsm.Command{RequestID: id, Allow: &engine.AllowRequest{Customer: customer, Entitlement: "api", Value: decimal.New(v, 0)}}
}

func meterOf(t *testing.T, n *Node, customer string, stale bool) decimal.Decimal {
	t.Helper()
	var v decimal.Decimal
	err := n.Read(ctxT(t), customer, stale, func(e *engine.Engine, now int64) error {
		if now == 0 {
			return errors.New("no time")
		}
		c := e.Customer(customer)
		if c == nil {
			return fmt.Errorf("no customer %s", customer)
		}
		v = c.Meters["api"].Value
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func hashes(t *testing.T, n *Node) map[int]string {
	t.Helper()
	out := map[int]string{}
	for id := range n.Shards() {
		h, idx, err := n.ShardStateHash(id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = fmt.Sprintf("%x@%d", h[:8], idx)
	}
	return out
}

// TestNodeReopen: a single node with 8 shards takes allows for many customers,
// closes, reopens from the same directory without re-bootstrapping, has the same
// state on every shard, remembers request ids, and keeps deciding.
func TestNodeReopen(t *testing.T) {
	dir, addr := filepath.Join(t.TempDir(), "n1"), freeAddr(t)
	n := openNode(t, testConfig(t, dir, addr))
	if _, _, v := n.Policy(); v != 1 {
		t.Fatalf("bootstrap policy version %d", v)
	}

	const customers = 64
	want := map[string]int64{}
	shardsUsed := map[int]bool{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range customers {
		wg.Go(func() {
			cus := fmt.Sprint("cus_", i)
			mustApply(t, n, cus, &fsm.Command{RequestID: "create-" + cus, CreateCustomer: &engine.CreateCustomerRequest{ID: cus}})
			total := int64(0)
			for j := range 1 + i%5 {
				r := mustApply(t, n, cus, allow(cus, fmt.Sprintf("a-%s-%d", cus, j), int64(j+1)))
				if !r.Decision.Allowed || r.PolicyVersion != 1 {
					t.Errorf("%s: %+v", cus, r.Decision)
				}
				total += int64(j + 1)
			}
			mu.Lock()
			want[cus] = total
			shardsUsed[n.ShardFor(cus)] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(shardsUsed) != 8 {
		t.Fatalf("customers landed on %d of 8 shards", len(shardsUsed))
	}
	for cus, v := range want {
		if got := meterOf(t, n, cus, false); !got.Equal(decimal.New(v, 0)) {
			t.Fatalf("%s: meter %s, want %d", cus, got, v)
		}
	}
	// Snapshot half the shards so the reopen goes through both paths: snapshot
	// plus log tail, and log replay alone.
	for id := range 4 {
		if err := n.shards[id].group.Raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	mustApply(t, n, "cus_1", allow("cus_1", "after-snapshot", 7))
	want["cus_1"] += 7

	st, err := n.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Shards) != 8 || st.NodeID != "n1" || st.Region != "local" || st.RaftAddr != addr {
		t.Fatalf("status %+v", st)
	}
	total := 0
	for _, sh := range st.Shards {
		if sh.Leader != "n1" || sh.State != "Leader" || sh.PolicyVersion != 1 || sh.AppliedIndex == 0 || sh.LastIndex < sh.AppliedIndex || len(sh.StateHash) != 64 {
			t.Fatalf("shard status %+v", sh)
		}
		total += sh.Customers
	}
	if total != customers {
		t.Fatalf("status counts %d customers", total)
	}
	before := hashes(t, n)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// A different shard count is refused; the same directory reopens.
	bad := testConfig(t, dir, addr)
	bad.Shards = 16
	if _, err := Open(bad); err == nil {
		t.Fatal("reopened with another shard count")
	}
	n2 := openNode(t, testConfig(t, dir, addr))
	if got := hashes(t, n2); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Fatalf("state changed across restart:\n before %v\n after  %v", before, got)
	}
	for cus, v := range want {
		if got := meterOf(t, n2, cus, true); !got.Equal(decimal.New(v, 0)) {
			t.Fatalf("after reopen %s: meter %s, want %d", cus, got, v)
		}
	}
	// A retry of a request from before the restart is recognised...
	r := mustApply(t, n2, "cus_3", allow("cus_3", "a-cus_3-0", 1))
	if !r.Duplicate {
		t.Fatalf("retry after restart applied again: %+v", r)
	}
	if r, ok, err := n2.LookupRequest(ctxT(t), "cus_3", "a-cus_3-0"); err != nil || !ok || !r.Decision.Allowed {
		t.Fatalf("lookup: %v %v %+v", err, ok, r)
	}
	if _, ok, err := n2.LookupRequest(ctxT(t), "cus_3", "never-sent"); err != nil || ok {
		t.Fatalf("lookup of an unknown id: %v %v", err, ok)
	}
	// ...and new decisions continue from the old state.
	mustApply(t, n2, "cus_3", allow("cus_3", "after-reopen", 10))
	if got := meterOf(t, n2, "cus_3", false); !got.Equal(decimal.New(want["cus_3"]+10, 0)) {
		t.Fatalf("cus_3 meter %s", got)
	}
	if _, _, v := n2.Policy(); v != 1 {
		t.Fatalf("policy version after reopen %d (re-bootstrapped?)", v)
	}
}

func TestNodeSetPolicy(t *testing.T) {
	n := openNode(t, testConfig(t, t.TempDir(), "127.0.0.1:0"))
	mustApply(t, n, "c1", &fsm.Command{CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
	chat := func(id string) *fsm.Command {
		return &fsm.Command{RequestID: id, Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: decimal.New(150, 0)}}
	}
	if r := mustApply(t, n, "c1", chat("x1")); r.Decision.Allowed {
		t.Fatal("150 allowed under a limit of 100")
	}
	v, err := n.SetPolicy(ctxT(t), testPolicy2, "json")
	if err != nil || v != 2 {
		t.Fatalf("set policy: %d %v", v, err)
	}
	if text, format, pv := n.Policy(); pv != 2 || text != testPolicy2 || format != "json" {
		t.Fatalf("policy %d %q", pv, format)
	}
	for _, sh := range must(n.Status(ctxT(t))).Shards {
		if sh.PolicyVersion != 2 {
			t.Fatalf("shard %d runs version %d", sh.Shard, sh.PolicyVersion)
		}
	}
	if r := mustApply(t, n, "c1", chat("x2")); !r.Decision.Allowed || r.PolicyVersion != 2 {
		t.Fatalf("after v2: %+v", r)
	}
	_, err = n.SetPolicy(ctxT(t), `{"policy": {"plans": {"p": {"entitlements": {"e": {"limit": {"credit": "nope"}}}}}}}`, "json")
	var fe *fsm.Error
	if !errors.As(err, &fe) || fe.Code != fsm.CodeInvalidArgument {
		t.Fatalf("bad policy: %v", err)
	}
	if _, _, pv := n.Policy(); pv != 2 {
		t.Fatal("a bad policy changed the version")
	}
}

func TestNodeApplyValidation(t *testing.T) {
	n := openNode(t, testConfig(t, t.TempDir(), "127.0.0.1:0"))
	var fe *fsm.Error
	for name, tc := range map[string]struct {
		customer string
		cmd      *fsm.Command
	}{
		"nil":        {"c1", nil},
		"no op":      {"c1", &fsm.Command{}},
		"set policy": {"c1", &fsm.Command{SetPolicy: &fsm.PolicyOp{Text: testPolicy, Version: 9}}},
		"customer":   {"", allow("", "", 1)},
	} {
		if _, err := n.Apply(ctxT(t), tc.customer, tc.cmd); !errors.As(err, &fe) || fe.Code != fsm.CodeInvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	cmd := &fsm.Command{CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}}
	mustApply(t, n, "c1", cmd)
	if cmd.RequestID == "" {
		t.Fatal("no request id generated")
	}
	// The routing key need not be the customer id: customers sharing a key share
	// a shard, and are read through the same key.
	mustApply(t, n, "org-1", &fsm.Command{CreateCustomer: &engine.CreateCustomerRequest{ID: "member-a"}})
	mustApply(t, n, "org-1", allow("member-a", "", 3))
	var v decimal.Decimal
	if err := n.Read(ctxT(t), "org-1", false, func(e *engine.Engine, _ int64) error {
		v = e.Customer("member-a").Meters["api"].Value
		return nil
	}); err != nil || !v.Equal(decimal.New(3, 0)) {
		t.Fatalf("read by routing key: %v %s", err, v)
	}
	// Engine refusals are results, not errors.
	r, err := n.Apply(ctxT(t), "c1", &fsm.Command{Grant: &engine.GrantRequest{Customer: "c1", Credit: "tok", Value: decimal.New(-1, 0)}})
	if err != nil || r.Err == nil || r.Err.Code != fsm.CodeInvalidArgument {
		t.Fatalf("%v %+v", err, r)
	}
}

// TestNodeUnavailable: a directory that was never bootstrapped has no leader;
// Apply and Read give up at the caller's deadline with ErrUnavailable.
func TestNodeUnavailable(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "127.0.0.1:0")
	cfg.Bootstrap, cfg.Shards = false, 2
	n := openNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := n.Apply(ctx, "c1", allow("c1", "x", 1))
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("apply: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := n.Read(ctx2, "c1", false, func(*engine.Engine, int64) error { return nil }); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("read: %v", err)
	}
	// A stale read answers at once: no policy yet.
	if err := n.Read(context.Background(), "c1", true, func(*engine.Engine, int64) error { return nil }); !errors.Is(err, fsm.ErrNoPolicy) {
		t.Fatalf("stale read: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(context.Background(), "c1", allow("c1", "y", 1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("apply after close: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestNodeConcurrentReadsAndWrites runs linearizable and stale reads (engine
// Check, Read, CreditRemaining) while writers allow on the same customers; with
// -race it checks that reads under the FSM's read lock never race with Apply,
// and every linearizable read sees at least the writes acknowledged before it.
func TestNodeConcurrentReadsAndWrites(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "127.0.0.1:0")
	cfg.Shards = 2
	n := openNode(t, cfg)
	for i := range 4 {
		cus := fmt.Sprint("c", i)
		mustApply(t, n, cus, &fsm.Command{CreateCustomer: &engine.CreateCustomerRequest{ID: cus}})
	}
	var acked [4]atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			cus := fmt.Sprint("c", w)
			for j := range 40 {
				mustApply(t, n, cus, allow(cus, fmt.Sprintf("w%d-%d", w, j), 1))
				acked[w].Add(1)
			}
		})
		wg.Go(func() {
			cus := fmt.Sprint("c", w)
			for j := range 40 {
				floor := acked[w].Load()
				err := n.Read(ctxT(t), cus, j%3 == 0, func(e *engine.Engine, now int64) error {
					if _, err := e.Check(now, engine.AllowRequest{Customer: cus, Entitlement: "chat", Value: decimal.New(1, 0)}); err != nil {
						return err
					}
					_ = e.Read(now, cus, "api")
					if _, err := e.CreditRemaining(now, cus, "tok"); err != nil {
						return err
					}
					if v := e.Customer(cus).Meters["api"].Value; j%3 != 0 && v.LessThan(decimal.New(floor, 0)) {
						return fmt.Errorf("linearizable read saw %s after %d acknowledged allows", v, floor)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
