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
)

// TestCluster5 runs a 5-node cluster (three regions, 16 shards, 3 replicas per
// shard) through a leader crash and a partition.
func TestCluster5(t *testing.T) {
	c := newCluster(t, 5, 16, []string{"r1", "r2", "r3"}, nil)
	t.Run("region latency", func(t *testing.T) { testRegionLatency(t, c) })
	t.Run("kill leader", func(t *testing.T) { testKillLeader(t, c) })
	t.Run("partition", func(t *testing.T) { testPartition(t, c) })
}

// testRegionLatency: a --region-latency spec in the shared faultnet rules
// delays forwarded calls between regions: a call from an r1 node for a shard
// led in r2 pays at least the added round trip.
func testRegionLatency(t *testing.T, c *tcluster) {
	const oneWay = 40 * time.Millisecond
	cus := customersOnEveryShard("lat", 16)
	for _, id := range cus {
		create(t, c.nodes[0].n(), id, &engine.CreateCustomerRequest{ID: id})
	}
	var from *tnode
	for _, tn := range c.nodes {
		if tn.region == "r1" {
			from = tn
			break
		}
	}
	shard := -1
	for id := range 16 {
		if l := c.leaderOf(id); l != nil && l.region == "r2" {
			shard = id
			break
		}
	}
	if shard < 0 {
		t.Skip("no shard led in r2")
	}
	if err := c.rules.Update("r1<->r2=" + oneWay.String()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.rules.Set("") }()
	fastest := time.Hour
	for i := range 3 {
		start := time.Now()
		if _, _, err := meter(ctxT(t), from.n(), cus[shard], cus[shard], "calls", false); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		fastest = min(fastest, time.Since(start))
	}
	t.Logf("a linearizable read from %s of a shard led in r2 took at least %s with %s each way", from.id, fastest, oneWay)
	if fastest < 2*oneWay {
		t.Fatalf("read took %s, less than the added round trip %s", fastest, 2*oneWay)
	}
}

// testKillLeader: the node leading shard 0 crashes; calls for shard 0's
// customers, made through any other node, are decided again within a few
// election timeouts; the node restarts on its data dir, rejoins by itself and
// catches up (equal state hashes on every replica).
func testKillLeader(t *testing.T, c *tcluster) {
	cus := customersOnEveryShard("k", 16)
	for _, id := range cus {
		create(t, c.nodes[0].n(), id, &engine.CreateCustomerRequest{ID: id})
	}
	victim := c.leaderOf(0)
	if victim == nil {
		t.Fatal("shard 0 has no leader")
	}
	var via *tnode
	for _, tn := range c.nodes {
		if tn != victim {
			via = tn
			break
		}
	}
	c.kill(victim)
	start := time.Now()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := via.n().Apply(ctx, cus[0], callsAllow(cus[0], fmt.Sprint("after-kill-", i)))
		cancel()
		if err == nil && r.Decision.Allowed {
			break
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("after the kill: %v %+v", err, r)
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("shard 0 still undecided %s after its leader crashed: %v", time.Since(start), err)
		}
	}
	took := time.Since(start)
	t.Logf("shard 0 decided again %s after its leader (%s) crashed", took.Round(time.Millisecond), victim.id)
	// The tests' election timeout is 1s (randomised up to 2s): a crash is
	// noticed after 1-2s and an election follows. Ten of them is a generous
	// bound for a saturated machine.
	if took > 10*time.Second {
		t.Errorf("recovery took %s, want a few election timeouts", took)
	}
	// Every other shard keeps deciding meanwhile.
	for i, id := range cus {
		if r, err := via.n().Apply(ctxT(t), id, callsAllow(id, fmt.Sprint("during-", i))); err != nil || !r.Decision.Allowed {
			t.Fatalf("shard %d with %s down: %v %+v", i, victim.id, err, r)
		}
	}
	c.restart(victim)
	c.waitReady(waitLong, victim)
	c.waitConverged(waitLong)
	// The restarted node decides again (forwarding or leading).
	for i, id := range cus {
		if r, err := victim.n().Apply(ctxT(t), id, callsAllow(id, fmt.Sprint("rejoined-", i))); err != nil || !r.Decision.Allowed {
			t.Fatalf("via the restarted node, shard %d: %v %+v", i, err, r)
		}
	}
}

// testPartition cuts n4 and n5 (the minority) from n1-n3 on the raft and
// forwarding links. Each side keeps deciding exactly the shards it holds a
// quorum of (two of three replicas) and refuses the others with a clear
// ErrUnavailable; after healing, every shard decides from every node and the
// replicas converge.
func testPartition(t *testing.T, c *tcluster) {
	minority := []string{"n4", "n5"}
	majority := []string{"n1", "n2", "n3"}
	cus := customersOnEveryShard("q", 16)
	for _, id := range cus {
		create(t, c.nodes[0].n(), id, &engine.CreateCustomerRequest{ID: id})
	}
	for _, a := range minority {
		for _, b := range majority {
			c.rules.Partition(a, b)
		}
	}
	healed := false
	defer func() {
		if !healed {
			c.rules.HealAll()
		}
	}()
	quorumOn := func(side []string, shard int) bool {
		n := 0
		for _, r := range c.replicasOf(shard) {
			if slices.Contains(side, r) {
				n++
			}
		}
		return n >= 2
	}
	type outcome struct {
		side  string
		shard int
		err   error
	}
	var mu sync.Mutex
	var outcomes []outcome
	var wg sync.WaitGroup
	for _, side := range [][]string{majority, minority} {
		via := c.node(side[0])
		for shard, id := range cus {
			wg.Go(func() {
				// A side with a quorum may first need an election; a side
				// without one must answer ErrUnavailable by the deadline.
				d := 5 * time.Second
				if quorumOn(side, shard) {
					d = 45 * time.Second
				}
				ctx, cancel := context.WithTimeout(context.Background(), d)
				defer cancel()
				r, err := via.n().Apply(ctx, id, callsAllow(id, fmt.Sprintf("part-%s-%d", via.id, shard)))
				if err == nil && !r.Decision.Allowed {
					err = fmt.Errorf("denied: %+v", r.Decision)
				}
				mu.Lock()
				outcomes = append(outcomes, outcome{via.id, shard, err})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	decided := map[string]int{}
	for _, o := range outcomes {
		side := majority
		if o.side == "n4" {
			side = minority
		}
		want := quorumOn(side, o.shard)
		switch {
		case want && o.err != nil:
			t.Errorf("via %s, shard %d (quorum on this side): %v", o.side, o.shard, o.err)
		case !want && o.err == nil:
			t.Errorf("via %s, shard %d (no quorum on this side) was decided", o.side, o.shard)
		case !want && !errors.Is(o.err, ErrUnavailable):
			t.Errorf("via %s, shard %d: want ErrUnavailable, got %v", o.side, o.shard, o.err)
		case want:
			decided[o.side]++
		}
	}
	t.Logf("during the partition: majority decided %d shards, minority %d", decided["n1"], decided["n4"])
	if decided["n1"] == 0 {
		t.Fatal("the majority decided nothing")
	}
	c.rules.HealAll()
	healed = true
	for i, id := range cus {
		tn := c.nodes[i%len(c.nodes)]
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		r, err := tn.n().Apply(ctx, id, callsAllow(id, fmt.Sprint("healed-", i)))
		cancel()
		if err != nil || !r.Decision.Allowed {
			t.Fatalf("after healing, shard %d via %s: %v %+v", i, tn.id, err, r)
		}
	}
	c.waitConverged(waitLong)
}

// TestClusterUnsafeStaleAllow proves the checker can fail: with
// --unsafe-stale-allow, followers answer Allow from their replica without raft,
// and the same workload that passes on a correct cluster is caught admitting
// past caps (or not linearizable).
func TestClusterUnsafeStaleAllow(t *testing.T) {
	c := newCluster(t, 3, 16, []string{"r1", "r2", "r3"}, func(cfg *Config) { cfg.UnsafeStaleAllow = true })
	w := newWorkload(t, c, "unsafe", 30, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	w.run(ctx, 3)
	c.waitConverged(waitLong)
	res := w.checkExpectingFailure(c.nodes[0].n())
	if res.OK {
		t.Fatal("the checker passed a cluster answering Allow from stale replicas")
	}
	t.Logf("caught: %d customers over their cap, linearizable=%v", res.OverCap, res.OK)
}
