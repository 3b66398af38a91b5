package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// TestClusterProcesses runs three real `capstan serve` processes on
// 127.0.0.1 as docs/cluster-contract.md describes them (--gossip-addr, --join,
// --bootstrap-expect 3, --cluster-key, one region each): `capstan health`
// answers 0 on every node once the cluster formed, a customer created through
// one node is metered through every node, and after a kill -9 of one node the
// others keep deciding for every customer.
func TestClusterProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three processes")
	}
	if os.Getenv("CAPSTAN_CLUSTER_TESTS") == "" {
		// Gated with the in-process cluster tests (see cluster/gate_test.go, issue #4).
		t.Skip("multi-node cluster test: run with CAPSTAN_CLUSTER_TESTS=1 (make test-cluster)")
	}
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.stof")
	if err := os.WriteFile(policy, []byte(devPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	type node struct {
		id, api, raft, gossip string
		p                     *proc
	}
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = &node{id: fmt.Sprint("n", i+1), api: freeAddr(t), raft: freeAddr(t), gossip: freeAddr(t)}
	}
	env := []string{"CAPSTAN_API_KEYS=" + e2eAdminKey + ":admin", "CAPSTAN_CLUSTER_KEY=cluster-key-0123456789", "CAPSTAN_SHARDS=8"}
	for i, n := range nodes {
		args := []string{"serve", "--node-id", n.id, "--data-dir", filepath.Join(dir, n.id), "--listen", n.api,
			"--raft-addr", n.raft, "--gossip-addr", n.gossip, "--region", fmt.Sprint("r", i+1),
			"--bootstrap-expect", "3", "--replicas", "3", "--policy", policy, "--log-level", "warn"}
		if i > 0 {
			args = append(args, "--join", nodes[0].gossip)
		}
		n.p = launch(t, http.DefaultClient, "http://"+n.api, env, args...)
	}
	health := func(addr string) (int, string) {
		out, err := exec.Command(capstanBin, "health", "--addr", addr).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	deadline := time.Now().Add(90 * time.Second)
	for _, n := range nodes {
		for {
			code, out := health(n.api)
			if code == 0 {
				break
			}
			if code != 1 {
				t.Fatalf("capstan health: exit %d: %s", code, out)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not healthy: %s\nstderr:\n%s", n.id, out, n.p.stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	opt := bearer(e2eAdminKey)
	limiter := func(n *node) capstanv1connect.LimiterServiceClient {
		return capstanv1connect.NewLimiterServiceClient(http.DefaultClient, "http://"+n.api, opt)
	}
	cus := capstanv1connect.NewCustomerServiceClient(http.DefaultClient, "http://"+nodes[1].api, opt)
	ctx := context.Background()
	var ids []string
	for i := range 12 {
		id := fmt.Sprint("cus_", i)
		ids = append(ids, id)
		if _, err := cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: id, Plan: "starter"})); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	allowAll := func(ns []*node, tag string) {
		t.Helper()
		for _, n := range ns {
			for _, id := range ids {
				actx, cancel := context.WithTimeout(ctx, 15*time.Second)
				res, err := limiter(n).Allow(actx, connect.NewRequest(&capstanv1.AllowRequest{
					Customer: id, Entitlement: "ai_chat", Value: "10", IdempotencyKey: id + "-" + n.id + "-" + tag}))
				cancel()
				if err != nil || !res.Msg.Allowed || res.Msg.PolicyVersion != 1 {
					t.Fatalf("allow %s via %s (%s): %v %v", id, n.id, tag, err, res)
				}
			}
		}
	}
	allowAll(nodes, "before")

	adm := capstanv1connect.NewAdminServiceClient(http.DefaultClient, "http://"+nodes[2].api, opt)
	ms, err := adm.Members(ctx, connect.NewRequest(&capstanv1.MembersRequest{}))
	if err != nil || len(ms.Msg.Members) != 3 {
		t.Fatalf("members: %v %v", err, ms)
	}
	st, err := adm.Status(ctx, connect.NewRequest(&capstanv1.StatusRequest{}))
	if err != nil || len(st.Msg.Shards) != 8 || len(st.Msg.Shards[0].Replicas) != 3 || st.Msg.ClusterId == "" {
		t.Fatalf("status: %v %v", err, st)
	}

	// kill -9 the node leading the most shards.
	busiest, most := 0, -1
	for _, m := range ms.Msg.Members {
		for i, n := range nodes {
			if n.id == m.NodeId && len(m.ShardsLed) > most {
				busiest, most = i, len(m.ShardsLed)
			}
		}
	}
	victim := nodes[busiest]
	if err := victim.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.p.done
	var rest []*node
	for _, n := range nodes {
		if n != victim {
			rest = append(rest, n)
		}
	}
	start := time.Now()
	allowAll(rest, "after-kill")
	t.Logf("killed %s (leading %d of 8 shards); every customer decided again through both survivors within %s",
		victim.id, most, time.Since(start).Round(time.Millisecond))
	if code, out := health(victim.api); code != 1 {
		t.Fatalf("health of a dead node: exit %d %s", code, out)
	}
}
