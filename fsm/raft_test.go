package fsm

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/internal/raftgroup"
)

// These tests run real raft groups (internal/raftgroup) over TCP on 127.0.0.1 with
// bolt files in t.TempDir(), each replica with its own FSM.

type rnode struct {
	id   string
	dir  string
	addr raft.ServerAddress
	fsm  *FSM
	g    *raftgroup.Group // nil while killed
}

type rcluster struct {
	t     *testing.T
	base  raftgroup.Config
	opts  Options
	nodes map[string]*rnode
	order []string
	peers []raft.Server

	unknown atomic.Int64 // attempts whose outcome was unknown and were retried

	mu sync.Mutex // guards nodes' g and fsm against concurrent writers' reads
}

func newRCluster(t *testing.T, ids ...string) *rcluster {
	t.Helper()
	c := &rcluster{
		t: t,
		base: raftgroup.Config{
			GroupID:            "shard-0",
			Logger:             testLogger(),
			HeartbeatTimeout:   200 * time.Millisecond,
			ElectionTimeout:    200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond,
			CommitTimeout:      5 * time.Millisecond,
			// Small, so that a forced snapshot compacts the log and a new node
			// must be sent the snapshot (InstallSnapshot).
			TrailingLogs:     16,
			SnapshotInterval: time.Hour, // snapshots only when the test asks
		},
		opts:  Options{Logger: testLogger()},
		nodes: map[string]*rnode{},
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n.g != nil {
				_ = n.g.Close()
			}
		}
	})
	trans := map[string]raft.Transport{}
	for _, id := range ids {
		tr, err := raftgroup.NewTCPTransport("127.0.0.1:0", 0, 0, c.base.Logger)
		if err != nil {
			t.Fatal(err)
		}
		trans[id] = tr
		c.peers = append(c.peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: tr.LocalAddr()})
	}
	for _, id := range ids {
		c.open(id, trans[id], true)
	}
	return c
}

// open starts node id from its dir with a fresh FSM (a restart when the dir has
// state).
func (c *rcluster) open(id string, tr raft.Transport, bootstrap bool) *rnode {
	c.t.Helper()
	n := c.nodes[id]
	if n == nil {
		n = &rnode{id: id, dir: filepath.Join(c.t.TempDir(), id)}
		c.nodes[id] = n
		c.order = append(c.order, id)
	}
	f := New(c.opts)
	cfg := c.base
	cfg.ID, cfg.Dir, cfg.FSM, cfg.Transport = id, n.dir, f, tr
	if bootstrap {
		cfg.Bootstrap, cfg.Peers = true, c.peers
	}
	g, err := raftgroup.Open(cfg)
	if err != nil {
		c.t.Fatalf("open %s: %v", id, err)
	}
	c.mu.Lock()
	n.fsm, n.g, n.addr = f, g, g.Addr()
	c.mu.Unlock()
	return n
}

// reopen restarts a killed node on its old address and dir.
func (c *rcluster) reopen(id string) *rnode {
	c.t.Helper()
	n := c.nodes[id]
	tr, err := raftgroup.NewTCPTransport(string(n.addr), 0, 0, c.base.Logger)
	if err != nil {
		c.t.Fatalf("reopen %s: %v", id, err)
	}
	return c.open(id, tr, true) // Bootstrap is ignored: the dir has state
}

func (c *rcluster) kill(id string) {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[id]
	g := n.g
	n.g = nil
	c.mu.Unlock()
	if err := g.Kill(); err != nil {
		c.t.Logf("kill %s: %v", id, err)
	}
}

// live returns copies of the running nodes, safe to use while others kill and
// reopen nodes.
func (c *rcluster) live() []*rnode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*rnode
	for _, id := range c.order {
		if n := c.nodes[id]; n.g != nil {
			cp := *n
			out = append(out, &cp)
		}
	}
	return out
}

// leader waits for a live leader.
func (c *rcluster) leader() *rnode {
	c.t.Helper()
	var l *rnode
	waitFor(c.t, 15*time.Second, "a leader", func() string {
		for _, n := range c.live() {
			if n.g.IsLeader() {
				l = n
				return ""
			}
		}
		return "no leader"
	})
	return l
}

// apply proposes cmd on the current leader, stamping the leader's clock, and
// retries (with the same request id) until it gets an answer or ctx ends — what
// the cluster router does. It is safe to call from many goroutines.
func (c *rcluster) apply(ctx context.Context, cmd *Command, nodes func() []*rnode) (*Result, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var l *rnode
		for _, n := range nodes() {
			if g := n.g; g != nil && g.IsLeader() {
				l = n
				break
			}
		}
		if l == nil {
			time.Sleep(5 * time.Millisecond) // poll for a leader, not synchronisation
			continue
		}
		stamped := *cmd
		stamped.Timestamp = time.Now().UnixMilli()
		data, err := EncodeCommand(&stamped)
		if err != nil {
			return nil, err
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := l.g.Apply(actx, data)
		cancel()
		if err == nil {
			return resp.(*Result), nil
		}
		if errors.Is(err, raftgroup.ErrUnknownOutcome) {
			c.unknown.Add(1)
			continue // may have committed: retry with the same request id
		}
		if errors.Is(err, raftgroup.ErrNotApplied) {
			continue
		}
		return nil, err
	}
}

// mustApply applies through the live nodes and fails the test on error or
// refusal.
func (c *rcluster) mustApply(cmd *Command) *Result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.apply(ctx, cmd, c.live)
	if err != nil {
		c.t.Fatalf("apply %s: %v", cmd.OpName(), err)
	}
	if r.Err != nil {
		c.t.Fatalf("apply %s: refused: %v", cmd.OpName(), r.Err)
	}
	return r
}

// stream applies n generated commands with w concurrent writers.
func (c *rcluster) stream(g *cmdGen, n, w int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed atomic.Value
	left := n
	for range w {
		wg.Go(func() {
			for {
				mu.Lock()
				if left == 0 {
					mu.Unlock()
					return
				}
				left--
				cmd := g.next()
				mu.Unlock()
				if _, err := c.apply(ctx, cmd, c.live); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		c.t.Fatalf("stream: %v", err)
	}
}

// converge waits until every given node has applied what the leader has and all
// state hashes are equal.
func (c *rcluster) converge(nodes ...*rnode) [32]byte {
	c.t.Helper()
	l := c.leader()
	var h [32]byte
	waitFor(c.t, 20*time.Second, "replicas to converge", func() string {
		target := l.g.Raft.AppliedIndex()
		h = l.fsm.StateHash()
		for _, n := range nodes {
			if got := n.g.Raft.AppliedIndex(); got < target {
				return fmt.Sprintf("%s applied %d of %d", n.id, got, target)
			}
			if n.fsm.StateHash() != h {
				return fmt.Sprintf("%s state hash differs from leader %s (%+v vs %+v)", n.id, l.id, n.fsm.Info(), l.fsm.Info())
			}
		}
		return ""
	})
	return h
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, msg)
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
	}
}

func lastSnapshotIndex(n *rnode) string { return n.g.Raft.Stats()["last_snapshot_index"] }

// TestRaftReplicasConverge: three replicas apply the same random stream (written
// concurrently) and end with equal state hashes; a fourth replica that joins after
// the log was compacted gets the leader's snapshot (InstallSnapshot) plus the tail
// and matches; a follower restarted from its own snapshot plus log tail matches.
func TestRaftReplicasConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("raft cluster test")
	}
	c := newRCluster(t, "n1", "n2", "n3")
	c.mustApply(setPolicy(1, testPolicy))
	g := newCmdGen(42, 24)
	for _, id := range g.customers {
		c.mustApply(&Command{RequestID: "create-" + id, CreateCustomer: &engine.CreateCustomerRequest{ID: id}})
	}
	c.stream(g, 600, 6)
	h1 := c.converge(c.live()...)
	t.Logf("3 replicas converged: %x, %+v", h1[:8], c.leader().fsm.Info())

	// Compact the leader's log, write a tail, then add a fresh node.
	l := c.leader()
	if err := l.g.Raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.stream(g, 100, 4)
	tr, err := raftgroup.NewTCPTransport("127.0.0.1:0", 0, 0, c.base.Logger)
	if err != nil {
		t.Fatal(err)
	}
	n4 := c.open("n4", tr, false)
	if err := c.leader().g.AddVoter("n4", string(n4.addr)); err != nil {
		t.Fatal(err)
	}
	c.stream(g, 50, 2)
	c.converge(c.live()...)
	if s := lastSnapshotIndex(n4); s == "0" || s == "" {
		t.Fatalf("n4 caught up without a snapshot (last_snapshot_index %q)", s)
	}

	// A follower snapshots, falls behind while down, restarts from its snapshot
	// and replays the tail.
	var f *rnode
	for _, n := range c.live() {
		if !n.g.IsLeader() {
			f = n
			break
		}
	}
	if err := f.g.Raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snapIdx := lastSnapshotIndex(f)
	c.stream(g, 50, 2)
	c.kill(f.id)
	c.stream(g, 50, 2)
	rf := c.reopen(f.id)
	// NewRaft restores the newest snapshot before Open returns.
	if want, _ := strconv.ParseUint(snapIdx, 10, 64); rf.fsm.Info().AppliedIndex < want || want == 0 {
		got := rf.fsm.Info().AppliedIndex
		t.Fatalf("restarted follower did not restore its snapshot (applied %d, snapshot %s)", got, snapIdx)
	}
	h := c.converge(c.live()...)
	t.Logf("4 replicas converged after snapshot install and restart: %x", h[:8])
}

// TestRaftCrashExactlyOnce: concurrent writers allow 1 unit at a time with unique
// request ids, retrying each (same id) until it is acknowledged, while a follower
// and then the leader are killed and restarted from their dirs. Every replica's
// meters must equal the acknowledged allows exactly: none lost, none doubled.
func TestRaftCrashExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("raft cluster test")
	}
	c := newRCluster(t, "n1", "n2", "n3")
	c.mustApply(setPolicy(1, testPolicy))
	const customers = 8
	for i := range customers {
		c.mustApply(&Command{RequestID: fmt.Sprint("create-", i), CreateCustomer: &engine.CreateCustomerRequest{ID: fmt.Sprint("c", i)}})
	}

	var (
		acked      [customers]atomic.Int64
		total      atomic.Int64
		duplicates atomic.Int64
		stop       atomic.Bool
		wg         sync.WaitGroup
		errMu      sync.Mutex
		firstErr   error
	)
	live := c.live
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for w := range 6 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				cus := (w + i) % customers
				cmd := &Command{RequestID: fmt.Sprintf("w%d-%d", w, i),
					Allow: &engine.AllowRequest{Customer: fmt.Sprint("c", cus), Entitlement: "api", Value: dec("1")}}
				r, err := c.apply(ctx, cmd, live)
				if err == nil && (r.Err != nil || r.Decision == nil || !r.Decision.Allowed) {
					err = fmt.Errorf("%s: unexpected answer %+v %+v", cmd.RequestID, r.Err, r.Decision)
				}
				if err != nil {
					errMu.Lock()
					firstErr = cmp(firstErr, err)
					errMu.Unlock()
					return
				}
				if r.Duplicate {
					duplicates.Add(1)
				}
				acked[cus].Add(1)
				total.Add(1)
			}
		})
	}
	waitAcked := func(n int64) {
		waitFor(t, 30*time.Second, fmt.Sprintf("%d acknowledged allows", n), func() string {
			if got := total.Load(); got < n {
				return fmt.Sprintf("%d acknowledged", got)
			}
			return ""
		})
	}
	withNodes := func(fn func()) { fn() }

	waitAcked(150)
	var follower string
	for _, n := range live() {
		if !n.g.IsLeader() {
			follower = n.id
			break
		}
	}
	withNodes(func() { c.kill(follower) })
	waitAcked(300)
	withNodes(func() { c.reopen(follower) })
	waitAcked(400)
	leader := c.leader().id
	withNodes(func() { c.kill(leader) })
	waitAcked(550)
	withNodes(func() { c.reopen(leader) })
	waitAcked(700)
	stop.Store(true)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}

	c.converge(c.live()...)
	for _, n := range c.live() {
		for i := range customers {
			got := meter(t, n.fsm, fmt.Sprint("c", i), "api")
			if want := acked[i].Load(); !got.Equal(dec(fmt.Sprint(want))) {
				t.Errorf("%s: customer c%d meter %s, acknowledged allows %d", n.id, i, got, want)
			}
		}
	}
	t.Logf("%d acknowledged allows; %d retries after unknown outcomes; %d answered as duplicates",
		total.Load(), c.unknown.Load(), duplicates.Load())
}

func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// TestRaftDuplicateAcrossLeaderChange: a command proposed twice (a client retry
// racing its own first attempt) and again after a leader change is applied once
// and always answered with the first result.
func TestRaftDuplicateAcrossLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("raft cluster test")
	}
	c := newRCluster(t, "n1", "n2", "n3")
	c.mustApply(setPolicy(1, testPolicy))
	c.mustApply(&Command{RequestID: "create", CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})

	cmd := &Command{RequestID: "dup-1", Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "api", Value: dec("5")}}
	l := c.leader()
	// First attempt, whose answer the client never waits for (a timeout)...
	cmd.Timestamp = time.Now().UnixMilli()
	data, _ := EncodeCommand(cmd)
	first := l.g.Raft.Apply(data, time.Second)
	// ...and the retry, stamped later.
	retry := c.mustApply(cmd)
	orig := retry
	if err := first.Error(); err != nil {
		// Leadership moved under the first attempt (a loaded machine): the retry
		// answered whichever applied first, which is all a client can rely on.
		t.Logf("first attempt: %v", err)
	} else {
		orig = first.Response().(*Result)
		if orig.Duplicate || !retry.Duplicate || retry.Index != orig.Index || retry.Timestamp != orig.Timestamp {
			t.Fatalf("first %+v, retry %+v", orig, retry)
		}
	}

	// Move leadership and retry again on the new leader.
	if err := l.g.TransferLeadership("", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a new leader", func() string {
		for _, n := range c.live() {
			if n.g.IsLeader() && n.id != l.id {
				return ""
			}
		}
		return "old leader still leads"
	})
	again := c.mustApply(cmd)
	if !again.Duplicate || again.Index != orig.Index || !again.Decision.Remaining.Equal(*orig.Decision.Remaining) {
		t.Fatalf("after leader change: %+v", again)
	}
	other := *cmd
	other.Allow = &engine.AllowRequest{Customer: "c1", Entitlement: "api", Value: dec("6")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.apply(ctx, &other, c.live)
	if err != nil || r.Err == nil || r.Err.Code != CodeFailedPrecondition {
		t.Fatalf("reused id: %v %+v", err, r)
	}
	c.converge(c.live()...)
	for _, n := range c.live() {
		if got := meter(t, n.fsm, "c1", "api"); !got.Equal(dec("5")) {
			t.Fatalf("%s meter %s, want 5 (applied once)", n.id, got)
		}
	}
}
