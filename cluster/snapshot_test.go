package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	clusterv1 "github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1/clusterv1connect"
	"github.com/capstanhq/capstan/internal/raftgroup"
	"github.com/capstanhq/capstan/snapshot"
)

// bufferSink collects a saved snapshot.
type bufferSink struct {
	info   *SnapshotInfo
	begins int
	buf    bytes.Buffer
	writes int
	max    int
}

func (b *bufferSink) Begin(i SnapshotInfo) error {
	b.begins++
	b.info = &i
	return nil
}

func (b *bufferSink) Write(p []byte) (int, error) {
	if b.info == nil {
		return 0, errors.New("data before Begin")
	}
	b.writes++
	b.max = max(b.max, len(p))
	return b.buf.Write(p)
}

// restoredHash restores a saved snapshot into a fresh FSM of shard id and
// returns its state hash.
func restoredHash(t *testing.T, id int, data []byte) ([32]byte, fsm.Info) {
	t.Helper()
	f := fsm.New(fsm.Options{Shard: id, Logger: testLogger()})
	if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("restore the saved snapshot of shard %d: %v", id, err)
	}
	return f.StateHash(), f.Info()
}

// TestNodeCompactAndSave: on a standalone node, CompactShards snapshots the
// shards' state and drops the log entries it covers (the log's first entry
// moves past 1, no entry is proposed for it), keep_entries keeps the newest
// ones, and the node reopens to the same state; SaveSnapshot streams a valid
// snapshot that includes every acknowledged decision and restores to the live
// shard's state hash.
func TestNodeCompactAndSave(t *testing.T) {
	dir, addr := filepath.Join(t.TempDir(), "n1"), freeAddr(t)
	n := openNode(t, testConfig(t, dir, addr))
	lastAck := map[int]uint64{} // shard -> index of its last acknowledged decision
	for i := range 24 {
		cus := fmt.Sprint("cus_", i)
		mustApply(t, n, cus, &fsm.Command{RequestID: "create-" + cus, CreateCustomer: &engine.CreateCustomerRequest{ID: cus}})
		for j := range 3 {
			r := mustApply(t, n, cus, allow(cus, fmt.Sprintf("a-%s-%d", cus, j), 5))
			lastAck[n.ShardFor(cus)] = max(lastAck[n.ShardFor(cus)], r.Index)
		}
	}
	id := n.ShardFor("cus_0")
	s := n.hosted(id)
	if first, _ := s.group.LogRange(); first != 1 {
		t.Fatalf("shard %d's log starts at %d before compaction", id, first)
	}
	applied := s.fsm.Info().AppliedIndex
	lastBefore := s.group.Raft.LastIndex()

	rows, err := n.CompactShards(ctxT(t), []int{id}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Shard != id || rows[0].Node != "n1" || rows[0].State != "Leader" || rows[0].Failed || rows[0].Err != "" {
		t.Fatalf("compact rows %+v", rows)
	}
	r := rows[0]
	if r.SnapshotIndex < applied || r.SnapshotIndex < lastAck[id] {
		t.Fatalf("snapshot index %d, applied %d, last decision %d", r.SnapshotIndex, applied, lastAck[id])
	}
	first, last := s.group.LogRange()
	if (first != 0 && first <= r.SnapshotIndex) || first != r.FirstIndex || last != r.LastIndex {
		t.Fatalf("log after compaction %d..%d (row %d..%d), snapshot at %d", first, last, r.FirstIndex, r.LastIndex, r.SnapshotIndex)
	}
	if got := s.group.Raft.LastIndex(); got != lastBefore {
		t.Fatalf("last index %d -> %d: compaction proposed something", lastBefore, got)
	}
	if tl := s.group.Raft.ReloadableConfig().TrailingLogs; tl != raftgroup.DefaultTrailingLogs {
		t.Fatalf("TrailingLogs left at %d", tl)
	}

	// keep_entries: the newest entries stay in the log.
	for j := range 5 {
		mustApply(t, n, "cus_0", allow("cus_0", fmt.Sprint("after-compact-", j), 1))
	}
	rows, err = n.CompactShards(ctxT(t), []int{id}, 1_000_000)
	if err != nil || len(rows) != 1 || rows[0].Failed {
		t.Fatalf("compact keeping entries: %v %+v", err, rows)
	}
	if rows[0].SnapshotIndex <= r.SnapshotIndex || rows[0].LastIndex != s.group.Raft.LastIndex() ||
		rows[0].FirstIndex == 0 || rows[0].FirstIndex > r.SnapshotIndex+1 {
		t.Fatalf("compact keeping entries: %+v after %+v", rows[0], r)
	}

	// Every shard; an unknown one is refused.
	rows, err = n.CompactShards(ctxT(t), nil, 0)
	if err != nil || len(rows) != 8 {
		t.Fatalf("compact all: %v %+v", err, rows)
	}
	for i, row := range rows {
		if row.Shard != i || row.Failed || row.SnapshotIndex == 0 {
			t.Fatalf("compact all: row %+v", row)
		}
	}
	var fe *fsm.Error
	if _, err := n.CompactShards(ctxT(t), []int{1, 8}, 0); !errors.As(err, &fe) || fe.Code != fsm.CodeInvalidArgument {
		t.Fatalf("unknown shard: %v", err)
	}

	// SaveSnapshot: a valid snapshot at or past the last acknowledged
	// decision, restoring to the live state.
	lastAck[id] = mustApply(t, n, "cus_0", allow("cus_0", "before-save", 1)).Index
	var sink bufferSink
	if err := n.SaveSnapshot(ctxT(t), id, &sink); err != nil {
		t.Fatal(err)
	}
	info := sink.info
	if sink.begins != 1 || info.Shard != id || info.Node != "n1" || info.Index < lastAck[id] || info.PolicyVersion != 1 || sink.max > snapshotChunk {
		t.Fatalf("saved %+v (begins %d, largest write %d), last decision at %d", info, sink.begins, sink.max, lastAck[id])
	}
	rd, err := snapshot.NewReader(bytes.NewReader(sink.buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if h := rd.Header(); h.Shard != uint64(id) || h.Index != info.Index || h.Customers != info.Customers || h.Dedupe != info.Dedupe {
		t.Fatalf("header %+v, info %+v", h, info)
	}
	live, liveIdx, _ := n.ShardStateHash(id)
	got, gotInfo := restoredHash(t, id, sink.buf.Bytes())
	if got != live || gotInfo.AppliedIndex != info.Index || liveIdx != info.Index {
		t.Fatalf("restored %x@%d, live %x@%d", got[:8], gotInfo.AppliedIndex, live[:8], liveIdx)
	}
	if err := n.SaveSnapshot(ctxT(t), 8, &bufferSink{}); !errors.As(err, &fe) || fe.Code != fsm.CodeInvalidArgument {
		t.Fatalf("save of an unknown shard: %v", err)
	}

	// Reopening goes through the compacted logs: same state, still deciding.
	before := hashes(t, n)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n2 := openNode(t, testConfig(t, dir, addr))
	if after := hashes(t, n2); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("state changed across a restart after compaction:\n before %v\n after  %v", before, after)
	}
	if r := mustApply(t, n2, "cus_0", allow("cus_0", "before-save", 1)); !r.Duplicate {
		t.Fatalf("a request from before the compaction applied again after the restart: %+v", r)
	}
}

// TestClusterSnapshots: on a 3-node cluster, CompactShards reaches every
// replica of a shard (one row per replica, all compacted), and SaveSnapshot
// asked of a node that does not lead the shard comes from the leader and
// restores to the replicas' state.
func TestClusterSnapshots(t *testing.T) {
	c := newCluster(t, 3, 2, []string{"r1", "r2", "r3"}, nil)
	keys := customersOnEveryShard("snap-", 2)
	for _, k := range keys {
		create(t, c.nodes[0].n(), k, &engine.CreateCustomerRequest{ID: k})
	}
	var lastAck uint64
	for i := range 10 {
		r, err := c.nodes[i%3].n().Apply(ctxT(t), keys[0], callsAllow(keys[0], fmt.Sprint("snap-call-", i)))
		if err != nil || r.Err != nil {
			t.Fatalf("allow: %v %v", err, r)
		}
		lastAck = r.Index
	}
	c.waitConverged(waitLong)

	leader := c.leaderOf(0)
	var follower *tnode
	for _, tn := range c.nodes {
		if tn != leader {
			follower = tn
			break
		}
	}
	rows, err := follower.n().CompactShards(ctxT(t), []int{0}, 0)
	if err != nil {
		t.Fatal(err)
	}
	replicas := c.replicasOf(0)
	if len(rows) != len(replicas) || len(rows) != 3 {
		t.Fatalf("rows %+v for replicas %v", rows, replicas)
	}
	for i, r := range rows {
		if r.Shard != 0 || r.Node != replicas[i] || r.Failed || r.SnapshotIndex < lastAck {
			t.Fatalf("row %+v (last decision at %d)", r, lastAck)
		}
		s := c.node(r.Node).n().hosted(0)
		if first, _ := s.group.LogRange(); first != 0 && first <= 1 {
			t.Fatalf("%s: log still starts at %d", r.Node, first)
		}
	}

	var sink bufferSink
	if err := follower.n().SaveSnapshot(ctxT(t), 0, &sink); err != nil {
		t.Fatal(err)
	}
	if sink.info.Node != leader.id || sink.info.Index < lastAck || sink.begins != 1 {
		t.Fatalf("saved %+v via %s (leader %s, last decision %d)", sink.info, follower.id, leader.id, lastAck)
	}
	got, _ := restoredHash(t, 0, sink.buf.Bytes())
	live, _, _ := leader.n().ShardStateHash(0)
	if got != live {
		t.Fatalf("restored hash %x, leader's %x", got[:8], live[:8])
	}
	// The node-to-node stream needs the cluster key, like every forwarded call.
	_, api, _ := leader.addrs()
	for _, key := range []string{"", "not-the-cluster-key-0123"} {
		fc := clusterv1connect.NewForwardServiceClient(http.DefaultClient, "http://"+api, connect.WithInterceptors(sendClusterKey{key}))
		stream, err := fc.SaveSnapshot(ctxT(t), connect.NewRequest(&clusterv1.SaveSnapshotRequest{Shard: 0}))
		if err == nil {
			for stream.Receive() {
				t.Fatalf("key %q: got %v", key, stream.Msg())
			}
			err = stream.Err()
		}
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("key %q: %v", key, err)
		}
	}
	// Decisions go on after the leader's log was compacted.
	if r, err := follower.n().Apply(ctxT(t), keys[0], callsAllow(keys[0], "after-compaction")); err != nil || r.Err != nil {
		t.Fatalf("allow after compaction: %v %v", err, r)
	}
	c.waitConverged(waitLong)
}
