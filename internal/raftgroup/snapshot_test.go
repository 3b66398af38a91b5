package raftgroup

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestSnapshotOnRequest: Snapshot snapshots what the FSM applied and drops
// the log entries it covers (keep 0), or keeps the newest keep entries; it
// proposes nothing, puts TrailingLogs back, and the group reopens from the
// snapshot and what is left of the log.
func TestSnapshotOnRequest(t *testing.T) {
	h := newHarness(t) // TrailingLogs 16
	n := h.open("solo", nil, "127.0.0.1:0", true, nil)
	leaderAmong(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	applyN(t, n, 40, 1, 0)
	if first, _ := n.g.LogRange(); first != 1 {
		t.Fatalf("log starts at %d before any snapshot", first)
	}

	applied, last := n.g.Raft.AppliedIndex(), n.g.Raft.LastIndex()
	res, err := n.g.Snapshot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Index < applied || res.Index > last || res.FirstIndex != 0 && res.FirstIndex <= res.Index || n.g.Raft.LastIndex() != last {
		t.Fatalf("snapshot %+v; applied %d, last %d -> %d", res, applied, last, n.g.Raft.LastIndex())
	}
	if first, l := n.g.LogRange(); first != res.FirstIndex || l != res.LastIndex {
		t.Fatalf("log %d..%d, result %+v", first, l, res)
	}
	if tl := n.g.Raft.ReloadableConfig().TrailingLogs; tl != 16 {
		t.Fatalf("TrailingLogs %d after the snapshot, want 16", tl)
	}

	applyN(t, n, 30, 1, 100)
	res2, err := n.g.Snapshot(ctx, 25)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Index <= res.Index || res2.LastIndex-res2.FirstIndex+1 < 25 || res2.FirstIndex > res2.Index {
		t.Fatalf("keep 25: %+v after %+v", res2, res)
	}

	// Reopen: the state comes back from the snapshot plus the log.
	want := n.fsm.state()
	if err := n.g.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.g.Snapshot(ctx, 0); err == nil {
		t.Fatal("snapshot of a closed group")
	} else {
		isErr(t, err, ErrClosed)
	}
	n = h.open("solo", nil, string(n.addr), false, nil)
	waitFor(t, 10*time.Second, "state after reopen", func() string {
		if got := n.fsm.state(); got != want {
			return fmt.Sprintf("%+v, want %+v", got, want)
		}
		return ""
	})
	if n.fsm.restoreCount() != 1 {
		t.Fatalf("%d restores on reopen, want 1", n.fsm.restoreCount())
	}
}
