package main

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/version"
)

// Cluster commands (AdminService). Multi-node administration joins this file
// and the "cluster" help group as nouns of their own once the cluster
// package grows the calls: `members list`, `leader transfer SHARD NODE`,
// `node add ID RAFT_ADDR` / `node remove ID`, `snapshot save|restore FILE`.
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
