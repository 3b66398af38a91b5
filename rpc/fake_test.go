package rpc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/cluster"
	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	"github.com/hashicorp/raft"
)

// fakeBackend is one real fsm.FSM driven without raft: commands are encoded
// and applied as log entries, in order, at a clock the test sets.
type fakeBackend struct {
	mu          sync.Mutex
	f           *fsm.FSM
	index       uint64
	now         int64
	unavailable bool
	applied     int      // commands that reached the FSM
	keys        []string // routing keys of Apply and Query calls, in order
}

func newFake(t *testing.T, policy, format string) *fakeBackend {
	t.Helper()
	b := &fakeBackend{f: fsm.New(fsm.Options{}), now: at(t, "2026-03-02T10:00:00Z")}
	if _, err := b.SetPolicy(context.Background(), policy, format); err != nil {
		t.Fatalf("policy: %v", err)
	}
	return b
}

func at(t *testing.T, s string) int64 {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm.UnixMilli()
}

func (b *fakeBackend) setNow(ms int64) {
	b.mu.Lock()
	b.now = ms
	b.mu.Unlock()
}

func (b *fakeBackend) Apply(ctx context.Context, customer string, cmd *fsm.Command) (*fsm.Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keys = append(b.keys, customer)
	if b.unavailable {
		return nil, fmt.Errorf("shard 0: %w", cluster.ErrUnavailable)
	}
	cmd.Timestamp = b.now
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	b.index++
	b.applied++
	res := b.f.Apply(&raft.Log{Index: b.index, Term: 1, Type: raft.LogCommand, Data: data})
	return res.(*fsm.Result), nil
}

func (b *fakeBackend) Query(ctx context.Context, key string, stale bool, kind string, args []byte) (cluster.Answer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.keys = append(b.keys, key)
	if b.unavailable {
		return cluster.Answer{}, fmt.Errorf("shard 0: %w", cluster.ErrUnavailable)
	}
	fn := Queries()[kind]
	if fn == nil {
		return cluster.Answer{}, fmt.Errorf("unknown query %q", kind)
	}
	var out []byte
	err := b.f.Read(func(e *engine.Engine, clock int64) error {
		var err error
		out, err = fn(e, max(clock, b.now), args)
		return err
	})
	_, _, v := b.f.Policy()
	return cluster.Answer{Result: out, PolicyVersion: v, Node: "fake", Stale: stale, AppliedIndex: b.index}, err
}

func (b *fakeBackend) Ready() error { return nil }

func (b *fakeBackend) Members(context.Context) ([]cluster.Member, error) {
	return []cluster.Member{{NodeID: "fake", State: cluster.StateAlive}}, nil
}

func (b *fakeBackend) TransferLeadership(context.Context, int, string) (string, error) {
	return "", fmt.Errorf("%w: one node", cluster.ErrUnavailable)
}

func (b *fakeBackend) RemoveNode(_ context.Context, id string) ([]int, map[int]string, error) {
	if id == "fake" { // the shape of cluster.Node's refusals
		return nil, nil, &fsm.Error{Code: fsm.CodeFailedPrecondition, Message: "node fake is the cluster's last node"}
	}
	return nil, nil, fmt.Errorf("%w: one node", cluster.ErrUnavailable)
}

func (b *fakeBackend) SetShardHome(context.Context, int, string) error {
	return fmt.Errorf("%w: one node", cluster.ErrUnavailable)
}

func (b *fakeBackend) CompactShards(_ context.Context, shards []int, _ uint64) ([]cluster.ReplicaCompaction, error) {
	for _, id := range shards {
		if id != 0 {
			return nil, &fsm.Error{Code: fsm.CodeInvalidArgument, Field: "shards", Message: fmt.Sprintf("no shard %d (the cluster has 1)", id)}
		}
	}
	return []cluster.ReplicaCompaction{{Shard: 0, Node: "fake", State: "Leader", Err: "nothing new to snapshot"}}, nil
}

// SaveSnapshot captures the fake's FSM as cluster.Node does on a leader.
func (b *fakeBackend) SaveSnapshot(_ context.Context, shard int, sink cluster.SnapshotSink) error {
	if shard != 0 {
		return &fsm.Error{Code: fsm.CodeInvalidArgument, Field: "shards", Message: fmt.Sprintf("no shard %d (the cluster has 1)", shard)}
	}
	b.mu.Lock()
	c, err := b.f.CaptureSnapshot()
	b.mu.Unlock()
	if err != nil {
		return err
	}
	defer c.Release()
	h := c.Header()
	if err := sink.Begin(cluster.SnapshotInfo{Shard: 0, Node: "fake", Index: h.Index, Term: h.Term,
		PolicyVersion: h.PolicyVersion, Customers: h.Customers, Dedupe: h.Dedupe}); err != nil {
		return err
	}
	return c.Write(sink)
}

func (b *fakeBackend) SetPolicy(ctx context.Context, text, format string) (uint64, error) {
	_, _, v := b.f.Policy()
	res, err := b.Apply(ctx, "", &fsm.Command{SetPolicy: &fsm.PolicyOp{Text: text, Format: format, Version: v + 1}})
	if err != nil {
		return 0, err
	}
	if res.Err != nil {
		return 0, res.Err
	}
	return v + 1, nil
}

func (b *fakeBackend) Policy() (string, string, uint64) { return b.f.Policy() }

func (b *fakeBackend) Status(ctx context.Context) (cluster.Status, error) {
	return cluster.Status{}, nil
}

func (b *fakeBackend) lastKeys(n int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.keys) < n {
		return append([]string(nil), b.keys...)
	}
	return append([]string(nil), b.keys[len(b.keys)-n:]...)
}

func (b *fakeBackend) appliedCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.applied
}
