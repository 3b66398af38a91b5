package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/internal/linearize"
)

// workload hammers capped customers ("calls", cap 10) from clients on every
// node and records every operation for internal/linearize. Clients share a few
// slots; a slot moves to a fresh customer once its customer has seen cap+4
// allows, so each customer's history stays small while caps are hit often.
type workload struct {
	t       *testing.T
	c       *tcluster
	prefix  string
	rec     *linearize.Recorder
	pool    []string
	unknown sync.Map // request id -> customer, for allows with an unknown outcome

	mu       sync.Mutex
	slots    []int // index into pool
	next     int
	attempts map[string]int
	used     map[string]bool
}

const workloadCap = 10

func newWorkload(t *testing.T, c *tcluster, prefix string, customers, slots int) *workload {
	t.Helper()
	w := &workload{t: t, c: c, prefix: prefix, attempts: map[string]int{}, used: map[string]bool{}}
	caps := map[string]int64{}
	for i := range customers {
		id := fmt.Sprintf("%s%d", prefix, i)
		w.pool = append(w.pool, id)
		caps[id] = workloadCap
	}
	// Customers exist before the clock starts.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, id := range w.pool {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			create(t, c.live()[i%len(c.live())].n(), id, &engine.CreateCustomerRequest{ID: id})
		})
	}
	wg.Wait()
	for i := range slots {
		w.slots = append(w.slots, i)
	}
	w.next = slots
	w.rec = linearize.NewRecorder(caps)
	return w
}

// pick returns the customer of a random slot, or false when the pool is used
// up.
func (w *workload) pick(rng *rand.Rand) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := rng.IntN(len(w.slots))
	for w.attempts[w.pool[w.slots[s]]] >= workloadCap+4 {
		if w.next >= len(w.pool) {
			return "", false
		}
		w.slots[s] = w.next
		w.next++
	}
	cus := w.pool[w.slots[s]]
	w.attempts[cus]++
	w.used[cus] = true
	return cus, true
}

// run starts clients per live node until ctx ends or the pool is used up.
func (w *workload) run(ctx context.Context, perNode int) {
	var wg sync.WaitGroup
	nodes := w.c.nodes
	for i := range perNode * len(nodes) {
		wg.Go(func() { w.client(ctx, i, i%len(nodes)) })
	}
	wg.Wait()
}

func (w *workload) client(ctx context.Context, id, home int) {
	rng := rand.New(rand.NewPCG(uint64(id), 42))
	nodes := w.c.nodes
	for j := 0; ctx.Err() == nil; j++ {
		tn := nodes[home]
		if !tn.isUp() {
			home = (home + 1) % len(nodes)
			continue
		}
		cus, ok := w.pick(rng)
		if !ok {
			return
		}
		octx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if rng.IntN(5) == 0 {
			done := w.rec.Call(id, linearize.Read(cus))
			v, _, err := meter(octx, tn.n(), cus, cus, "calls", false)
			cancel()
			if err != nil {
				done(linearize.Unknown())
				home = (home + 1) % len(nodes)
				continue
			}
			done(linearize.ReadValue(v))
			continue
		}
		rid := fmt.Sprintf("%s-c%d-%d", w.prefix, id, j)
		in := linearize.Allow(cus, 1)
		in.RequestID = rid
		done := w.rec.Call(id, in)
		res, err := tn.n().Apply(octx, cus, callsAllow(cus, rid))
		cancel()
		switch {
		case err != nil:
			done(linearize.Unknown())
			w.unknown.Store(rid, cus)
			home = (home + 1) % len(nodes)
		case res.Err != nil:
			done(linearize.Unknown())
			w.t.Errorf("allow %s refused: %v", cus, res.Err)
		default:
			done(linearize.Decision(res.Decision.Allowed))
		}
	}
}

// check resolves unknown outcomes through the shards' idempotency tables (the
// caller has made sure nothing can still apply), then checks the history with
// porcupine and the over-cap count, and compares every customer's final meter
// with the allows the history says were admitted: none lost, none invented.
func (w *workload) check(n *Node) linearize.Result {
	w.t.Helper()
	res, problems := w.verify(n)
	for _, p := range problems {
		w.t.Error(p)
	}
	return res
}

// checkExpectingFailure is check for a cluster that is broken on purpose: the
// problems found are logged, not errors.
func (w *workload) checkExpectingFailure(n *Node) linearize.Result {
	w.t.Helper()
	res, problems := w.verify(n)
	for i, p := range problems {
		if i == 5 {
			w.t.Logf("... and %d more", len(problems)-5)
			break
		}
		w.t.Log("expected: ", p)
	}
	if len(problems) > 0 {
		res.OK = false
	}
	return res
}

func (w *workload) verify(n *Node) (linearize.Result, []string) {
	t := w.t
	t.Helper()
	var problems []string
	h := w.rec.History().Resolve(func(rid string) (linearize.Resolution, bool) {
		cus, ok := w.unknown.Load(rid)
		if !ok {
			return linearize.Resolution{}, false
		}
		r, found, err := n.LookupRequest(ctxT(t), cus.(string), rid)
		if err != nil {
			t.Errorf("lookup %s: %v", rid, err)
			return linearize.Resolution{}, false
		}
		if !found {
			return linearize.Resolution{Applied: false}, true
		}
		return linearize.Resolution{Applied: true, Allowed: r.Decision != nil && r.Decision.Allowed}, true
	})
	admitted := map[string]int64{}
	ops, unknowns := 0, 0
	for _, op := range h.Ops {
		in, out := op.Input.(linearize.Input), op.Output.(linearize.Output)
		if in.Kind != linearize.KindAllow {
			continue
		}
		ops++
		if !out.Known {
			unknowns++
		} else if out.Allowed {
			admitted[in.Customer] += in.Amount
		}
	}
	if unknowns > 0 {
		problems = append(problems, fmt.Sprintf("%d allows still unknown after resolution", unknowns))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := linearize.Check(ctx, h, 60*time.Second, t.TempDir())
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	for cus := range w.used {
		v, _, err := meter(ctxT(t), n, cus, cus, "calls", false)
		if err != nil {
			t.Fatalf("final meter %s: %v", cus, err)
		}
		if v != admitted[cus] {
			problems = append(problems, fmt.Sprintf("%s: meter %d, but %d allows were admitted (acknowledged decisions lost or invented)", cus, v, admitted[cus]))
		}
	}
	t.Logf("%d allows (%d resolved from unknown) over %d customers; linearizable=%v over-cap=%d unknown-verdict=%v",
		ops, countUnknown(&w.unknown), len(w.used), res.OK, res.OverCap, res.Unknown)
	return res, problems
}

func countUnknown(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}
