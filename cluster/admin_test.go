package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
)

// TestClusterAdmin drives the operator calls on one 3-node cluster (regions
// r1-r3, 4 shards of 3 replicas, a 3s transfer hold): leadership transfers
// that answer without waiting to hear from the new leader and are not undone
// at once by the balancer, home regions that must have a node, and node
// removal down to one node and over to a new one (states, refusals, the only
// replica moved).
func TestClusterAdmin(t *testing.T) {
	c := newCluster(t, 3, 4, []string{"r1", "r2", "r3"}, func(cfg *Config) { cfg.TransferHold = 3 * time.Second })
	for _, st := range []struct {
		name string
		fn   func(*testing.T, *tcluster)
	}{
		{"transfer answers without hearing from the new leader", testTransferDoesNotWaitForNewLeader},
		{"transfer holds leadership, then balance", testTransferHold},
		{"home region needs a node", testShardHomeRegion},
		{"remove down to one node and over to a new one", testRemoveStatesAndRefusals},
	} {
		if !t.Run(st.name, func(t *testing.T) { st.fn(t, c) }) {
			return
		}
	}
}

// settledLeader waits until shard is led from its home region and returns
// its leader and another replica (outside the home region: one replica per
// region).
func settledLeader(t *testing.T, c *tcluster, shard int) (leader, other *tnode) {
	t.Helper()
	eventually(t, waitLong, fmt.Sprintf("shard %d led from its home region", shard), func() error {
		m := c.nodes[0].n().view()
		l := c.leaderOf(shard)
		if l == nil || l.region != m.Placement[shard].Home {
			return fmt.Errorf("led by %v (home %s)", l, m.Placement[shard].Home)
		}
		leader = l
		return nil
	})
	for _, r := range c.replicasOf(shard) {
		if r != leader.id {
			return leader, c.node(r)
		}
	}
	t.Fatalf("shard %d has no replica besides %s", shard, leader.id)
	return nil, nil
}

// testTransferDoesNotWaitForNewLeader: the target hands leadership straight
// back the moment it wins (as a balancer without the hold would), often
// before the old leader ever hears from it. TransferLeadership still answers
// at once, five times over, instead of polling until its deadline for a
// leader other than itself that it never sees.
func testTransferDoesNotWaitForNewLeader(t *testing.T, c *tcluster) {
	const shard = 0
	old, to := settledLeader(t, c, shard)
	tg := to.n().hosted(shard).group
	obs := make(chan raft.Observation, 16)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		lo, ok := o.Data.(raft.LeaderObservation)
		return ok && string(lo.LeaderID) == to.id
	})
	tg.Raft.RegisterObserver(o)
	done := make(chan struct{})
	bounced := make(chan error, 16)
	go func() {
		for {
			select {
			case <-obs:
				bounced <- tg.TransferLeadership(old.id, old.n().RaftAddr())
			case <-done:
				return
			}
		}
	}()
	defer func() {
		tg.Raft.DeregisterObserver(o)
		close(done)
	}()

	for round := range 5 {
		// Raft hands leadership only to a target with the leader's whole log.
		eventually(t, waitLong, "old leader leading, target up to date", func() error {
			lg := old.n().hosted(shard).group
			if !lg.IsLeader() || tg.Raft.LastIndex() != lg.Raft.LastIndex() {
				return fmt.Errorf("%s leads: %v; last index %d there, %d on %s", old.id, lg.IsLeader(), lg.Raft.LastIndex(), tg.Raft.LastIndex(), to.id)
			}
			return nil
		})
		term0 := old.n().hosted(shard).group.Raft.CurrentTerm()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t0 := time.Now()
		got, err := old.n().TransferLeadership(ctx, shard, to.id)
		took := time.Since(t0)
		cancel()
		if err != nil {
			t.Fatalf("round %d: transfer shard %d from %s to %s: %v after %s", round, shard, old.id, to.id, err, took)
		}
		if got != to.id && got != old.id && got != "" {
			t.Fatalf("round %d: transfer answered leader %q", round, got)
		}
		if took > 5*time.Second {
			t.Fatalf("round %d: transfer took %s", round, took)
		}
		select {
		case err := <-bounced:
			t.Logf("round %d: answered %q after %s; %s handed it back (%v)", round, got, took, to.id, err)
		case <-time.After(waitLong):
			t.Fatalf("round %d: %s never led in a term after %d", round, to.id, term0)
		}
	}
	tg.Raft.DeregisterObserver(o)
	eventually(t, waitLong, "shard led from home", func() error {
		if l := c.leaderOf(shard); l != old {
			return fmt.Errorf("led by %v", l)
		}
		return nil
	})
}

// testTransferHold: a transfer out of the shard's home region stays put for
// the hold (3s; without it the balancer, every 300ms, moves leadership
// straight back), then the balancer brings it home.
func testTransferHold(t *testing.T, c *tcluster) {
	const shard = 1
	home, to := settledLeader(t, c, shard)
	var via *tnode
	for _, tn := range c.nodes {
		if tn != home && tn != to {
			via = tn // neither leads nor receives: the call is forwarded
		}
	}
	got, err := via.n().TransferLeadership(ctxT(t), shard, to.id)
	if err != nil || got != to.id {
		t.Fatalf("transfer shard %d to %s via %s: %q %v", shard, to.id, via.id, got, err)
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if l := c.leaderOf(shard); l != nil && l != to {
			t.Fatalf("shard %d moved to %s during the hold", shard, l.id)
		}
	}
	eventually(t, waitLong, "leadership back home after the hold", func() error {
		if l := c.leaderOf(shard); l != home {
			return fmt.Errorf("shard %d led by %v", shard, l)
		}
		return nil
	})
}

// wantRefusal checks that err is an *fsm.Error with code and field whose
// message contains msg.
func wantRefusal(t *testing.T, what string, err error, code fsm.ErrorCode, field, msg string) {
	t.Helper()
	var fe *fsm.Error
	if !errors.As(err, &fe) || fe.Code != code || fe.Field != field || !strings.Contains(fe.Message, msg) {
		t.Fatalf("%s: %v (%T), want code %d field %q with %q", what, err, err, code, field, msg)
	}
}

// testShardHomeRegion: SetShardHome refuses a region no node is in (naming
// the known ones) and a shard out of range, and accepts a member's region.
func testShardHomeRegion(t *testing.T, c *tcluster) {
	n := c.nodes[1].n()
	err := n.SetShardHome(ctxT(t), 0, "r9")
	wantRefusal(t, "home in r9", err, fsm.CodeInvalidArgument, "region", `no node in region "r9"; known regions: r1, r2, r3`)
	err = n.SetShardHome(ctxT(t), 4, "r1")
	wantRefusal(t, "home of shard 4", err, fsm.CodeInvalidArgument, "shard", "no shard 4 (the cluster has 4)")
	home := n.view().Placement[3].Home
	if err := n.SetShardHome(ctxT(t), 3, home); err != nil {
		t.Fatalf("home of shard 3 in %s: %v", home, err)
	}
}

// testRemoveStatesAndRefusals: an unknown node is an invalid argument;
// removed nodes are "removed" (not "left") to every node, themselves
// included, and their region no longer counts for home regions; the
// cluster's last node cannot be removed; once a new node joins, the last
// one's replicas (each shard's only one) move to it, replacement first.
func testRemoveStatesAndRefusals(t *testing.T, c *tcluster) {
	n1 := c.node("n1")
	_, _, err := n1.n().RemoveNode(ctxT(t), "n9")
	wantRefusal(t, "remove n9", err, fsm.CodeInvalidArgument, "node_id", `unknown node "n9"`)

	for _, id := range []string{"n3", "n2"} {
		shards, repl, err := n1.n().RemoveNode(ctxT(t), id)
		if err != nil || len(shards) != 4 {
			t.Fatalf("remove %s: %v %v", id, shards, err)
		}
		for _, sh := range shards {
			if repl[sh] != "" {
				t.Fatalf("remove %s: shard %d replacement %q, want none (every other node holds one)", id, sh, repl[sh])
			}
		}
		eventually(t, waitLong, id+" removed as n1 and itself see it", func() error {
			for _, via := range []*tnode{n1, c.node(id)} {
				ms, err := via.n().Members(ctxT(t))
				if err != nil {
					return err
				}
				for _, m := range ms {
					if m.NodeID == id && m.State != StateRemoved {
						return fmt.Errorf("%s sees %s %s", via.id, id, m.State)
					}
				}
			}
			return nil
		})
	}
	err = n1.n().SetShardHome(ctxT(t), 0, "r3")
	wantRefusal(t, "home in the removed n3's region", err, fsm.CodeInvalidArgument, "region", `no node in region "r3"; known regions: r1`)

	// n1 is the last node, holding every shard's only replica.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _, err = n1.n().RemoveNode(ctx, "n1")
	wantRefusal(t, "remove the last node", err, fsm.CodeFailedPrecondition, "", "node n1 is the cluster's last node")
	if m := n1.n().view(); slices.ContainsFunc(m.Placement, func(p *placement) bool { return !slices.Equal(p.Replicas, []string{"n1"}) }) {
		t.Fatalf("the refused removal changed the placement: %+v", m.Placement)
	}

	n4 := c.addNode("r1", 0)
	c.start(n4)
	c.waitReady(waitLong, n4)
	eventually(t, waitLong, "n4 a voter of the meta group", func() error {
		f := n1.n().metaG.Raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return err
		}
		for _, s := range f.Configuration().Servers {
			if s.ID == "n4" && s.Suffrage == raft.Voter {
				return nil
			}
		}
		return errors.New("not yet")
	})
	shards, repl, err := n4.n().RemoveNode(ctxT(t), "n1")
	if err != nil || len(shards) != 4 {
		t.Fatalf("remove n1 via n4: %v %v", shards, err)
	}
	for _, sh := range shards {
		if repl[sh] != "n4" {
			t.Fatalf("shard %d replacement %q, want n4", sh, repl[sh])
		}
	}
	eventually(t, waitLong, "every shard on n4 alone", func() error {
		for id := range 4 {
			s := n4.n().hosted(id)
			if s == nil || !s.group.IsLeader() {
				return fmt.Errorf("n4 does not lead shard %d", id)
			}
			if v := n4.n().voters(s); !slices.Equal(v, []string{"n4"}) {
				return fmt.Errorf("shard %d voters %v", id, v)
			}
		}
		return nil
	})
	cus := customersOnEveryShard("rm", 4)
	for _, id := range cus {
		create(t, n4.n(), id, &engine.CreateCustomerRequest{ID: id})
	}
	ms, err := n4.n().Members(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if want := map[bool]string{true: StateAlive, false: StateRemoved}[m.NodeID == "n4"]; m.State != want {
			t.Fatalf("n4 sees %s %s, want %s", m.NodeID, m.State, want)
		}
	}
}

// TestRemovalStepErr: what a failed RemoveNode step becomes. Refusals are
// FailedPrecondition naming the step; not reaching a leader in time is
// ErrUnavailable only (neither the unknown outcome nor the deadline of the
// cause decide the code at the edge).
func TestRemovalStepErr(t *testing.T) {
	step := "shard 3: removing n2 from its raft group"
	err := removalStepErr(step, invalidCommand("", "unknown op"))
	wantRefusal(t, "refused step", err, fsm.CodeFailedPrecondition, "", step+": unknown op")

	cause := unavailableErr(3, errors.Join(ErrNotLeader, context.DeadlineExceeded), true)
	err = removalStepErr(step, cause)
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnknownOutcome) || errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), step) || !strings.Contains(err.Error(), "call RemoveNode again") {
		t.Fatalf("unavailable step: %v", err)
	}
}
