package main

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/version"
)

// Cluster commands (AdminService): status and shards, and the operator verbs
// members, leader transfer, node remove and shards home (snapshot verbs are in
// snapshot.go). Still to come, once the server grows the call: restoring a
// saved snapshot.
func init() {
	register("status", "", &command{
		group:   "cluster",
		summary: "show the node, its version, the policy version and every shard",
		about: `Asks the node at --server for its view of the cluster: node id, region, build,
raft address, the policy version in force, then one row per shard: leader,
this node's raft state, applied index, customers and a prefix of the state hash
(equal on replicas that applied the same log).`,
		run: status,
	})
	register("shards", "list", &command{
		group:   "cluster",
		summary: "list every shard with its leader, raft state, indexes, policy version and state hash",
		run:     shardsList,
	})
	register("members", "", &command{
		group:   "cluster",
		summary: "list the cluster's nodes: region, state, addresses and the shards each leads",
		about: `Asks the node at --server which nodes the cluster map and gossip know. STATE is
alive, suspect (alive to gossip but not answering the answering node's probes),
dead, left (shut down gracefully) or removed (taken out with 'capstanctl node
remove'; it cannot rejoin under its id).
LEADS are the shards a node leads as it last gossiped; REPLICAS the shards the
cluster map places on it. A standalone node lists itself.`,
		run: members,
	})
	register("leader", "transfer", &command{
		group:   "cluster",
		summary: "move a shard's leadership to another of its replicas",
		usage:   "--shard N [--to NODE]",
		about: `Hands the shard's raft leadership to NODE, which must be a voter of the shard
(see REPLICAS in 'capstanctl shards list'), or, without --to, to its most
up-to-date other replica. Prints the leader before and after (as the old
leader knew it once raft confirmed the hand-over). The new leader keeps it for
a minute; then the leader balancer may move leadership back toward the shard's
home region (see 'capstanctl shards home').`,
		run: leaderTransfer,
	})
	register("node", "remove", &command{
		group:   "cluster",
		summary: "remove a node from the cluster, placing replacement replicas where possible",
		usage:   "NODE",
		about: `Removes NODE from every shard it is a voter of, through each shard's raft log,
places a replacement replica on a node that is up (preferring regions the shard
lacks) where one is available, and makes NODE leave the cluster. Prints each
shard NODE held and its replacement ("none" when no node could take it: the
shard then runs with one voter fewer). The removed id cannot rejoin: wipe its
data dir and start it with a new --node-id. Safe to run again after a partial
failure. Without --timeout the call may take up to 2 minutes.`,
		run: nodeRemove,
	})
	register("shards", "home", &command{
		group:   "cluster",
		summary: "set the region whose replicas a shard's leadership prefers",
		usage:   "--shard N --region REGION",
		about: `Sets the shard's home region in the cluster map. The leader balancer then hands
the shard's leadership to a replica in that region and evens leadership out
across the region's nodes. HOME in 'capstanctl shards list' shows it. REGION
must be the region of a member of the cluster (see 'capstanctl members').`,
		run: shardsHome,
	})
	register("version", "", &command{
		group:   "other",
		summary: "print capstanctl's version (the server's is in status)",
		run: func(g *globals, args []string) error {
			if _, err := parseN(g, subFlags(g, "version", ""), args, 0, 0); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "capstanctl %s (%s %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	})
}

func (g *globals) status() (*capstanv1.StatusResponse, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.adm.Status(ctx, connect.NewRequest(&capstanv1.StatusRequest{}))
	if err != nil {
		return nil, g.callErr(err)
	}
	return res.Msg, nil
}

func status(g *globals, args []string) error {
	if _, err := parseN(g, subFlags(g, "status", ""), args, 0, 0); err != nil {
		return err
	}
	st, err := g.status()
	if err != nil {
		return err
	}
	if g.json() {
		return g.printJSON(st)
	}
	led := 0
	for _, sh := range st.Shards {
		if sh.Leader != "" {
			led++
		}
	}
	fields(g.stdout,
		"CLUSTER", st.ClusterId,
		"NODE", st.NodeId,
		"REGION", st.Region,
		"VERSION", st.Version,
		"RAFT", st.RaftAddress,
		"POLICY", "v"+strconv.FormatUint(st.PolicyVersion, 10),
		"SHARDS", fmt.Sprintf("%d (%d with a leader)", len(st.Shards), led),
	)
	fmt.Fprintln(g.stdout)
	t := newTable(g.stdout, "SHARD", "LEADER", "STATE", "APPLIED", "CUSTOMERS", "HASH")
	for _, sh := range st.Shards {
		t.row(u32(sh.Shard), sh.Leader, sh.State, u64(sh.AppliedIndex), u64(sh.Customers), prefix(sh.StateHash, 12))
	}
	t.flush()
	return nil
}

func shardsList(g *globals, args []string) error {
	if _, err := parseN(g, subFlags(g, "shards", "list"), args, 0, 0); err != nil {
		return err
	}
	st, err := g.status()
	if err != nil {
		return err
	}
	if g.json() {
		return g.printJSON(st)
	}
	t := newTable(g.stdout, "SHARD", "LEADER", "LEADER-ADDR", "STATE", "APPLIED", "LAST", "CUSTOMERS", "POLICY", "HASH", "HASH-INDEX", "HOME", "REPLICAS")
	for _, sh := range st.Shards {
		t.row(u32(sh.Shard), sh.Leader, sh.LeaderAddress, sh.State, u64(sh.AppliedIndex), u64(sh.LastIndex),
			u64(sh.Customers), "v"+u64(sh.PolicyVersion), prefix(sh.StateHash, 16), u64(sh.HashIndex),
			sh.HomeRegion, replicas(sh.Replicas))
	}
	t.flush()
	return nil
}

// replicas lists a shard's voters, marking those whose node did not answer.
func replicas(rs []*capstanv1.ReplicaStatus) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.NodeId
		if r.State == "unreachable" {
			out[i] += "(unreachable)"
		}
	}
	return strings.Join(out, ",")
}

func u32(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func prefix(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func members(g *globals, args []string) error {
	if _, err := parseN(g, subFlags(g, "members", ""), args, 0, 0); err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.adm.Members(ctx, connect.NewRequest(&capstanv1.MembersRequest{}))
	if err != nil {
		return g.callErr(err)
	}
	if g.json() {
		return g.printJSON(res.Msg)
	}
	t := newTable(g.stdout, "NODE", "REGION", "STATE", "API", "RAFT", "GOSSIP", "LEADS", "REPLICAS")
	for _, m := range res.Msg.Members {
		t.row(m.NodeId, m.Region, m.State, m.ApiAddress, m.RaftAddress, m.GossipAddress, shardSet(m.ShardsLed), shardSet(m.Shards))
	}
	t.flush()
	return nil
}

func leaderTransfer(g *globals, args []string) error {
	fs := subFlags(g, "leader", "transfer")
	shard := &shardFlag{}
	fs.Var(shard, "shard", "the shard `number` whose leadership moves (required)")
	to := fs.String("to", "", "the `node` to lead it, a voter of the shard (default: its most up-to-date other replica)")
	if _, err := parseN(g, fs, args, 0, 0); err != nil {
		return err
	}
	if !shard.set {
		return usageErr("--shard is required; usage: capstanctl %s", usageLine(fs))
	}
	// The leader before, for the table; -o json prints the API's answer only.
	var from string
	if !g.json() {
		if st, err := g.status(); err == nil {
			for _, sh := range st.Shards {
				if sh.Shard == shard.n {
					from = sh.Leader
				}
			}
		}
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.adm.TransferLeadership(ctx, connect.NewRequest(&capstanv1.TransferLeadershipRequest{Shard: shard.n, ToNode: *to}))
	if err != nil {
		return g.callErr(err)
	}
	if g.json() {
		return g.printJSON(res.Msg)
	}
	now := res.Msg.Leader
	switch {
	case now == "":
		fmt.Fprintf(g.stdout, "shard %d: leadership handed over; no new leader known yet\n", shard.n)
	case from == now:
		fmt.Fprintf(g.stdout, "shard %d: %s already leads it\n", shard.n, now)
	case from == "":
		fmt.Fprintf(g.stdout, "shard %d: leadership moved to %s (previous leader unknown)\n", shard.n, now)
	default:
		fmt.Fprintf(g.stdout, "shard %d: leadership moved from %s to %s\n", shard.n, from, now)
	}
	return nil
}

// removeTimeout bounds node remove when --timeout is not given: moving every
// replica off a node takes a few raft round trips per shard (the server's own
// bound is the same).
const removeTimeout = 2 * time.Minute

func nodeRemove(g *globals, args []string) error {
	fs := subFlags(g, "node", "remove")
	pos, err := parseN(g, fs, args, 1, 1)
	if err != nil {
		return err
	}
	if !g.timeoutSet && !flagSet(fs, "timeout") {
		g.timeout = removeTimeout
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.adm.RemoveNode(ctx, connect.NewRequest(&capstanv1.RemoveNodeRequest{NodeId: pos[0]}))
	if err != nil {
		return g.callErr(err)
	}
	if g.json() {
		return g.printJSON(res.Msg)
	}
	if len(res.Msg.Shards) == 0 {
		fmt.Fprintf(g.stdout, "node %s removed from the cluster (it held no replicas)\n", pos[0])
		return nil
	}
	fmt.Fprintf(g.stdout, "node %s removed from the cluster; it held replicas of %d shards\n\n", pos[0], len(res.Msg.Shards))
	shards := slices.Clone(res.Msg.Shards)
	slices.Sort(shards)
	t := newTable(g.stdout, "SHARD", "REPLACEMENT")
	for _, sh := range shards {
		repl := res.Msg.Replacements[sh]
		if repl == "" {
			repl = "none"
		}
		t.row(u32(sh), repl)
	}
	t.flush()
	return nil
}

func shardsHome(g *globals, args []string) error {
	fs := subFlags(g, "shards", "home")
	shard := &shardFlag{}
	fs.Var(shard, "shard", "the shard `number` to re-home (required)")
	region := fs.String("region", "", "the `region` whose replicas should lead the shard (required)")
	if _, err := parseN(g, fs, args, 0, 0); err != nil {
		return err
	}
	switch {
	case !shard.set:
		return usageErr("--shard is required; usage: capstanctl %s", usageLine(fs))
	case *region == "":
		return usageErr("--region is required; usage: capstanctl %s", usageLine(fs))
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.adm.SetShardHome(ctx, connect.NewRequest(&capstanv1.SetShardHomeRequest{Shard: shard.n, Region: *region}))
	if err != nil {
		return g.callErr(err)
	}
	if g.json() {
		return g.printJSON(res.Msg)
	}
	fmt.Fprintf(g.stdout, "shard %d: home region is now %s (leadership moves to a replica there)\n", shard.n, *region)
	return nil
}

// shardSet renders shard numbers compactly: "0-3,6,9-10".
func shardSet(ids []uint32) string {
	s := slices.Clone(ids)
	slices.Sort(s)
	s = slices.Compact(s)
	var parts []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, u32(s[i]))
		} else {
			parts = append(parts, u32(s[i])+"-"+u32(s[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
