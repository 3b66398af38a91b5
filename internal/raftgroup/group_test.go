package raftgroup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// ---------------------------------------------------------------------------
// A small deterministic FSM: counts commands, sums their uint64 payloads and
// keeps an order-sensitive hash of everything applied, so equal state means
// equal command sequence.

type counterState struct {
	Count uint64
	Sum   uint64
	Hash  uint64
}

type counterFSM struct {
	mu       sync.Mutex
	st       counterState
	restores int // Restore calls (snapshot on start or InstallSnapshot)
	batches  int
	maxBatch int
}

var (
	_ raft.BatchingFSM = (*counterFSM)(nil)
)

func encodeCmd(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func (f *counterFSM) ApplyBatch(logs []*raft.Log) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches++
	f.maxBatch = max(f.maxBatch, len(logs))
	out := make([]any, len(logs))
	for i, l := range logs {
		// Only commands change state; LogConfiguration entries are answered
		// with nil. AppendedAt is deliberately ignored.
		if l.Type != raft.LogCommand {
			continue
		}
		if len(l.Data) != 8 {
			out[i] = fmt.Errorf("bad command length %d", len(l.Data))
			continue
		}
		v := binary.BigEndian.Uint64(l.Data)
		f.st.Count++
		f.st.Sum += v
		// FNV-1a style order-sensitive mix.
		f.st.Hash = (f.st.Hash ^ v ^ f.st.Count) * 1099511628211
		out[i] = f.st.Count
	}
	return out
}

func (f *counterFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *counterFSM) state() counterState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *counterFSM) restoreCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

func (f *counterFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return counterSnapshot(f.st), nil // a copy: Persist runs concurrently with Apply
}

func (f *counterFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var st counterState
	if err := binary.Read(rc, binary.BigEndian, &st); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	f.restores++
	return nil
}

type counterSnapshot counterState

func (s counterSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := binary.Write(sink, binary.BigEndian, counterState(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (counterSnapshot) Release() {}

// ---------------------------------------------------------------------------
// Test harness.

// testLogger discards logs unless RAFTGROUP_TEST_LOG is set to a level
// (debug, info, warn, error); raft is very chatty while nodes are killed.
func testLogger() *slog.Logger {
	v := os.Getenv("RAFTGROUP_TEST_LOG")
	if v == "" {
		return slog.New(slog.DiscardHandler)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(v)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

type node struct {
	id   string
	dir  string
	addr raft.ServerAddress
	fsm  *counterFSM
	g    *Group
}

type harness struct {
	t     *testing.T
	base  Config
	nodes map[string]*node
}

func newHarness(t *testing.T) *harness {
	h := &harness{
		t: t,
		base: Config{
			GroupID: "g-test",
			Logger:  testLogger(),
			// Small so that a forced snapshot compacts the log and a new
			// node must be sent a snapshot (InstallSnapshot).
			TrailingLogs: 16,
		},
		nodes: map[string]*node{},
	}
	t.Cleanup(func() {
		for _, n := range h.nodes {
			if n.g != nil {
				_ = n.g.Close()
			}
		}
	})
	return h
}

// open starts node id from its dir with a fresh FSM, either on transport
// (pre-created) or on bind.
func (h *harness) open(id string, transport raft.Transport, bind string, bootstrap bool, peers []raft.Server) *node {
	h.t.Helper()
	n := h.nodes[id]
	if n == nil {
		n = &node{id: id, dir: filepath.Join(h.t.TempDir(), id)}
		h.nodes[id] = n
	}
	n.fsm = &counterFSM{}
	cfg := h.base
	cfg.ID, cfg.Dir, cfg.FSM = id, n.dir, n.fsm
	cfg.Transport, cfg.Bind = transport, bind
	cfg.Bootstrap, cfg.Peers = bootstrap, peers
	g, err := Open(cfg)
	if err != nil {
		h.t.Fatalf("open %s: %v", id, err)
	}
	n.g, n.addr = g, g.Addr()
	return n
}

// bootstrap starts a new group of the given voters. Transports are created
// first so that Peers can list every address.
func (h *harness) bootstrap(ids ...string) ([]*node, []raft.Server) {
	h.t.Helper()
	trans := map[string]*raft.NetworkTransport{}
	var peers []raft.Server
	for _, id := range ids {
		tr, err := NewTCPTransport("127.0.0.1:0", 0, 0, h.base.Logger)
		if err != nil {
			h.t.Fatal(err)
		}
		trans[id] = tr
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: tr.LocalAddr()})
	}
	var nodes []*node
	for _, id := range ids {
		nodes = append(nodes, h.open(id, trans[id], "", true, peers))
	}
	return nodes, peers
}

// waitFor polls cond until it returns "" or the deadline passes.
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

// leaderAmong waits until one of nodes is leader and returns it.
func leaderAmong(t *testing.T, nodes ...*node) *node {
	t.Helper()
	var leader *node
	waitFor(t, 10*time.Second, "a leader", func() string {
		for _, n := range nodes {
			if n.g.IsLeader() {
				leader = n
				return ""
			}
		}
		return "no leader yet"
	})
	return leader
}

// converge waits until all nodes' FSMs hold count commands and equal state.
func converge(t *testing.T, count uint64, nodes ...*node) counterState {
	t.Helper()
	var st counterState
	waitFor(t, 10*time.Second, fmt.Sprintf("%d nodes to converge at %d commands", len(nodes), count), func() string {
		st = nodes[0].fsm.state()
		for _, n := range nodes {
			got := n.fsm.state()
			if got.Count != count || got != st {
				return fmt.Sprintf("%s has %+v, %s has %+v", nodes[0].id, st, n.id, got)
			}
		}
		return ""
	})
	return st
}

// applyN applies n commands concurrently through leader and returns the
// FSM responses.
func applyN(t *testing.T, leader *node, n, workers int, first uint64) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		resps []uint64
		errs  []error
		wg    sync.WaitGroup
		next  = make(chan uint64)
	)
	for range workers {
		wg.Go(func() {
			for v := range next {
				resp, err := leader.g.Apply(ctx, encodeCmd(v))
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if c, ok := resp.(uint64); ok {
					resps = append(resps, c)
				} else {
					errs = append(errs, fmt.Errorf("unexpected response %T %v", resp, resp))
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- first + uint64(i)
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d applies failed, first: %v", len(errs), n, errs[0])
	}
	return resps
}

func isErr(t *testing.T, err error, want ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %v", want)
	}
	var ge *Error
	if !errors.As(err, &ge) {
		t.Fatalf("error %v (%T) is not a *raftgroup.Error", err, err)
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Fatalf("error %q: errors.Is(%v) = false", err, w)
		}
	}
}

// ---------------------------------------------------------------------------

// TestGroupLifecycle drives one three-node group (plus a late fourth node)
// over real TCP on loopback and real bolt files through bootstrap,
// concurrent writes, a leader crash, restart catch-up, snapshot restore and
// InstallSnapshot.
func TestGroupLifecycle(t *testing.T) {
	start := time.Now()
	h := newHarness(t)
	ctx := context.Background()

	nodes, peers := h.bootstrap("n1", "n2", "n3")
	leader := leaderAmong(t, nodes...)
	if addr, err := nodes[0].g.WaitLeader(ctx); err != nil || addr == "" {
		t.Fatalf("WaitLeader: %q, %v", addr, err)
	}
	t.Logf("leader %s elected after %s", leader.id, time.Since(start))

	// 1000 concurrent commands through the leader. Each response is the
	// FSM's sequence number, so together they must be exactly 1..1000.
	resps := applyN(t, leader, 1000, 64, 1)
	sort.Slice(resps, func(i, j int) bool { return resps[i] < resps[j] })
	for i, r := range resps {
		if r != uint64(i+1) {
			t.Fatalf("responses are not a permutation of 1..1000: resps[%d] = %d", i, r)
		}
	}
	st := converge(t, 1000, nodes...)
	if want := uint64(1000 * 1001 / 2); st.Sum != want {
		t.Fatalf("sum = %d, want %d", st.Sum, want)
	}
	leader.fsm.mu.Lock()
	t.Logf("1000 applies converged after %s; leader FSM saw %d batches, largest %d",
		time.Since(start), leader.fsm.batches, leader.fsm.maxBatch)
	leader.fsm.mu.Unlock()

	// Error mapping on a follower and for reads.
	var follower *node
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	_, err := follower.g.Apply(ctx, encodeCmd(1))
	isErr(t, err, ErrNotApplied, ErrNotLeader, raft.ErrNotLeader)
	var ge *Error
	errors.As(err, &ge)
	if ge.Leader != leader.addr || string(ge.LeaderID) != leader.id {
		t.Fatalf("leader hint = %s@%s, want %s@%s", ge.LeaderID, ge.Leader, leader.id, leader.addr)
	}
	isErr(t, follower.g.VerifyLeader(ctx), ErrNotLeader)
	isErr(t, follower.g.Barrier(ctx), ErrNotLeader)
	isErr(t, follower.g.AddVoter("x", "127.0.0.1:1"), ErrNotApplied, ErrNotLeader)
	if err := leader.g.VerifyLeader(ctx); err != nil {
		t.Fatalf("VerifyLeader on leader: %v", err)
	}
	if err := leader.g.Barrier(ctx); err != nil {
		t.Fatalf("Barrier on leader: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = leader.g.Apply(cancelled, encodeCmd(1))
	isErr(t, err, ErrNotApplied, context.Canceled)
	expired, cancel2 := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel2()
	_, err = leader.g.Apply(expired, encodeCmd(1))
	isErr(t, err, ErrNotApplied, context.DeadlineExceeded)

	// Crash the leader; the survivors elect a new one and keep going.
	killed := leader
	if err := killed.g.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	_, err = killed.g.Apply(ctx, encodeCmd(1))
	isErr(t, err, ErrNotApplied, ErrClosed)
	var rest []*node
	for _, n := range nodes {
		if n != killed {
			rest = append(rest, n)
		}
	}
	killedAt := time.Now()
	leader = leaderAmong(t, rest...)
	t.Logf("new leader %s after %s", leader.id, time.Since(killedAt))
	applyN(t, leader, 200, 16, 1001)
	converge(t, 1200, rest...)

	// Restart the crashed node from the same dir and address (the transport
	// now comes from Bind); it catches up from the leader's log.
	killed = h.open(killed.id, nil, string(killed.addr), true, peers) // Bootstrap ignored: state exists
	if killed.fsm.restoreCount() != 0 {
		t.Fatalf("restarted node restored a snapshot, none was taken")
	}
	nodes = []*node{h.nodes["n1"], h.nodes["n2"], h.nodes["n3"]}
	converge(t, 1200, nodes...)
	t.Logf("crashed node caught up %s after restart", time.Since(killedAt))

	// Snapshot a follower, add a log tail, restart it: it restores the
	// snapshot in Open and then applies the tail.
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	if err := follower.g.Raft.Snapshot().Error(); err != nil {
		t.Fatalf("follower snapshot: %v", err)
	}
	applyN(t, leader, 100, 8, 1201)
	converge(t, 1300, nodes...)
	if err := follower.g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := follower.g.Close(); err != nil { // idempotent
		t.Fatalf("second Close: %v", err)
	}
	applyN(t, leader, 50, 8, 1301) // tail written while it is down
	follower = h.open(follower.id, nil, string(follower.addr), false, nil)
	if got := follower.fsm.restoreCount(); got != 1 {
		t.Fatalf("restarted follower restored %d snapshots, want 1", got)
	}
	if c := follower.fsm.state().Count; c < 1200 || c >= 1350 {
		t.Fatalf("restarted follower's snapshot state has %d commands, want the snapshot's (1200..1300)", c)
	}
	nodes = []*node{h.nodes["n1"], h.nodes["n2"], h.nodes["n3"]}
	converge(t, 1350, nodes...)

	// InstallSnapshot: the leader snapshots and compacts its log (TrailingLogs
	// 16), then a brand-new node joins and can only catch up from a snapshot.
	if err := leader.g.Raft.Snapshot().Error(); err != nil {
		t.Fatalf("leader snapshot: %v", err)
	}
	first, err := leader.g.logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first <= 1 {
		t.Fatalf("leader log not compacted: first index %d", first)
	}
	n4 := h.open("n4", nil, "127.0.0.1:0", false, nil)
	if err := leader.g.AddVoter("n4", string(n4.addr)); err != nil {
		t.Fatalf("AddVoter: %v", err)
	}
	nodes = append(nodes, n4)
	converge(t, 1350, nodes...)
	if got := n4.fsm.restoreCount(); got < 1 {
		t.Fatalf("n4 caught up without InstallSnapshot (restores = %d, leader first index %d)", got, first)
	}
	applyN(t, leader, 10, 4, 1351)
	converge(t, 1360, nodes...)

	cf := leader.g.Raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	if got := len(cf.Configuration().Servers); got != 4 {
		t.Fatalf("configuration has %d servers, want 4", got)
	}
	t.Logf("total %s", time.Since(start))
}

// TestKillLeaderDuringWrites crashes the leader under concurrent writes:
// every Apply must return (no hang), each failure must be exactly one of
// ErrNotApplied / ErrUnknownOutcome, and the surviving state must contain
// every acknowledged command and at most the unknown ones besides.
func TestKillLeaderDuringWrites(t *testing.T) {
	h := newHarness(t)
	nodes, _ := h.bootstrap("a", "b", "c")
	leader := leaderAmong(t, nodes...)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		mu                     sync.Mutex
		acked, notApp, unknown int
		wg                     sync.WaitGroup
	)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := leader.g.Apply(ctx, encodeCmd(uint64(w<<32|i)))
				mu.Lock()
				switch {
				case err == nil:
					acked++
				case errors.Is(err, ErrNotApplied) && !errors.Is(err, ErrUnknownOutcome):
					notApp++
				case errors.Is(err, ErrUnknownOutcome) && !errors.Is(err, ErrNotApplied):
					unknown++
				default:
					t.Errorf("unclassified error: %v", err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	waitFor(t, 10*time.Second, "some acknowledged writes", func() string {
		mu.Lock()
		defer mu.Unlock()
		if acked < 300 {
			return fmt.Sprintf("%d acked", acked)
		}
		return ""
	})
	if err := leader.g.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait() // every Apply returned; a hang fails via the test timeout
	if ctx.Err() != nil {
		t.Fatalf("applies only returned because ctx expired")
	}
	t.Logf("acked %d, not applied %d, unknown outcome %d", acked, notApp, unknown)

	var rest []*node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	newLeader := leaderAmong(t, rest...)
	if err := newLeader.g.Barrier(ctx); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
	got := newLeader.fsm.state().Count
	if got < uint64(acked) || got > uint64(acked+unknown) {
		t.Fatalf("new leader has %d commands; want %d acked <= n <= %d (acked+unknown)", got, acked, acked+unknown)
	}
	converge(t, got, rest...)
}

// TestSingleNodeBootstrapAndReopen covers the Bind path with empty Peers
// (single-voter bootstrap), re-bootstrap being a no-op, and the data dir
// lock after Kill.
func TestSingleNodeBootstrapAndReopen(t *testing.T) {
	h := newHarness(t)
	n := h.open("solo", nil, "127.0.0.1:0", true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.g.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "solo leader", func() string {
		if n.g.IsLeader() {
			return ""
		}
		return "not leader"
	})
	for i := range 20 {
		resp, err := n.g.Apply(ctx, encodeCmd(uint64(i)))
		if err != nil {
			t.Fatal(err)
		}
		if resp.(uint64) != uint64(i+1) {
			t.Fatalf("resp %v, want %d", resp, i+1)
		}
	}
	// A second Group on the same Dir must fail (bolt lock), not hang.
	cfg := h.base
	cfg.ID, cfg.Dir, cfg.FSM, cfg.Bind = "solo", n.dir, &counterFSM{}, "127.0.0.1:0"
	if g, err := Open(cfg); err == nil {
		_ = g.Close()
		t.Fatal("second Open on a Dir in use succeeded")
	}
	if err := n.g.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := n.g.Close(); err != nil { // no-op after Kill
		t.Fatal(err)
	}
	n = h.open("solo", nil, string(n.addr), true, nil)
	waitFor(t, 5*time.Second, "solo to re-elect itself and replay", func() string {
		if c := n.fsm.state().Count; !n.g.IsLeader() || c != 20 {
			return fmt.Sprintf("leader=%v count=%d", n.g.IsLeader(), c)
		}
		return ""
	})
	if _, err := n.g.Apply(ctx, encodeCmd(99)); err != nil {
		t.Fatal(err)
	}
	if c := n.fsm.state().Count; c != 21 {
		t.Fatalf("count %d, want 21", c)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		err        error
		dispatched bool
		want       []error
	}{
		{raft.ErrNotLeader, false, []error{ErrNotApplied, ErrNotLeader}},
		{raft.ErrEnqueueTimeout, false, []error{ErrNotApplied}},
		{raft.ErrLeadershipTransferInProgress, false, []error{ErrNotApplied}},
		{raft.ErrLeadershipLost, true, []error{ErrUnknownOutcome, ErrNotLeader}},
		{raft.ErrRaftShutdown, false, []error{ErrNotApplied, ErrClosed}},
		{raft.ErrRaftShutdown, true, []error{ErrUnknownOutcome, ErrClosed}},
		{errors.New("disk on fire"), true, []error{ErrUnknownOutcome}},
	}
	for _, c := range cases {
		got := classify(c.err, c.dispatched)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("classify(%v, %v) = %v, want %v", c.err, c.dispatched, got, c.want)
		}
	}
	// Outcomes are exclusive.
	for _, c := range cases {
		e := &Error{Kinds: classify(c.err, c.dispatched), Err: c.err}
		if errors.Is(e, ErrNotApplied) == errors.Is(e, ErrUnknownOutcome) {
			t.Errorf("%v: exactly one of ErrNotApplied/ErrUnknownOutcome must hold", c.err)
		}
		if !errors.Is(e, c.err) {
			t.Errorf("%v: cause not wrapped", c.err)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	valid := func() Config {
		return Config{ID: "n1", GroupID: "g", Dir: t.TempDir(), Bind: "127.0.0.1:0", FSM: &counterFSM{}}
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no id", func(c *Config) { c.ID = "" }, "ID is required"},
		{"no group", func(c *Config) { c.GroupID = "" }, "GroupID is required"},
		{"no dir", func(c *Config) { c.Dir = "" }, "Dir is required"},
		{"no fsm", func(c *Config) { c.FSM = nil }, "FSM is required"},
		{"no transport", func(c *Config) { c.Bind = "" }, "one of Transport or Bind"},
		{"both transports", func(c *Config) { _, c.Transport = raft.NewInmemTransport("x") }, "mutually exclusive"},
		{"retain 1", func(c *Config) { c.RetainSnapshots = 1 }, "RetainSnapshots must be >= 2"},
		{"lease > heartbeat", func(c *Config) { c.LeaderLeaseTimeout = 2 * DefaultHeartbeatTimeout }, "LeaderLeaseTimeout"},
		{"election < heartbeat", func(c *Config) { c.ElectionTimeout = 100 * time.Millisecond }, "ElectionTimeout"},
		{"append entries", func(c *Config) { c.MaxAppendEntries = 5000 }, "MaxAppendEntries"},
		{"raft minimum", func(c *Config) { c.CommitTimeout = time.Microsecond }, "CommitTimeout is too low"},
		{"peers without bootstrap", func(c *Config) {
			c.Peers = []raft.Server{{ID: "n1", Address: "a"}}
		}, "only used with Bootstrap"},
		{"peers without self", func(c *Config) {
			c.Bootstrap, c.Peers = true, []raft.Server{{ID: "n2", Address: "a"}}
		}, "must include this node"},
		{"duplicate peers", func(c *Config) {
			c.Bootstrap, c.Peers = true, []raft.Server{{ID: "n1", Address: "a"}, {ID: "n1", Address: "b"}}
		}, "duplicate ID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := valid()
			c.mutate(&cfg)
			g, err := Open(cfg)
			if err == nil {
				_ = g.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalidConfig mentioning %q", err, c.want)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		cfg := valid().withDefaults()
		if err := cfg.validate(); err != nil {
			t.Fatal(err)
		}
		rc := cfg.raftConfig(testLogger())
		if !rc.BatchApplyCh || !rc.NoLegacyTelemetry || rc.MaxAppendEntries != DefaultMaxAppendEntries ||
			cfg.RetainSnapshots != 2 || rc.HeartbeatTimeout != DefaultHeartbeatTimeout || rc.CommitTimeout != DefaultCommitTimeout {
			t.Fatalf("unexpected defaults: %+v", rc)
		}
	})
	t.Run("self address mismatch", func(t *testing.T) {
		cfg := valid()
		cfg.Bootstrap, cfg.Peers = true, []raft.Server{{ID: "n1", Address: "127.0.0.1:1"}}
		g, err := Open(cfg)
		if err == nil {
			_ = g.Close()
			t.Fatal("Open succeeded")
		}
		if !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("err = %v", err)
		}
	})
}
