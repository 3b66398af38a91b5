//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/capstanhq/capstan/internal/linearize"
)

// unsafeShape crowds every client onto a few small caps, so answers from a
// lagging replica run past a cap quickly.
var unsafeShape = shape{Slots: 3, MinCap: 5, MaxCap: 10, Extra: 10, ReadShare: 0.2}

// TestUnsafeStaleAllowIsCaught runs a deliberately broken cluster: every node
// started with --unsafe-stale-allow (Allow answered from the node's own
// replica, without raft, when another node leads the shard). The checker
// must report a violation. It is skipped when the image's capstan has no
// such flag; TestCheckerFailsOnFlippedDecision proves the same point on a
// recorded history.
func TestUnsafeStaleAllowIsCaught(t *testing.T) {
	help, _ := exec.Command("docker", "run", "--rm", "capstan:latest", "serve", "--help").CombinedOutput()
	if !strings.Contains(string(help), "unsafe-stale-allow") {
		t.Skip("capstan serve has no --unsafe-stale-allow; TestCheckerFailsOnFlippedDecision shows the checker failing instead")
	}
	ctx := context.Background()
	h := newHarness(t, "docker-compose.yml", "e2e/testdata/unsafe-stale-allow.yml")
	out := filepath.Join(outRoot, "unsafe-"+time.Now().Format("20060102-150405"))
	ids := h.bringUp(t, out)
	w := newWorkload(h, unsafeShape, 2000, ids)
	if err := w.fill(ctx, 2*unsafeShape.Slots); err != nil {
		t.Fatal(err)
	}
	stop := w.run(ctx)
	sleep(ctx, 20*time.Second)
	stop()
	h.logf("broken run: %d allows (%d allowed, %d denied, %d unknown), %d reads",
		w.st.allows.Load(), w.st.allowed.Load(), w.st.denied.Load(), w.st.unknownAllows.Load(), w.st.reads.Load())

	v := &verdict{}
	resolved := w.resolve(ctx, v)
	res, err := linearize.Check(ctx, resolved, 2*time.Minute, t.TempDir())
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	illegal := 0
	for _, c := range res.PerCustomer {
		if c.Linearizable == porcupine.Illegal {
			illegal++
		}
	}
	h.logf("checker on the broken cluster: %s; over-cap customers %d", linSummary(res, nil), res.OverCap)
	if res.OK || (illegal == 0 && res.OverCap == 0) {
		t.Fatalf("the checker found no violation on a cluster that answers Allow from stale replicas "+
			"(OK=%v, illegal=%d, over-cap=%d, unknown=%v)", res.OK, illegal, res.OverCap, res.Unknown)
	}
}
