package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
	"github.com/capstanhq/capstan/internal/testgate"
)

// TestClusterProcesses runs three real `capstan serve` processes on
// 127.0.0.1 as docs/cluster-contract.md describes them (--gossip-addr, --join,
// --bootstrap-expect 3, --cluster-key, one region each): `capstan health`
// answers 0 on every node once the cluster formed, a customer created through
// one node is metered through every node, and after a kill -9 of one node the
// others keep deciding for every customer.
func TestClusterProcesses(t *testing.T) {
	testgate.RequireCluster(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.stof")
	if err := os.WriteFile(policy, []byte(devPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	type node struct {
		id, api string
		p       *proc
	}
	// Every port is 0: each process binds its own, so nothing can take a port
	// between choosing and binding it; the addresses come from the logs.
	env := []string{"CAPSTAN_API_KEYS=" + e2eAdminKey + ":admin", "CAPSTAN_CLUSTER_KEY=cluster-key-0123456789", "CAPSTAN_SHARDS=8"}
	var nodes []*node
	var seed string
	for i := range 3 {
		n := &node{id: fmt.Sprint("n", i+1)}
		args := []string{"serve", "--node-id", n.id, "--data-dir", filepath.Join(dir, n.id), "--listen", "127.0.0.1:0",
			"--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--region", fmt.Sprint("r", i+1),
			"--bootstrap-expect", "3", "--replicas", "3", "--policy", policy, "--log-level", "info"}
		if i > 0 {
			args = append(args, "--join", seed)
		}
		n.p = launch(t, http.DefaultClient, "", env, args...)
		n.api = strings.TrimPrefix(logValue(t, n.p, "capstan serving", "url"), "http://")
		if i == 0 {
			seed = logValue(t, n.p, "node opened (cluster mode)", "gossip_addr")
		}
		nodes = append(nodes, n)
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
	// Forming takes seconds on a quiet machine, far longer on a saturated one.
	deadline := time.Now().Add(3 * time.Minute)
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

// logValue waits for p to log a line with msg and returns its key's value
// (text handler format: key=value or key="value").
func logValue(t *testing.T, p *proc, msg, key string) string {
	t.Helper()
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `".* ` + regexp.QuoteMeta(key) + `=("[^"]*"|\S+)`)
	deadline := time.Now().Add(time.Minute)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			return strings.Trim(m[1], `"`)
		}
		select {
		case <-p.done:
			t.Fatalf("capstan exited: %v\nstderr:\n%s", p.err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line with %s in the log:\n%s", msg, key, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
