//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/linearize"
)

// verdict is everything the checks found after a run.
type verdict struct {
	Customers          int
	Unknown            int // allows without a decision when the run ended
	ResolvedBefore     int // replay answered duplicate: it had been applied
	ResolvedByReplay   int // replay applied it now: it had never been applied
	Unresolved         int
	Lin                linearize.Result
	LinErr             error
	Lost, Extra        int // customers whose final meter is below / above what the decisions allow
	OverCap            int // customers over their cap (final meter or the recorded decisions)
	DupSampled, DupBad int
	Shards, Replicas   int
	Diverged           []string
	SettleErr          error
	Details            []string
	resolved           linearize.History
}

func (v *verdict) ok() bool {
	return v.Lin.OK && v.LinErr == nil && v.Lost == 0 && v.Extra == 0 && v.OverCap == 0 &&
		v.DupBad == 0 && len(v.Diverged) == 0 && v.SettleErr == nil && v.Unresolved == 0
}

func (v *verdict) detail(format string, args ...any) {
	if len(v.Details) < 40 {
		v.Details = append(v.Details, fmt.Sprintf(format, args...))
	}
}

// resolve settles the allows whose outcome the clients never learned by
// replaying them with the same idempotency key and parameters once the run is
// over: a duplicate answer is the decision the cluster recorded; a fresh
// answer means it had never been applied and is applied now (after its call,
// so still a legal place for it in the history).
func (w *workload) resolve(ctx context.Context, v *verdict) linearize.History {
	h := w.rec.History()
	var keys []linearize.Input
	seen := map[string]bool{}
	for _, op := range h.Ops {
		in, out := op.Input.(linearize.Input), op.Output.(linearize.Output)
		if in.Kind == linearize.KindAllow && !out.Known && in.RequestID != "" && !seen[in.RequestID] {
			seen[in.RequestID] = true
			keys = append(keys, in)
		}
	}
	v.Unknown = len(keys)
	var mu sync.Mutex
	res := map[string]linearize.Resolution{}
	parallel(8, len(keys), func(i int) {
		in := keys[i]
		rng := rand.New(rand.NewPCG(uint64(i), 3))
		r, err := callAllow(ctx, w.targets("", rng), &capstanv1.AllowRequest{
			Customer: in.Customer, Entitlement: entitlement, Value: fmt.Sprint(in.Amount), IdempotencyKey: in.RequestID,
		}, 30*time.Second, &stats{})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			v.Unresolved++
			v.detail("unknown %s not resolved: %v", in.RequestID, err)
			return
		}
		if r.Duplicate {
			v.ResolvedBefore++
		} else {
			v.ResolvedByReplay++
		}
		res[in.RequestID] = linearize.Resolution{Applied: true, Allowed: r.Allowed}
	})
	return h.Resolve(func(id string) (linearize.Resolution, bool) {
		r, ok := res[id]
		return r, ok
	})
}

// finalMeters compares every used customer's meter with the decisions: it
// must equal the sum of allowed amounts (plus at most the amounts still
// unknown) and never exceed the cap.
func (w *workload) finalMeters(ctx context.Context, h linearize.History, v *verdict) {
	admitted, pending := map[string]int64{}, map[string]int64{}
	for _, op := range h.Ops {
		in, out := op.Input.(linearize.Input), op.Output.(linearize.Output)
		if in.Kind != linearize.KindAllow {
			continue
		}
		switch {
		case !out.Known:
			pending[in.Customer] += in.Amount
		case out.Allowed:
			admitted[in.Customer] += in.Amount
		}
	}
	customers := w.usedCustomers()
	v.Customers = len(customers)
	var mu sync.Mutex
	parallel(8, len(customers), func(i int) {
		c := customers[i]
		rng := rand.New(rand.NewPCG(uint64(i), 5))
		val, err := readValue(ctx, w.targets("", rng), c, 30*time.Second, nil)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			v.Lost++
			v.detail("%s: final meter unreadable: %v", c, err)
		case val < admitted[c]:
			v.Lost++
			v.detail("%s: meter %d < %d acknowledged allowed units (lost decisions)", c, val, admitted[c])
		case val > admitted[c]+pending[c]:
			v.Extra++
			v.detail("%s: meter %d > %d allowed + %d unknown units (applied twice?)", c, val, admitted[c], pending[c])
		}
		if val > w.caps[c] {
			v.OverCap++
			v.detail("%s: meter %d over cap %d", c, val, w.caps[c])
		}
	})
}

// replaySample replays up to n acknowledged allows: each must come back as a
// duplicate with the decision the client got first.
func (w *workload) replaySample(ctx context.Context, n int, v *verdict) {
	w.ackMu.Lock()
	acks := slices.Clone(w.acks)
	w.ackMu.Unlock()
	rand.Shuffle(len(acks), func(i, j int) { acks[i], acks[j] = acks[j], acks[i] })
	acks = acks[:min(n, len(acks))]
	v.DupSampled = len(acks)
	var mu sync.Mutex
	parallel(8, len(acks), func(i int) {
		a := acks[i]
		rng := rand.New(rand.NewPCG(uint64(i), 9))
		r, err := callAllow(ctx, w.targets("", rng), &capstanv1.AllowRequest{
			Customer: a.Customer, Entitlement: entitlement, Value: "1", IdempotencyKey: a.Key,
		}, 30*time.Second, &stats{})
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			v.DupBad++
			v.detail("replay %s: %v", a.Key, err)
		case !r.Duplicate:
			v.DupBad++
			v.detail("replay %s: applied again (duplicate=false, allowed=%v)", a.Key, r.Allowed)
		case r.Allowed != a.Allowed:
			v.DupBad++
			v.detail("replay %s: decision changed from allowed=%v to %v", a.Key, a.Allowed, r.Allowed)
		}
	})
}

func (w *workload) usedCustomers() []string {
	w.ackMu.Lock()
	defer w.ackMu.Unlock()
	out := make([]string, 0, len(w.used))
	for c := range w.used {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// replica is one voter of one shard, as its node reports it.
type replica struct {
	node             string
	state            string
	applied, hashIdx uint64
	hash             string
}

// settle polls AdminService.Status on every given node until one round in
// which every node's answer shows, for every shard, at least wantReplicas
// voters, all reachable, all with the same state hash at the same applied
// index (the hash's index: a busy shard's hash is recomputed at most every
// few seconds, so the indexes are compared as the hashes describe them).
// Two voters with the same index and different hashes have diverged: that
// is reported whether or not the cluster settles later. A removed node must
// not be a voter of any shard. It returns the shard
// and replica counts, or what still differs when timeout passes.
func (h *harness) settle(ctx context.Context, ids, removed []string, wantReplicas int, timeout time.Duration) (shards, replicas int, diverged []string, err error) {
	deadline := time.Now().Add(timeout)
	begin := time.Now()
	seenDiverged := map[string]bool{}
	for round := 1; ; round++ {
		var problems []string
		shards, replicas = 0, 0
		for _, id := range ids {
			st, err := h.status(ctx, id)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: status: %v", id, err))
				continue
			}
			shards, replicas = len(st.Shards), 0
			for _, sh := range st.Shards {
				var rs []replica
				for _, r := range sh.Replicas {
					rs = append(rs, replica{node: r.NodeId, state: r.State, applied: r.AppliedIndex, hashIdx: r.HashIndex, hash: r.StateHash})
				}
				if len(sh.Replicas) == 0 && hosts(sh) { // a standalone node reports only itself
					rs = append(rs, replica{node: id, state: sh.State, applied: sh.AppliedIndex, hashIdx: sh.HashIndex, hash: sh.StateHash})
				}
				replicas += len(rs)
				for i, a := range rs {
					for _, b := range rs[i+1:] {
						if a.hash != "" && b.hash != "" && a.hashIdx == b.hashIdx && a.hash != b.hash {
							seenDiverged[fmt.Sprintf("shard %d: %s and %s differ at index %d", sh.Shard, a.node, b.node, a.hashIdx)] = true
						}
					}
				}
				for _, r := range rs {
					if slices.Contains(removed, r.node) {
						problems = append(problems, fmt.Sprintf("via %s, shard %d: removed node %s is still a voter", id, sh.Shard, r.node))
					}
				}
				if !agree(rs, wantReplicas) {
					problems = append(problems, fmt.Sprintf("via %s, shard %d: %s", id, sh.Shard, describeReplicas(rs)))
				}
			}
			if len(st.Shards) == 0 {
				problems = append(problems, id+": no shard reported")
			}
		}
		for d := range seenDiverged {
			diverged = append(diverged, d)
		}
		sort.Strings(diverged)
		if len(problems) == 0 {
			h.logf("settled: %d shards, %d voters with equal state hashes at equal indexes, seen from %d nodes (after %.1fs, %d rounds)",
				shards, replicas, len(ids), time.Since(begin).Seconds(), round)
			return shards, replicas, diverged, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			sort.Strings(problems)
			return shards, replicas, append(diverged, problems...), fmt.Errorf("not settled after %s", timeout)
		}
		diverged = nil
		sleep(ctx, time.Second)
	}
}

// agree reports whether a shard's voters are enough, reachable, and report
// the same hash at the same index.
func agree(rs []replica, want int) bool {
	if len(rs) < want {
		return false
	}
	for _, r := range rs {
		if r.hash == "" || r.state == "unreachable" || r.hashIdx != rs[0].hashIdx || r.hash != rs[0].hash {
			return false
		}
	}
	return true
}

// hosts reports whether a node's own fields in a Status entry describe a
// replica it holds.
func hosts(sh *capstanv1.ShardStatus) bool {
	switch sh.State {
	case "Leader", "Follower", "Candidate":
		return sh.StateHash != ""
	}
	return false
}

func describeReplicas(rs []replica) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		h := r.hash
		if len(h) > 12 {
			h = h[:12]
		}
		parts[i] = fmt.Sprintf("%s %s applied=%d hash@%d=%s", r.node, r.state, r.applied, r.hashIdx, h)
	}
	return strings.Join(parts, ", ")
}

// parallel runs fn(0..n-1) on k goroutines.
func parallel(k, n int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// savedOp is one operation in a saved history.
type savedOp struct {
	Client    int    `json:"client"`
	Kind      string `json:"kind"`
	Customer  string `json:"customer"`
	Amount    int64  `json:"amount,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Known     bool   `json:"known"`
	Allowed   bool   `json:"allowed,omitempty"`
	Value     int64  `json:"value,omitempty"`
	Call      int64  `json:"call_ns"`
	Return    int64  `json:"return_ns"` // math.MaxInt64: open (unknown or resolved late)
}

// saveHistory writes h as JSON under dir.
func saveHistory(dir, name string, h linearize.History) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ops := make([]savedOp, len(h.Ops))
	caps := map[string]int64{} // only the customers the operations touch
	for i, op := range h.Ops {
		in, out := op.Input.(linearize.Input), op.Output.(linearize.Output)
		caps[in.Customer] = h.Caps[in.Customer]
		kind := "allow"
		if in.Kind == linearize.KindRead {
			kind = "read"
		}
		ops[i] = savedOp{Client: op.ClientId, Kind: kind, Customer: in.Customer, Amount: in.Amount, RequestID: in.RequestID,
			Known: out.Known, Allowed: out.Allowed, Value: out.Value, Call: op.Call, Return: op.Return}
	}
	b, err := json.MarshalIndent(struct {
		Caps map[string]int64 `json:"caps"`
		Ops  []savedOp        `json:"ops"`
	}{caps, ops}, "", " ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, b, 0o644)
}

// linSummary says what porcupine found.
func linSummary(r linearize.Result, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	var ok, illegal, unknown int
	for _, c := range r.PerCustomer {
		switch c.Linearizable {
		case porcupine.Ok:
			ok++
		case porcupine.Illegal:
			illegal++
		default:
			unknown++
		}
	}
	switch {
	case illegal > 0:
		return fmt.Sprintf("VIOLATION: %d of %d customers not linearizable", illegal, len(r.PerCustomer))
	case unknown > 0:
		return fmt.Sprintf("UNKNOWN: porcupine timed out on %d of %d customers", unknown, len(r.PerCustomer))
	}
	return fmt.Sprintf("ok (%d customers)", ok)
}
