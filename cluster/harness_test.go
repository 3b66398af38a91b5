package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/shopspring/decimal"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	"github.com/capstanhq/capstan/internal/faultnet"
	"github.com/capstanhq/capstan/internal/raftgroup"
	"github.com/capstanhq/capstan/internal/testgate"
)

// In-process clusters for tests: real nodes on 127.0.0.1 (raft port, gossip
// port, and an HTTP server on the API address carrying only the forwarding
// service), bolt in temp dirs, faultnet rules shared by every node so tests can
// cut links. Waits poll conditions with deadlines; nothing sleeps to
// synchronise.

// clusterPolicy: "calls" is a hard cap of 10 per customer (the capped counter
// of internal/linearize); "seats" is metered on the customer's org (type org,
// through refs).
const clusterPolicy = `{"policy": {
 "credits": {"tok": {"price": {"amount": 0.0003}}, "req": {}},
 "plans": {
   "pro": {"default": true, "entitlements": {
     "calls": {"limit": {"credit": "req", "mode": "hard", "value": 10}},
     "api": {"limit": {"credit": "tok", "mode": "hard", "value": 1000000000000}}}},
   "org": {"entitlements": {
     "seats": {"scope": "org", "limit": {"credit": "req", "mode": "hard", "value": 10}}}}}}}`

const clusterPolicy2 = `{"policy": {
 "credits": {"tok": {"price": {"amount": 0.0003}}, "req": {}},
 "plans": {
   "pro": {"default": true, "entitlements": {
     "calls": {"limit": {"credit": "req", "mode": "hard", "value": 20}},
     "api": {"limit": {"credit": "tok", "mode": "hard", "value": 1000000000000}}}},
   "org": {"entitlements": {
     "seats": {"scope": "org", "limit": {"credit": "req", "mode": "hard", "value": 10}}}}}}}`

const testClusterKey = "test-cluster-key-0123456789"

// meterQuery is the test's registered read: args is "customer/entitlement",
// the answer the meter's value.
const meterQuery = "test.meter"

var testQueries = map[string]QueryFunc{
	meterQuery: func(e *engine.Engine, now int64, args []byte) ([]byte, error) {
		cus, ent, _ := splitArgs(string(args))
		if e.Customer(cus) == nil {
			return []byte("0"), nil
		}
		return []byte(e.Read(now, cus, ent).Value.String()), nil
	},
}

func splitArgs(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// clusterRaft doubles raft's default timeouts (1s heartbeat and election,
// 500ms lease) and sends commit-index updates every 250ms: 50-85 multi-node
// groups share one test process, and on a saturated 2-core machine shorter
// leases make leaders step down for nothing. A crashed leader is replaced
// within a few seconds.
func clusterRaft(_ int, c *raftgroup.Config) {
	c.HeartbeatTimeout = time.Second
	c.ElectionTimeout = time.Second
	c.LeaderLeaseTimeout = 500 * time.Millisecond
	c.CommitTimeout = 250 * time.Millisecond
}

// testGossip is memberlist's local-network profile, a little faster to spread
// changes and slower to suspect a busy process.
func testGossip(c *memberlist.Config) {
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 400 * time.Millisecond
	c.SuspicionMult = 4
	c.GossipInterval = 100 * time.Millisecond
	c.PushPullInterval = 5 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.GossipToTheDeadTime = 10 * time.Second
}

type tcluster struct {
	t      *testing.T
	rules  *faultnet.Rules
	shards int
	mod    func(*Config)
	nodes  []*tnode
}

type tnode struct {
	c                             *tcluster
	id, region, dir               string
	raftAddr, apiAddr, gossipAddr string
	expect                        int
	mu                            sync.Mutex
	node                          *Node
	srv                           *http.Server
	up                            bool
}

// newCluster starts n nodes (regions round-robin) that form with
// bootstrap-expect n, and waits until every node is ready and every shard
// runs the policy.
func newCluster(t *testing.T, n, shards int, regions []string, mod func(*Config)) *tcluster {
	testgate.RequireCluster(t)
	t.Helper()
	c := &tcluster{t: t, rules: faultnet.NewRules(), shards: shards, mod: mod}
	for i := range n {
		c.addNode(regions[i%len(regions)], n)
	}
	t.Cleanup(func() {
		t0 := time.Now()
		for _, tn := range c.nodes {
			c.stop(tn)
		}
		t.Logf("stopped in %s", time.Since(t0))
	})
	// The first node's gossip port is the others' seed.
	c.start(c.nodes[0])
	var wg sync.WaitGroup
	for _, tn := range c.nodes[1:] {
		wg.Go(func() { c.start(tn) })
	}
	wg.Wait()
	t0 := time.Now()
	c.waitReady(waitLong, c.nodes...)
	t.Logf("ready after %s", time.Since(t0))
	c.waitPolicy(waitLong, 1)
	t.Logf("policy after %s", time.Since(t0))
	return c
}

// waitLong bounds waits for the cluster to settle (elections, catch-up): they
// return as soon as their condition holds, and a 2-core machine running other
// suites beside this one can take tens of seconds.
const waitLong = 90 * time.Second

func (c *tcluster) addNode(region string, expect int) *tnode {
	id := "n" + strconv.Itoa(len(c.nodes)+1)
	tn := &tnode{c: c, id: id, region: region, dir: filepath.Join(c.t.TempDir(), id),
		raftAddr: "127.0.0.1:0", apiAddr: "127.0.0.1:0", gossipAddr: "127.0.0.1:0", expect: expect}
	c.nodes = append(c.nodes, tn)
	return tn
}

// addrs returns tn's raft, API and gossip addresses (ports chosen at its first
// start, then kept for restarts).
func (tn *tnode) addrs() (raft, api, gossip string) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.raftAddr, tn.apiAddr, tn.gossipAddr
}

func (c *tcluster) config(tn *tnode) Config {
	var join []string
	for _, o := range c.nodes {
		if _, _, g := o.addrs(); o != tn && !strings.HasSuffix(g, ":0") {
			join = append(join, g)
		}
	}
	_, _, gossip := tn.addrs()
	cfg := Config{
		NodeID: tn.id, DataDir: tn.dir, Region: tn.region, Shards: c.shards,
		Policy: clusterPolicy, PolicyFormat: "json", Logger: testLogger(), Raft: clusterRaft,
		Queries: testQueries, GossipAddr: gossip, Join: join, BootstrapExpect: tn.expect, Replicas: 3,
		ClusterKey: testClusterKey, Faults: c.rules, Gossip: testGossip,
		MaintainInterval: 300 * time.Millisecond, FormSettle: 100 * time.Millisecond,
		// Short, so tests see the balancer take over after an explicit
		// transfer without waiting out the default minute.
		TransferHold: 2 * time.Second,
		// fsm's default event ring is allocated up front (~28MB a shard): 85
		// shards in one process would hold gigabytes for nothing.
		EventLogSize: 1024,
	}
	if c.mod != nil {
		c.mod(&cfg)
	}
	return cfg
}

// start opens tn's node on its data dir and serves its API address. The test
// holds the raft and API listeners itself (port 0 at first start, the same
// ports on restarts), so no other process can take a port between choosing
// and binding it.
func (c *tcluster) start(tn *tnode) {
	c.t.Helper()
	raftAddr, apiAddr, _ := tn.addrs()
	ep := faultnet.Endpoint{Node: tn.id, Region: tn.region}
	var n *Node
	var apiLn net.Listener
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A port a killed node just released can take a moment to bind again.
		var raftLn net.Listener
		if raftLn, err = net.Listen("tcp", raftAddr); err == nil {
			if apiLn, err = net.Listen("tcp", apiAddr); err != nil {
				raftLn.Close()
			}
		}
		if err == nil {
			cfg := c.config(tn)
			cfg.RaftListener = faultnet.NewListener(raftLn, c.rules, ep, nil)
			cfg.RaftAddr, cfg.APIAddr = raftLn.Addr().String(), apiLn.Addr().String()
			if n, err = Open(cfg); err == nil {
				break
			}
			apiLn.Close() // Open closed the raft listener
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("open %s: %v", tn.id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mux := http.NewServeMux()
	mux.Handle(n.InternalHandler())
	srv := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(faultnet.NewListener(apiLn, c.rules, ep, nil)) }()
	tn.mu.Lock()
	tn.node, tn.srv, tn.up = n, srv, true
	tn.raftAddr, tn.apiAddr, tn.gossipAddr = n.RaftAddr(), apiLn.Addr().String(), n.gossipAddr
	tn.mu.Unlock()
}

// kill crashes tn: groups killed, gossip gone without leaving, API closed.
func (c *tcluster) kill(tn *tnode) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if !tn.up {
		return
	}
	tn.up = false
	_ = tn.srv.Close()
	tn.node.kill()
}

// stop shuts tn down gracefully.
func (c *tcluster) stop(tn *tnode) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if !tn.up {
		return
	}
	tn.up = false
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	tn.node.Drain(ctx)
	cancel()
	_ = tn.srv.Close()
	_ = tn.node.Close()
}

// restart starts a stopped or killed node again, joining the others.
func (c *tcluster) restart(tn *tnode) {
	tn.mu.Lock()
	tn.expect = 0
	tn.mu.Unlock()
	c.start(tn)
}

func (tn *tnode) n() *Node {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.node
}

func (tn *tnode) isUp() bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.up
}

func (c *tcluster) live() []*tnode {
	var out []*tnode
	for _, tn := range c.nodes {
		if tn.isUp() {
			out = append(out, tn)
		}
	}
	return out
}

func (c *tcluster) node(id string) *tnode {
	for _, tn := range c.nodes {
		if tn.id == id {
			return tn
		}
	}
	c.t.Fatalf("no node %s", id)
	return nil
}

// eventually polls cond until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *tcluster) waitReady(d time.Duration, nodes ...*tnode) {
	c.t.Helper()
	for _, tn := range nodes {
		eventually(c.t, d, tn.id+" ready", func() error { return tn.n().Ready() })
	}
}

// waitPolicy waits until every shard's replicas all run at least version.
func (c *tcluster) waitPolicy(d time.Duration, version uint64) {
	c.t.Helper()
	eventually(c.t, d, fmt.Sprintf("policy v%d on every shard", version), func() error {
		for _, tn := range c.live() {
			for _, s := range tn.n().sorted() {
				if v := s.fsm.Info().PolicyVersion; v < version {
					return fmt.Errorf("%s shard %d runs v%d", tn.id, s.id, v)
				}
			}
		}
		return nil
	})
}

// leaderOf is the live node leading shard id (nil when none does).
func (c *tcluster) leaderOf(id int) *tnode {
	for _, tn := range c.live() {
		if s := tn.n().hosted(id); s != nil && s.group.IsLeader() {
			return tn
		}
	}
	return nil
}

// waitConverged waits until every shard's live replicas have equal state
// hashes at equal applied indexes.
func (c *tcluster) waitConverged(d time.Duration) {
	c.t.Helper()
	eventually(c.t, d, "replicas converge", func() error {
		for id := range c.shards {
			var ref string
			var who string
			for _, tn := range c.live() {
				h, idx, err := tn.n().ShardStateHash(id)
				if err != nil {
					continue
				}
				got := fmt.Sprintf("%x@%d", h[:8], idx)
				if ref == "" {
					ref, who = got, tn.id
				} else if got != ref {
					return fmt.Errorf("shard %d: %s has %s, %s has %s", id, who, ref, tn.id, got)
				}
			}
		}
		return nil
	})
}

// replicasOf lists the nodes the map places shard id on.
func (c *tcluster) replicasOf(id int) []string {
	for _, tn := range c.live() {
		if m := tn.n().view(); m != nil {
			return slices.Clone(m.Placement[id].Replicas)
		}
	}
	return nil
}

func callsAllow(customer, id string) *fsm.Command {
	return &fsm.Command{RequestID: id, Allow: &engine.AllowRequest{Customer: customer, Entitlement: "calls", Value: decimal.New(1, 0)}}
}

func create(t *testing.T, n *Node, key string, req *engine.CreateCustomerRequest) {
	t.Helper()
	r, err := n.Apply(ctxT(t), key, &fsm.Command{RequestID: "create-" + req.ID, CreateCustomer: req})
	if err != nil {
		t.Fatalf("create %s via %s: %v", req.ID, n.NodeID(), err)
	}
	if r.Err != nil {
		t.Fatalf("create %s via %s: refused: %v", req.ID, n.NodeID(), r.Err)
	}
}

// meter reads customer's meter of ent through n (linearizable unless stale).
func meter(ctx context.Context, n *Node, key, customer, ent string, stale bool) (int64, Answer, error) {
	a, err := n.Query(ctx, key, stale, meterQuery, []byte(customer+"/"+ent))
	if err != nil {
		return 0, a, err
	}
	v, err := decimal.NewFromString(string(a.Result))
	if err != nil {
		return 0, a, err
	}
	return v.IntPart(), a, nil
}

// customersOnEveryShard returns one customer id per shard.
func customersOnEveryShard(prefix string, shards int) []string {
	out := make([]string, shards)
	found := 0
	for i := 0; found < shards; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		if s := shardFor(id, shards); out[s] == "" {
			out[s] = id
			found++
		}
	}
	return out
}

var oneDec = decimal.New(1, 0)

// pauseCtx waits d unless ctx ends first.
func (c *tcluster) pauseCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// busiestLeader is the live node (not in skip) leading the most shards.
func (c *tcluster) busiestLeader(skip map[string]bool) *tnode {
	var best *tnode
	bestN := -1
	for _, tn := range c.live() {
		if skip[tn.id] {
			continue
		}
		n := 0
		for id := range c.shards {
			if s := tn.n().hosted(id); s != nil && s.group.IsLeader() {
				n++
			}
		}
		if n > bestN {
			best, bestN = tn, n
		}
	}
	return best
}
