//go:build e2e

package e2e

import (
	"context"
	"math"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/capstanhq/capstan/internal/linearize"
)

// TestCheckerFailsOnFlippedDecision proves the checks can fail: it takes the
// history TestFaultInjection recorded from the real cluster (which passed),
// flips one decision, and expects the checker to report it. Two flips, one
// per kind of check:
//
//   - a denial at the cap turned into an allow: one unit past the cap, which
//     both porcupine and the over-cap count must catch;
//   - an early allow turned into a denial while the counter had room:
//     porcupine alone must catch it (no cap is exceeded).
func TestCheckerFailsOnFlippedDecision(t *testing.T) {
	switch {
	case faultRunFailed:
		t.Skip("TestFaultInjection failed its checks: the checker has already shown it can fail")
	case recorded == nil:
		t.Fatal("no recorded history: run TestFaultInjection first (go test -run 'TestFaultInjection|TestChecker')")
	}
	h := *recorded

	t.Run("denied at the cap flipped to allowed", func(t *testing.T) {
		i, ok := deniedAtCap(h)
		if !ok {
			t.Fatal("the recorded history has no denial on an exhausted customer")
		}
		bad, c := flip(h, i)
		res := checkBroken(t, bad, c)
		if res.OverCap == 0 || !res.PerCustomer[c].OverCap {
			t.Errorf("over-cap count missed it: %+v", res.PerCustomer[c])
		}
	})
	t.Run("allowed with room flipped to denied", func(t *testing.T) {
		i, ok := allowedWithRoom(h)
		if !ok {
			t.Fatal("the recorded history has no allow made while the counter certainly had room")
		}
		bad, c := flip(h, i)
		res := checkBroken(t, bad, c)
		if res.OverCap != 0 {
			t.Errorf("over-cap count = %d, want 0 (only linearizability is broken)", res.OverCap)
		}
	})
}

// checkBroken checks a history that must fail on customer c and returns the
// result; only c's operations are checked, to keep it quick.
func checkBroken(t *testing.T, h linearize.History, c string) linearize.Result {
	t.Helper()
	only := linearize.History{Caps: map[string]int64{c: h.Caps[c]}}
	for _, op := range h.Ops {
		if op.Input.(linearize.Input).Customer == c {
			only.Ops = append(only.Ops, op)
		}
	}
	dir := t.TempDir()
	res, err := linearize.Check(context.Background(), only, time.Minute, dir)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	got := res.PerCustomer[c]
	t.Logf("customer %s (cap %d, %d ops): OK=%v porcupine=%s overCap=%v", c, got.Cap, got.Ops, res.OK, got.Linearizable, got.OverCap)
	if res.OK {
		t.Fatalf("the checker accepted a history with a flipped decision")
	}
	if got.Linearizable != porcupine.Illegal {
		t.Errorf("porcupine said %s, want Illegal", got.Linearizable)
	}
	if got.Visualization == "" {
		t.Errorf("no visualisation written")
	} else if fi, err := os.Stat(got.Visualization); err != nil || fi.Size() == 0 {
		t.Errorf("visualisation %s: %v", got.Visualization, err)
	}
	return res
}

// flip returns a copy of h with operation i's decision inverted, and its
// customer.
func flip(h linearize.History, i int) (linearize.History, string) {
	ops := slices.Clone(h.Ops)
	out := ops[i].Output.(linearize.Output)
	out.Allowed = !out.Allowed
	ops[i].Output = out
	return linearize.History{Caps: h.Caps, Ops: ops}, ops[i].Input.(linearize.Input).Customer
}

// deniedAtCap finds a known denial on a customer whose known allows reached
// its cap.
func deniedAtCap(h linearize.History) (int, bool) {
	admitted := map[string]int64{}
	for _, op := range h.Ops {
		in, out := op.Input.(linearize.Input), op.Output.(linearize.Output)
		if in.Kind == linearize.KindAllow && out.Known && out.Allowed {
			admitted[in.Customer] += in.Amount
		}
	}
	for i, op := range h.Ops {
		in, out := op.Input.(linearize.Input), op.Output.(linearize.Output)
		if in.Kind == linearize.KindAllow && out.Known && !out.Allowed && admitted[in.Customer] == h.Caps[in.Customer] {
			return i, true
		}
	}
	return 0, false
}

// allowedWithRoom finds a known allow of one unit such that fewer than cap
// units of allows (of any outcome) were called before it returned: no
// linearization can have the counter at the cap when it runs, so a denial
// there is illegal.
func allowedWithRoom(h linearize.History) (int, bool) {
	byCustomer := map[string][]int{}
	for i, op := range h.Ops {
		byCustomer[op.Input.(linearize.Input).Customer] = append(byCustomer[op.Input.(linearize.Input).Customer], i)
	}
	for i, op := range h.Ops {
		in, out := op.Input.(linearize.Input), op.Output.(linearize.Output)
		if in.Kind != linearize.KindAllow || !out.Known || !out.Allowed || op.Return == math.MaxInt64 || h.Caps[in.Customer] < 2 {
			continue
		}
		var before int64
		for _, j := range byCustomer[in.Customer] {
			o := h.Ops[j]
			if j != i && o.Input.(linearize.Input).Kind == linearize.KindAllow && o.Call < op.Return {
				before += o.Input.(linearize.Input).Amount
			}
		}
		if before+in.Amount <= h.Caps[in.Customer] {
			return i, true
		}
	}
	return 0, false
}
