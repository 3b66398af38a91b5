package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
)

// TestCluster3 runs one 3-node cluster (three regions, 16 shards) through its
// life: formation, calls from every node, the routing key, a policy update,
// leadership transfer and balance, linearizability with and without leader
// kills, then a node joining and another being removed.
func TestCluster3(t *testing.T) {
	c := newCluster(t, 3, 16, []string{"r1", "r2", "r3"}, nil)
	for _, st := range []struct {
		name string
		fn   func(*testing.T, *tcluster)
	}{
		{"forms", testForms},
		{"routing key", testRoutingKey},
		{"policy everywhere", testPolicyEverywhere},
		{"transfer and balance", testTransferAndBalance},
		{"linearizable", testLinearizable},
		{"linearizable with leader kills", testLinearizableKills},
		{"join and remove", testJoinAndRemove},
	} {
		if !t.Run(st.name, func(t *testing.T) { st.fn(t, c) }) {
			return
		}
	}
}

// testForms: three nodes in three regions form with bootstrap-expect
// 3 and 16 shards; every shard gets 3 replicas, one per region, and a leader;
// calls for every shard succeed from every node (forwarded where the node
// does not lead); gossip and the map agree on members; Status sees every
// replica; reads are linearizable by default and stale reads are labelled.
func testForms(t *testing.T, c *tcluster) {
	m := c.nodes[0].n().view()
	if m.Shards != 16 || m.Replicas != 3 || len(m.Nodes) != 3 {
		t.Fatalf("map: %d shards, %d replicas, %d nodes", m.Shards, m.Replicas, len(m.Nodes))
	}
	homes := map[string]int{}
	for id, p := range m.Placement {
		regions := map[string]bool{}
		for _, r := range p.Replicas {
			regions[m.Nodes[r].Region] = true
		}
		if len(p.Replicas) != 3 || len(regions) != 3 {
			t.Fatalf("shard %d replicas %v span %d regions", id, p.Replicas, len(regions))
		}
		homes[p.Home]++
	}
	if homes["r1"] < 5 || homes["r2"] < 5 || homes["r3"] < 5 {
		t.Fatalf("home regions not round-robin: %v", homes)
	}

	cus := customersOnEveryShard("c", 16)
	for _, id := range cus {
		create(t, c.nodes[0].n(), id, &engine.CreateCustomerRequest{ID: id})
	}
	// Every node decides for every shard: 3 allows per customer, one per node.
	for i, tn := range c.nodes {
		for _, id := range cus {
			r, err := tn.n().Apply(ctxT(t), id, callsAllow(id, fmt.Sprintf("%s-%d", id, i)))
			if err != nil || r.Err != nil || !r.Decision.Allowed || r.PolicyVersion != 1 {
				t.Fatalf("allow %s via %s: %v %+v", id, tn.id, err, r)
			}
		}
	}
	for _, tn := range c.nodes {
		for _, id := range cus {
			v, a, err := meter(ctxT(t), tn.n(), id, id, "calls", false)
			if err != nil || v != 3 || a.Stale {
				t.Fatalf("meter %s via %s: %d %+v %v", id, tn.id, v, a, err)
			}
		}
	}
	// A duplicate through another node answers the first result.
	r, err := c.nodes[2].n().Apply(ctxT(t), cus[0], callsAllow(cus[0], cus[0]+"-0"))
	if err != nil || !r.Duplicate {
		t.Fatalf("duplicate via another node: %v %+v", err, r)
	}
	// Stale reads answer from a local replica and say so.
	for _, tn := range c.nodes {
		_, a, err := meter(ctxT(t), tn.n(), cus[1], cus[1], "calls", true)
		if err != nil || !a.Stale || a.Node != tn.id {
			t.Fatalf("stale read via %s: %+v %v", tn.id, a, err)
		}
	}
	// Lookups route too.
	if r, ok, err := c.nodes[1].n().LookupRequest(ctxT(t), cus[3], cus[3]+"-2"); err != nil || !ok || !r.Decision.Allowed {
		t.Fatalf("lookup: %v %v %+v", err, ok, r)
	}

	eventually(t, waitLong, "members", func() error {
		for _, tn := range c.nodes {
			ms, err := tn.n().Members(ctxT(t))
			if err != nil {
				return err
			}
			led := 0
			for _, mem := range ms {
				if mem.State != StateAlive || mem.APIAddr == "" || mem.RaftAddr == "" || mem.GossipAddr == "" {
					return fmt.Errorf("%s sees %+v", tn.id, mem)
				}
				led += len(mem.ShardsLed)
			}
			if len(ms) != 3 || led != 16 {
				return fmt.Errorf("%s sees %d members leading %d shards", tn.id, len(ms), led)
			}
		}
		return nil
	})

	c.waitConverged(waitLong)
	st, err := c.nodes[1].n().Status(ctxT(t))
	if err != nil || len(st.Shards) != 16 || st.ClusterID != m.ClusterID {
		t.Fatalf("status: %v %d shards", err, len(st.Shards))
	}
	for _, sh := range st.Shards {
		if sh.Leader == "" || len(sh.Replicas) != 3 || sh.StateHash == "" || sh.Home == "" {
			t.Fatalf("shard status %+v", sh)
		}
		for _, r := range sh.Replicas {
			if r.State == "unreachable" || r.AppliedIndex == 0 {
				t.Fatalf("shard %d replica %+v", sh.Shard, r)
			}
		}
	}
}

// testTransferAndBalance: TransferLeadership from any node
// moves a shard's leader where asked; once the transfer hold ends the
// balancer brings leadership back to the shard's home region; a graceful stop
// hands leadership away first.
func testTransferAndBalance(t *testing.T, c *tcluster) {
	m := c.nodes[0].n().view()
	// Leadership settles in each shard's home region.
	eventually(t, waitLong, "leaders in home regions", func() error {
		for id, p := range m.Placement {
			l := c.leaderOf(id)
			if l == nil || l.region != p.Home {
				return fmt.Errorf("shard %d (home %s) led by %v", id, p.Home, l)
			}
		}
		return nil
	})
	const shard = 5
	home := c.leaderOf(shard)
	var to string
	for _, r := range m.Placement[shard].Replicas {
		if r != home.id {
			to = r
			break
		}
	}
	via := c.nodes[(slices.Index(c.nodes, home)+2)%3] // ask a node that may not lead it
	got, err := via.n().TransferLeadership(ctxT(t), shard, to)
	if err != nil || got != to {
		t.Fatalf("transfer shard %d to %s via %s: %q %v", shard, to, via.id, got, err)
	}
	if l := c.leaderOf(shard); l == nil || l.id != to {
		t.Fatalf("leader after transfer: %v", l)
	}
	if _, err := via.n().TransferLeadership(ctxT(t), shard, "nobody"); err == nil {
		t.Fatal("transfer to a non-voter succeeded")
	}
	// The balancer hands it back to the home region.
	eventually(t, waitLong, "leadership back home", func() error {
		if l := c.leaderOf(shard); l == nil || l.id != home.id {
			return fmt.Errorf("shard %d led by %v", shard, l)
		}
		return nil
	})
	// A graceful stop hands leadership away first: after Drain the node leads
	// nothing and every shard has a leader elsewhere (and the balancer, seeing
	// the node leaving, does not hand any back).
	led := 0
	for id := range 16 {
		if c.leaderOf(id) == home {
			led++
		}
	}
	if led == 0 {
		t.Fatal("home node leads nothing")
	}
	dctx, cancel := context.WithTimeout(context.Background(), waitLong)
	home.n().Drain(dctx)
	cancel()
	eventually(t, waitLong, "leadership handed away before stopping", func() error {
		for id := range 16 {
			if l := c.leaderOf(id); l == nil || l == home {
				return fmt.Errorf("shard %d led by %v", id, l)
			}
		}
		return nil
	})
	c.stop(home)
	cus := customersOnEveryShard("g", 16)
	for _, id := range cus {
		other := c.live()[0]
		if r, err := other.n().Apply(ctxT(t), id, &fsm.Command{CreateCustomer: &engine.CreateCustomerRequest{ID: id}}); err != nil || r.Err != nil {
			t.Fatalf("create after stop: %v", err)
		}
	}
	c.restart(home)
	c.waitReady(waitLong, home)
	c.waitConverged(waitLong)
}

// testPolicyEverywhere: SetPolicy on a node that leads few shards
// reaches every shard through its leader's log; every result records the
// version it ran under and, per shard, versions never go back.
func testPolicyEverywhere(t *testing.T, c *tcluster) {
	cus := customersOnEveryShard("p", 16)
	for _, id := range cus {
		create(t, c.nodes[0].n(), id, &engine.CreateCustomerRequest{ID: id})
	}
	type rec struct {
		index   uint64
		version uint64
		allowed bool
	}
	var mu sync.Mutex
	seen := map[string][]rec{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w, tn := range c.nodes {
		wg.Go(func() {
			for j := 0; ctx.Err() == nil; j++ {
				id := cus[(w*5+j)%len(cus)]
				r, err := tn.n().Apply(ctxT(t), id, callsAllow(id, fmt.Sprintf("pw%d-%d", w, j)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[id] = append(seen[id], rec{r.Index, r.PolicyVersion, r.Decision.Allowed})
				mu.Unlock()
			}
		})
	}
	v, err := c.nodes[2].n().SetPolicy(ctxT(t), clusterPolicy2, "json")
	if err != nil || v != 2 {
		t.Fatalf("set policy: %d %v", v, err)
	}
	for _, tn := range c.nodes {
		eventually(t, waitLong, tn.id+" learns v2", func() error {
			if _, _, pv := tn.n().Policy(); pv < 2 {
				return fmt.Errorf("v%d", pv)
			}
			return nil
		})
	}
	c.waitPolicy(waitLong, 2)
	cancel()
	wg.Wait()
	for id, rs := range seen {
		slices.SortFunc(rs, func(a, b rec) int { return int(a.index) - int(b.index) })
		var v uint64
		allowed := 0
		for _, r := range rs {
			if r.version < v || r.version == 0 {
				t.Fatalf("%s: version %d after %d", id, r.version, v)
			}
			v = r.version
			if r.allowed {
				allowed++
			}
			// Under v1 the cap is 10; only v2 (cap 20) admits more.
			if r.version == 1 && allowed > 10 {
				t.Fatalf("%s: %d admitted under v1's cap of 10", id, allowed)
			}
		}
	}
	// Reads say which version they ran under.
	_, a, err := meter(ctxT(t), c.nodes[1].n(), cus[0], cus[0], "calls", false)
	if err != nil || a.PolicyVersion != 2 {
		t.Fatalf("read under v%d: %v", a.PolicyVersion, err)
	}
	// Back to the cap of 10 for the linearizability workloads.
	if v, err := c.nodes[0].n().SetPolicy(ctxT(t), clusterPolicy, "json"); err != nil || v != 3 {
		t.Fatalf("set policy v3: %d %v", v, err)
	}
	c.waitPolicy(waitLong, 3)
}

// testRoutingKey: an org and its users share the routing key "acme",
// so one shard decides the org-scoped "seats" entitlement atomically even
// under concurrent allows from every node: exactly the org's limit is
// admitted. Without the shared key a user lands on another shard, where its
// org does not exist.
func testRoutingKey(t *testing.T, c *tcluster) {
	n := c.nodes[0].n()
	create(t, n, "acme", &engine.CreateCustomerRequest{ID: "acme", Type: "org", Plan: "org"})
	users := []string{"acme-u1", "acme-u2", "acme-u3", "acme-u4"}
	for _, u := range users {
		create(t, n, "acme", &engine.CreateCustomerRequest{ID: u, Refs: []string{"acme"}})
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for i := range 40 {
		wg.Go(func() {
			u := users[i%len(users)]
			tn := c.nodes[i%3]
			r, err := tn.n().Apply(ctxT(t), "acme", &fsm.Command{RequestID: fmt.Sprint("seat-", i),
				Allow: &engine.AllowRequest{Customer: u, Entitlement: "seats", Value: oneDec}})
			if err != nil || r.Err != nil {
				t.Errorf("allow %s: %v %+v", u, err, r)
				return
			}
			if r.Decision.Allowed {
				mu.Lock()
				admitted++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if admitted != 10 {
		t.Fatalf("%d seats admitted across the org's users, want exactly 10", admitted)
	}
	if v, _, err := meter(ctxT(t), c.nodes[2].n(), "acme", "acme", "seats", false); err != nil || v != 10 {
		t.Fatalf("org meter %d %v", v, err)
	}
	// Routed by its own id, a user is looked up on its own shard.
	if shardFor("acme-u1", 16) != shardFor("acme", 16) {
		r, err := n.Apply(ctxT(t), "acme-u1", &fsm.Command{Allow: &engine.AllowRequest{Customer: "acme-u1", Entitlement: "seats", Value: oneDec}})
		if err != nil || r.Decision.Allowed {
			t.Fatalf("user routed away from its org: %v %+v", err, r)
		}
	}
}

// TestClusterUnavailableBeforeJoin: a node that never joined answers
// ErrUnavailable, and is not ready.
func TestClusterUnavailableBeforeJoin(t *testing.T) {
	c := &tcluster{t: t, shards: 4}
	tn := c.addNode("r1", 0)
	c.start(tn)
	t.Cleanup(func() { c.stop(tn) })
	if err := tn.n().Ready(); err == nil {
		t.Fatal("a node that never joined is ready")
	}
	_, err := tn.n().Apply(ctxT(t), "x", callsAllow("x", "x1"))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("apply before joining: %v", err)
	}
}

// testLinearizable: clients on every node hammer capped customers; the
// history is linearizable, no cap admits past its value, and every customer's
// final meter is exactly what was admitted.
func testLinearizable(t *testing.T, c *tcluster) {
	w := newWorkload(t, c, "lin", 40, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	w.run(ctx, 3)
	c.waitConverged(waitLong)
	if res := w.check(c.nodes[0].n()); !res.OK || res.OverCap != 0 {
		t.Fatalf("not linearizable: %+v (visualisations: %v)", res, res.Visualizations)
	}
}

// testLinearizableKills is testLinearizable while the node leading the most
// shards is killed (a crash: groups killed, gossip gone) and restarted, twice.
// Decisions resume, the restarted node catches up (equal state hashes), and
// the history stays linearizable with nothing lost.
func testLinearizableKills(t *testing.T, c *tcluster) {
	w := newWorkload(t, c, "kill", 60, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { w.run(ctx, 3) })
	killed := map[string]bool{}
	for round := range 2 {
		if c.pauseCtx(ctx, time.Second) != nil {
			break
		}
		victim := c.busiestLeader(killed)
		killed[victim.id] = true
		t.Logf("round %d: killing %s", round, victim.id)
		c.kill(victim)
		if c.pauseCtx(ctx, 1500*time.Millisecond) != nil {
			c.restart(victim)
			break
		}
		c.restart(victim)
	}
	wg.Wait()
	c.waitReady(waitLong, c.nodes...)
	c.waitConverged(waitLong)
	if res := w.check(c.nodes[0].n()); !res.OK || res.OverCap != 0 {
		t.Fatalf("not linearizable: %+v (visualisations: %v)", res, res.Visualizations)
	}
}

// testJoinAndRemove: a fourth node joins through gossip, learns the map and
// serves calls by forwarding; then RemoveNode (asked of the new node) takes n2
// out of every group through raft, places its replicas on other nodes, and
// tells n2 to leave. Decisions continue on every shard and replicas converge.
func testJoinAndRemove(t *testing.T, c *tcluster) {
	n4 := c.addNode("r1", 0)
	c.start(n4)
	c.waitReady(waitLong, n4)
	cus := customersOnEveryShard("j", 16)
	for _, id := range cus {
		create(t, n4.n(), id, &engine.CreateCustomerRequest{ID: id})
	}
	eventually(t, waitLong, "n4 in the map and the meta group", func() error {
		m := c.nodes[0].n().view()
		if m.Nodes["n4"] == nil {
			return errors.New("not in the map")
		}
		if c.nodes[0].n().metaF.current() == nil || n4.n().metaF.current() == nil {
			return errors.New("n4 has no meta replica")
		}
		return nil
	})

	shards, repl, err := n4.n().RemoveNode(ctxT(t), "n2")
	if err != nil {
		t.Fatalf("remove n2: %v", err)
	}
	if len(shards) != 16 {
		t.Fatalf("n2 was removed from %d shards, want 16 (3 replicas on 3 nodes)", len(shards))
	}
	for _, sh := range shards {
		if repl[sh] != "n4" {
			t.Fatalf("shard %d replacement %q, want n4 (the only node without a replica)", sh, repl[sh])
		}
	}
	n2 := c.node("n2")
	eventually(t, waitLong, "n2 retires", func() error {
		if n2.n().Ready() == nil || len(n2.n().sorted()) > 0 {
			return errors.New("still serving")
		}
		return nil
	})
	c.stop(n2)
	eventually(t, waitLong, "groups without n2, with n4", func() error {
		for id := range 16 {
			l := c.leaderOf(id)
			if l == nil {
				return fmt.Errorf("shard %d has no leader", id)
			}
			voters := l.n().voters(l.n().hosted(id))
			slices.Sort(voters)
			if slices.Contains(voters, "n2") || !slices.Contains(voters, "n4") || len(voters) != 3 {
				return fmt.Errorf("shard %d voters %v", id, voters)
			}
		}
		return nil
	})
	for i, id := range cus {
		tn := []*tnode{c.nodes[0], c.nodes[2], n4}[i%3]
		if r, err := tn.n().Apply(ctxT(t), id, callsAllow(id, id+"-after")); err != nil || !r.Decision.Allowed {
			t.Fatalf("allow %s after removing n2: %v %+v", id, err, r)
		}
	}
	ms, err := c.nodes[0].n().Members(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.NodeID == "n2" && m.State != StateRemoved {
			t.Fatalf("n2 is %s, want removed", m.State)
		}
	}
	// Removed means removed: n2 cannot come back under its id.
	if r, err := c.nodes[0].n().metaApply(ctxT(t), &metaCommand{Op: metaAddNode, Node: &nodeInfo{ID: "n2", Region: "r2"}}); err != nil || r.Err == "" {
		t.Fatalf("re-adding n2: %v %+v", err, r)
	}
	c.waitConverged(waitLong)
}
