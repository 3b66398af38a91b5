//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/linearize"
)

// outRoot is where a failed run leaves its history, visualisations and logs.
const outRoot = "out"

// recorded is the resolved history of the last successful fault run, for
// the checker's self-test.
var recorded *linearize.History

// faultRunFailed is set when TestFaultInjection's checks failed.
var faultRunFailed bool

// TestFaultInjection runs the capped workload against the compose cluster
// while injecting faults, then checks every decision.
func TestFaultInjection(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	out := filepath.Join(outRoot, time.Now().Format("20060102-150405"))
	ids := h.bringUp(t, out)

	w := newWorkload(h, faultShape, 8000, ids)
	if err := w.fill(ctx, 2*faultShape.Slots); err != nil {
		t.Fatal(err)
	}
	runStart := time.Now()
	h.logf("workload: %d clients (%d per node), %d active customers", workersPerNode*len(ids), workersPerNode, faultShape.Slots)
	stop := w.run(ctx)
	faults, faultErr := h.inject(ctx, w, allFaults())
	sleep(ctx, steadyGap)
	stop()
	runTime := time.Since(runStart)
	h.logf("workload stopped after %s", runTime.Round(time.Second))
	if faultErr != nil {
		t.Errorf("fault injection: %v", faultErr)
		if err := h.waitHealthy(ctx, recoverLimit, w.liveNodes()...); err != nil {
			t.Fatalf("cluster did not recover: %v", err)
		}
	}

	v := w.check(ctx, out)
	printSummary(t, h, w, v, faults, runTime)
	if !v.ok() {
		faultRunFailed = true
		// What was checked (unknowns resolved) and what the clients saw.
		for name, hist := range map[string]linearize.History{"history.json": v.resolved, "history-raw.json": w.rec.History()} {
			if _, err := saveHistory(out, name, hist); err != nil {
				t.Logf("save %s: %v", name, err)
			}
		}
		t.Errorf("checks failed; history in e2e/%s, visualisations: %v", out, v.Lin.Visualizations)
		return
	}
	resolved := v.resolved
	recorded = &resolved
}

// check runs every post-run check. The order matters: unknowns are
// resolved before the meters are read, and the meters before the sample of
// acknowledged keys is replayed (a replay that wrongly applies again would
// change them).
func (w *workload) check(ctx context.Context, out string) *verdict {
	v := &verdict{}
	h := w.h
	live := w.liveNodes()
	// In-flight proposals end with the server's request timeout (10s):
	// after that nothing can still apply an old request id.
	sleep(ctx, 12*time.Second)
	if err := h.waitHealthy(ctx, recoverLimit, live...); err != nil {
		v.SettleErr = err
		return v
	}
	resolved := w.resolve(ctx, v)
	v.resolved = resolved
	h.logf("unknown allows: %d (had applied %d, applied by replay %d, unresolved %d)",
		v.Unknown, v.ResolvedBefore, v.ResolvedByReplay, v.Unresolved)
	w.finalMeters(ctx, resolved, v)
	h.logf("final meters: %d customers, lost %d, extra %d, over cap %d", v.Customers, v.Lost, v.Extra, v.OverCap)
	w.replaySample(ctx, 300, v)
	h.logf("replayed %d acknowledged keys: %d not answered as the same duplicate", v.DupSampled, v.DupBad)
	v.Shards, v.Replicas, v.Diverged, v.SettleErr = h.settle(ctx, live, w.removedNodes(), min(3, len(live)), 2*time.Minute)
	begin := time.Now()
	v.Lin, v.LinErr = linearize.Check(ctx, resolved, 4*time.Minute, out)
	h.logf("linearizability: %s (%.1fs)", linSummary(v.Lin, v.LinErr), time.Since(begin).Seconds())
	v.OverCap = max(v.OverCap, v.Lin.OverCap)
	return v
}

func printSummary(t *testing.T, h *harness, w *workload, v *verdict, faults []fault, runTime time.Duration) {
	t.Helper()
	var b strings.Builder
	row := func(k, val string) { fmt.Fprintf(&b, "| %-34s | %s |\n", k, val) }
	fmt.Fprintf(&b, "\nE2E summary: %d nodes in %d regions, %d clients, run %s\n\n", len(w.liveNodes()), regions(w.liveNodes()),
		workersPerNode*len(w.homes), runTime.Round(time.Second))
	row("check", "result")
	row(strings.Repeat("-", 34), "------")
	row("operations", fmt.Sprintf("%d (allows %d: %d allowed, %d denied, %d unknown; reads %d, %d failed)",
		w.st.allows.Load()+w.st.reads.Load(), w.st.allows.Load(), w.st.allowed.Load(), w.st.denied.Load(),
		w.st.unknownAllows.Load(), w.st.reads.Load(), w.st.failedReads.Load()))
	row("customers", fmt.Sprintf("%d metered (%d provisioned)", v.Customers, w.st.provisioned.Load()))
	row("faults injected", fmt.Sprintf("%d", len(faults)))
	for i, f := range faults {
		row(fmt.Sprintf("  %d", i+1), f.String())
	}
	row("unknown outcomes resolved", fmt.Sprintf("%d: %d had applied, %d applied by the replay, %d unresolved",
		v.Unknown, v.ResolvedBefore, v.ResolvedByReplay, v.Unresolved))
	row("linearizability (porcupine)", linSummary(v.Lin, v.LinErr))
	row("lost acknowledged decisions", fmt.Sprint(v.Lost))
	row("duplicated (applied twice)", fmt.Sprintf("%d (extra meter units on %d customers; %d of %d replayed keys wrong)",
		v.Extra+v.DupBad, v.Extra, v.DupBad, v.DupSampled))
	row("over-cap", fmt.Sprint(v.OverCap))
	hashes := fmt.Sprintf("equal: %d shards, %d voters, seen from every node", v.Shards, v.Replicas)
	switch {
	case v.SettleErr != nil:
		hashes = fmt.Sprintf("NOT SETTLED: %v; %s", v.SettleErr, strings.Join(v.Diverged, "; "))
	case len(v.Diverged) > 0:
		hashes = fmt.Sprintf("DIVERGED (settled later): %s", strings.Join(v.Diverged, "; "))
	}
	row("replica state hashes", hashes)
	row("anomalies", fmt.Sprint(len(w.st.anomalies)))
	row("client errors (retried)", fmt.Sprint(w.st.errCodes))
	for _, d := range v.Details {
		fmt.Fprintf(&b, "  - %s\n", d)
	}
	for _, a := range w.st.anomalies {
		fmt.Fprintf(&b, "  - anomaly: %s\n", a)
	}
	fmt.Fprintf(&b, "\ntimeline:\n")
	for _, e := range h.timeline() {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	fmt.Print(b.String())
	_ = os.MkdirAll(outRoot, 0o755)
	_ = os.WriteFile(filepath.Join(outRoot, "summary.txt"), []byte(b.String()), 0o644)
	if len(w.st.anomalies) > 0 {
		t.Errorf("%d anomalies (answers the workload never expects)", len(w.st.anomalies))
	}
}

func regions(ids []string) int {
	seen := map[string]bool{}
	for _, id := range ids {
		n, _ := nodeByID(id)
		seen[n.Region] = true
	}
	return len(seen)
}

// bringUp brings up the compose cluster's non-spare nodes, waits until they are
// healthy and returns their ids. On failure the cleanup leaves the nodes' logs
// under out; the cluster goes down afterwards unless E2E_KEEP_CLUSTER is set.
func (h *harness) bringUp(t *testing.T, out string) []string {
	t.Helper()
	var ids []string
	for _, n := range nodes {
		if !n.Spare {
			ids = append(ids, n.ID)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			h.dumpLogs(filepath.Join(out, "logs"))
			t.Logf("history, visualisations and logs are in e2e/%s", out)
		}
		if os.Getenv("E2E_KEEP_CLUSTER") == "" {
			if err := h.down(context.Background()); err != nil {
				t.Logf("down: %v", err)
			}
		}
	})
	ctx := context.Background()
	if err := h.up(ctx, ids...); err != nil {
		t.Fatal(err)
	}
	if err := h.waitHealthy(ctx, recoverLimit, ids...); err != nil {
		t.Fatal(err)
	}
	return ids
}
