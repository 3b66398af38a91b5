package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/capstanhq/capstan/internal/conformance"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/testgate"
)

// The operator verbs (members, leader transfer, node remove, shards home):
// usage errors without a server, refusals by the package's standalone server,
// and TestClusterVerbs against three real `capstan serve` processes.

const (
	clusterShards = 8
	// formTimeout bounds forming a cluster: seconds on a quiet machine, far
	// longer on a saturated one.
	formTimeout = 3 * time.Minute
	// settleTimeout bounds every later wait for a condition.
	settleTimeout = 90 * time.Second
)

func TestClusterVerbUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"leader", "transfer"}, "capstanctl leader transfer: --shard is required; usage: capstanctl leader transfer --shard N [--to NODE]"},
		{[]string{"leader", "transfer", "--to", "n2"}, "capstanctl leader transfer: --shard is required"},
		{[]string{"leader", "transfer", "--shard", "x"}, `capstanctl leader transfer: invalid value "x" for flag -shard: want a shard number`},
		{[]string{"leader", "transfer", "--shard", "-1"}, `capstanctl leader transfer: invalid value "-1" for flag -shard`},
		{[]string{"leader", "transfer", "--shard", "1", "n2"}, `capstanctl leader transfer: unexpected argument "n2"`},
		{[]string{"shards", "home", "--region", "r1"}, "capstanctl shards home: --shard is required; usage: capstanctl shards home --shard N --region REGION"},
		{[]string{"shards", "home", "--shard", "1"}, "capstanctl shards home: --region is required"},
		{[]string{"node", "remove"}, "capstanctl node remove: missing arguments; usage: capstanctl node remove NODE"},
		{[]string{"node", "remove", "n1", "n2"}, `capstanctl node remove: unexpected argument "n2"`},
		{[]string{"members", "list"}, `capstanctl members: unexpected argument "list"`},
		{[]string{"leader", "frob"}, `unknown verb "frob"`},
	} {
		// No server listens there: usage errors are found before any call.
		code, out, errs := runCtl(t, append([]string{"--server", "http://127.0.0.1:1"}, tc.args...)...)
		if code != 2 || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, want 2\nstdout: %s\nstderr: %s\nwant: %s", tc.args, code, out, errs, tc.want)
		}
	}

	code, out, _ := runCtl(t, "help")
	for _, want := range []string{"\n  members ", "\n  leader transfer ", "\n  node remove ", "\n  shards home "} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("capstanctl help lacks %q:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "members"}, "LEADS"},
		{[]string{"leader", "transfer", "--help"}, "-to node"},
		{[]string{"help", "node", "remove"}, "cannot rejoin"},
		{[]string{"shards", "home", "-h"}, "-region region"},
		{[]string{"help", "shards"}, "home --shard N --region REGION"},
	} {
		code, out, errs := runCtl(t, tc.args...)
		if code != 0 || !strings.Contains(out, tc.want) || errs != "" {
			t.Errorf("%q: exit %d, stdout lacks %q:\n%s\n%s", tc.args, code, tc.want, out, errs)
		}
	}
}

func TestShardSet(t *testing.T) {
	for _, tc := range []struct {
		in   []uint32
		want string
	}{
		{nil, ""},
		{[]uint32{3}, "3"},
		{[]uint32{0, 1, 2, 3, 4, 5, 6, 7}, "0-7"},
		{[]uint32{9, 0, 2, 1, 6, 10, 2}, "0-2,6,9-10"},
		{[]uint32{1, 3, 5}, "1,3,5"},
	} {
		if got := shardSet(tc.in); got != tc.want {
			t.Errorf("shardSet(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestServerClusterVerbsStandalone: a standalone node lists itself as the
// only member and refuses the verbs that need other nodes (exit 1, with the
// server's reason).
func TestServerClusterVerbsStandalone(t *testing.T) {
	s := testServer(t)
	r := rows(s.mustCtl(t, "members"))
	if strings.Join(r[0], " ") != "NODE REGION STATE API RAFT GOSSIP LEADS REPLICAS" || len(r) != 2 {
		t.Fatalf("members:\n%v", r)
	}
	if want := []string{"n1", "test", "alive"}; !slices.Equal(r[1][:3], want) || r[1][4] != s.raftAddr ||
		r[1][6] != fmt.Sprintf("0-%d", testShards-1) || r[1][7] != fmt.Sprintf("0-%d", testShards-1) {
		t.Fatalf("members row %v", r[1])
	}
	var ms capstanv1.MembersResponse
	unmarshal(t, s.mustCtl(t, "members", "-o", "json"), &ms)
	if len(ms.Members) != 1 || ms.Members[0].NodeId != "n1" || ms.Members[0].State != "alive" || len(ms.Members[0].ShardsLed) != testShards {
		t.Fatalf("members json = %v", &ms)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"leader", "transfer", "--shard", "0"}, "capstanctl leader transfer: invalid_argument: shard: group 0 has no other voter to hand leadership to"},
		{[]string{"leader", "transfer", "--shard", "0", "--to", "n2"}, "capstanctl leader transfer: invalid_argument: to_node: n2 is not a voter of group 0"},
		{[]string{"leader", "transfer", "--shard", fmt.Sprint(testShards)}, "capstanctl leader transfer: invalid_argument: shard: no shard 4"},
		{[]string{"shards", "home", "--shard", "0", "--region", "r2"}, "capstanctl shards home: invalid_argument: home regions need a cluster"},
		{[]string{"node", "remove", "n1"}, "capstanctl node remove: invalid_argument: node_id: a standalone node has no other nodes"},
	} {
		code, out, errs := s.ctl(t, tc.args...)
		if code != 1 || out != "" || !strings.HasPrefix(errs, tc.want) {
			t.Errorf("%q: exit %d, want 1\nstdout: %s\nstderr: %s\nwant prefix: %s", tc.args, code, out, errs, tc.want)
		}
	}
}

// TestClusterVerbs runs the operator verbs against three real `capstan serve`
// processes (one region each, 8 shards of 3 replicas): members lists three
// alive nodes with the addresses they logged; shards home moves a shard's
// leadership to the new region (and refuses a region no node is in); node
// remove takes a node out through raft, members then shows it removed without
// replicas, every shard runs on the two others and customers are still
// decided through both; leader transfer hands a shard to the named node (or,
// without --to, to the other voter).
func TestClusterVerbs(t *testing.T) {
	testgate.RequireCluster(t)
	if _, err := os.Stat(seedCase); err != nil {
		t.Skipf("no seed case at %s", seedCase)
	}
	seed, err := conformance.LoadFile(seedCase)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	policy := filepath.Join(dir, "seed.stof")
	if err := os.WriteFile(policy, []byte(seed.Policy), 0o600); err != nil {
		t.Fatal(err)
	}
	// Every port is 0, so nothing can take one between choosing and binding
	// it; each node's addresses come from its log.
	var nodes []*server
	var join string
	for i := range 3 {
		n := launchNode(t, dir, policy, fmt.Sprint("n", i+1), fmt.Sprint("r", i+1), join)
		if i == 0 {
			join = logValue(t, n, "node opened (cluster mode)", "gossip_addr")
		}
		nodes = append(nodes, n)
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ids := map[*server]string{n1: "n1", n2: "n2", n3: "n3"}
	region := map[string]string{"n1": "r1", "n2": "r2", "n3": "r3"}
	for _, n := range nodes {
		waitHealthy(t, n, formTimeout)
	}

	// members: three alive nodes, as every node sees them.
	allShards := fmt.Sprintf("0-%d", clusterShards-1)
	for _, n := range nodes {
		waitFor(t, settleTimeout, "three alive members seen from "+ids[n], func() (bool, string) {
			ms, out := membersOf(t, n)
			if ms == nil || len(ms.Members) != 3 {
				return false, out
			}
			for i, m := range ms.Members {
				want := nodes[i]
				if m.NodeId != ids[want] || m.State != "alive" || m.Region != region[m.NodeId] ||
					"http://"+m.ApiAddress != want.url || m.RaftAddress != want.raftAddr || m.GossipAddress == "" ||
					shardSet(m.Shards) != allShards {
					return false, out
				}
			}
			return true, ""
		})
	}
	// The table, once gossip agrees on who leads what (leadership settles in
	// each shard's home region: shard i's is r(i%3+1), one node per region).
	waitFor(t, settleTimeout, "members table with every shard led from its home region", func() (bool, string) {
		code, out, _ := n2.ctl(t, "members")
		r := rows(out)
		if code != 0 || len(r) != 4 || strings.Join(r[0], " ") != "NODE REGION STATE API RAFT GOSSIP LEADS REPLICAS" {
			return false, out
		}
		for i, row := range r[1:] {
			n := nodes[i]
			var led []uint32
			for sh := i; sh < clusterShards; sh += 3 {
				led = append(led, uint32(sh))
			}
			if len(row) != 8 || row[0] != ids[n] || row[1] != region[ids[n]] || row[2] != "alive" ||
				"http://"+row[3] != n.url || row[4] != n.raftAddr || row[6] != shardSet(led) || row[7] != allShards {
				return false, out
			}
		}
		return true, ""
	})
	t.Logf("capstanctl members:\n%s", n2.mustCtl(t, "members"))

	// Customers made before any change are decided through every node, before
	// and after.
	var customers []string
	for i := range 6 {
		id := fmt.Sprint("cus_op_", i)
		customers = append(customers, id)
		n1.mustCtl(t, "customer", "create", id, "--plan", "starter")
	}
	allowAll := func(ns []*server) {
		t.Helper()
		for _, n := range ns {
			for _, id := range customers {
				if out := n.mustCtl(t, "allow", id, "ai_chat", "10"); field(t, out, "RESULT") != "allowed" {
					t.Fatalf("allow %s via %s:\n%s", id, ids[n], out)
				}
			}
		}
	}
	allowAll(nodes)

	// shards home: shard 0 (home r1, led by n1) moves home to r2; the balancer
	// hands its leadership to n2.
	if out := n3.mustCtl(t, "shards", "home", "--shard", "0", "--region", "r2"); out != "shard 0: home region is now r2 (leadership moves to a replica there)\n" {
		t.Fatalf("shards home: %q", out)
	}
	waitFor(t, settleTimeout, "shard 0 homed in r2 and led by n2", func() (bool, string) {
		st, out := statusOf(t, n1)
		return st != nil && st.Shards[0].HomeRegion == "r2" && st.Shards[0].Leader == "n2", out
	})
	waitFor(t, settleTimeout, "shards list through n3 showing shard 0 homed in r2, led by n2", func() (bool, string) {
		code, out, _ := n3.ctl(t, "shards", "list")
		r := rows(out)
		return code == 0 && len(r) == clusterShards+1 && r[0][10] == "HOME" && r[1][10] == "r2" && r[1][1] == "n2", out
	})
	if out := n1.mustCtl(t, "shards", "home", "--shard", "0", "--region", "r2", "-o", "json"); strings.TrimSpace(out) != "{}" {
		t.Fatalf("shards home json: %q", out)
	}

	// leader transfer is checked after the node removal below, on shards
	// whose home region is gone, where the balancer has nothing to move back
	// toward (on the full cluster the new leader holds an explicitly
	// transferred shard for a minute, then hands it back home; the cluster
	// package's tests cover that).

	// Refusals: exit 1 with the server's reason.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"leader", "transfer", "--shard", "1", "--to", "n9"}, "capstanctl leader transfer: invalid_argument: "},
		{[]string{"leader", "transfer", "--shard", "8"}, "capstanctl leader transfer: invalid_argument: shard: no shard 8 (the cluster has 8)"},
		{[]string{"shards", "home", "--shard", "8", "--region", "r1"}, "capstanctl shards home: invalid_argument: shard: no shard 8 (the cluster has 8)"},
		{[]string{"shards", "home", "--shard", "1", "--region", "r9"}, `capstanctl shards home: invalid_argument: region: no node in region "r9"; known regions: r1, r2, r3`},
		{[]string{"node", "remove", "n9"}, `capstanctl node remove: invalid_argument: node_id: unknown node "n9"`},
	} {
		code, out, errs := n1.ctl(t, tc.args...)
		if code != 1 || out != "" || !strings.HasPrefix(errs, tc.want) {
			t.Errorf("%q: exit %d, want 1\nstdout: %s\nstderr: %s\nwant prefix: %s", tc.args, code, out, errs, tc.want)
		}
	}
	if _, _, errs := n1.ctl(t, "leader", "transfer", "--shard", "1", "--to", "n9"); !strings.Contains(errs, "n9 is not a voter") {
		t.Errorf("transfer to a non-voter: %s", errs)
	}

	// node remove n3, through n1: n3 held a replica of every shard and no
	// node is left to take one.
	out := n1.mustCtl(t, "node", "remove", "n3")
	r := rows(out)
	if !strings.HasPrefix(out, fmt.Sprintf("node n3 removed from the cluster; it held replicas of %d shards\n\n", clusterShards)) ||
		len(r) != clusterShards+3 || strings.Join(r[2], " ") != "SHARD REPLACEMENT" {
		t.Fatalf("node remove:\n%s", out)
	}
	t.Logf("capstanctl node remove n3:\n%s", out)
	for i, row := range r[3:] {
		if row[0] != fmt.Sprint(i) || row[1] != "none" {
			t.Fatalf("node remove row %v:\n%s", row, out)
		}
	}
	// members shows n3 removed, without replicas, from both remaining nodes.
	for _, n := range []*server{n1, n2} {
		waitFor(t, settleTimeout, "n3 removed as "+ids[n]+" sees it", func() (bool, string) {
			ms, out := membersOf(t, n)
			if ms == nil || len(ms.Members) != 3 {
				return false, out
			}
			for _, m := range ms.Members {
				want := "alive"
				if m.NodeId == "n3" {
					want = "removed"
				}
				if m.State != want || (m.NodeId == "n3") != (len(m.Shards) == 0) {
					return false, out
				}
			}
			return true, ""
		})
	}
	if r := rows(n2.mustCtl(t, "members")); len(r) != 4 || r[3][0] != "n3" || r[3][2] != "removed" || r[3][7] != "-" {
		t.Fatalf("members table after node remove: %v", r)
	}
	// Every shard's voters are n1 and n2, and each has a leader.
	waitFor(t, settleTimeout, "every shard on n1 and n2 only", func() (bool, string) {
		st, out := statusOf(t, n2)
		if st == nil {
			return false, out
		}
		for _, sh := range st.Shards {
			var voters []string
			for _, r := range sh.Replicas {
				voters = append(voters, r.NodeId)
			}
			slices.Sort(voters)
			if !slices.Equal(voters, []string{"n1", "n2"}) || (sh.Leader != "n1" && sh.Leader != "n2") {
				return false, out
			}
		}
		return true, ""
	})
	for _, n := range []*server{n1, n2} {
		waitHealthy(t, n, settleTimeout)
	}
	allowAll([]*server{n1, n2})
	// With n3 gone no node is in r3: a shard cannot be homed there again.
	if code, out, errs := n2.ctl(t, "shards", "home", "--shard", "1", "--region", "r3"); code != 1 || out != "" ||
		!strings.HasPrefix(errs, `capstanctl shards home: invalid_argument: region: no node in region "r3"; known regions: r1, r2`) {
		t.Errorf("shards home in the removed node's region: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}

	// leader transfer: shards homed in r3 have no replica left there, so the
	// balancer leaves them where a transfer puts them.
	st, out := statusOf(t, n1)
	if st == nil {
		t.Fatalf("status:\n%s", out)
	}
	var homeless []*capstanv1.ShardStatus
	for _, s := range st.Shards {
		if s.HomeRegion == "r3" {
			homeless = append(homeless, s)
		}
	}
	if len(homeless) < 2 {
		t.Fatalf("fewer than two shards homed in r3:\n%s", out)
	}
	other := map[string]string{"n1": "n2", "n2": "n1"}
	ledBy := func(shard uint32, node string) {
		t.Helper()
		waitFor(t, settleTimeout, fmt.Sprintf("shards list showing shard %d led by %s", shard, node), func() (bool, string) {
			code, out, _ := n1.ctl(t, "shards", "list")
			r := rows(out)
			return code == 0 && len(r) == clusterShards+1 && r[shard+1][1] == node, out
		})
	}
	// --to the named node, there and back.
	sh := homeless[0]
	from, to := sh.Leader, other[sh.Leader]
	for range 2 {
		out := n2.mustCtl(t, "leader", "transfer", "--shard", fmt.Sprint(sh.Shard), "--to", to)
		if want := fmt.Sprintf("shard %d: leadership moved from %s to %s\n", sh.Shard, from, to); out != want {
			t.Fatalf("leader transfer: %q, want %q", out, want)
		}
		t.Logf("capstanctl leader transfer --shard %d --to %s: %s", sh.Shard, to, out)
		ledBy(sh.Shard, to)
		from, to = to, from
	}
	// Without --to the server picks the other voter; -o json is its answer.
	sh = homeless[1]
	var tr capstanv1.TransferLeadershipResponse
	unmarshal(t, n1.mustCtl(t, "leader", "transfer", "--shard", fmt.Sprint(sh.Shard), "-o", "json"), &tr)
	if tr.Leader != other[sh.Leader] {
		t.Fatalf("leader transfer --shard %d -o json: %v, want leader %s", sh.Shard, &tr, other[sh.Leader])
	}
	ledBy(sh.Shard, tr.Leader)
	// LEADS (as gossiped) catches up with the leaders Status reports.
	waitFor(t, settleTimeout, "members' LEADS matching shards list", func() (bool, string) {
		ms, mout := membersOf(t, n1)
		st, sout := statusOf(t, n1)
		if ms == nil || st == nil {
			return false, mout + sout
		}
		led := map[uint32]string{}
		for _, m := range ms.Members {
			for _, sh := range m.ShardsLed {
				led[sh] = m.NodeId
			}
		}
		for _, sh := range st.Shards {
			if sh.Leader == "" || led[sh.Shard] != sh.Leader {
				return false, mout + sout
			}
		}
		return len(led) == clusterShards, ""
	})
	t.Logf("capstanctl members after node remove:\n%s", n1.mustCtl(t, "members"))
}

// launchNode starts one cluster node with every port chosen by the kernel
// and reads its API and raft addresses from its log.
func launchNode(t *testing.T, dir, policy, id, region, join string) *server {
	t.Helper()
	args := []string{"serve", "--node-id", id, "--region", region, "--data-dir", filepath.Join(dir, id),
		"--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--bootstrap-expect", "3", "--replicas", "3", "--shards", fmt.Sprint(clusterShards),
		"--policy", policy, "--log-level", "info"}
	if join != "" {
		args = append(args, "--join", join)
	}
	s := &server{policyFile: policy, stderr: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(capstanBin, args...)
	s.cmd.Env = append(os.Environ(), "CAPSTAN_API_KEYS="+testAdminKey+":admin", "CAPSTAN_CLUSTER_KEY=cluster-key-0123456789")
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("capstan serve %s stderr:\n%s", id, s.stderr.String())
		}
	})
	s.url = logValue(t, s, "capstan serving", "url")
	s.raftAddr = logValue(t, s, "capstan serving", "raft_addr")
	return s
}

// logValue waits for s to log a line with msg and returns its key's value
// (text handler format: key=value or key="value").
func logValue(t *testing.T, s *server, msg, key string) string {
	t.Helper()
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `".* ` + regexp.QuoteMeta(key) + `=("[^"]*"|\S+)`)
	deadline := time.Now().Add(settleTimeout)
	for {
		if m := re.FindStringSubmatch(s.stderr.String()); m != nil {
			return strings.Trim(m[1], `"`)
		}
		select {
		case <-s.done:
			t.Fatalf("capstan exited:\n%s", s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line with %s in the log:\n%s", msg, key, s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHealthy waits until s's health check answers SERVING (a cluster node:
// joined, and a leader known for every shard).
func waitHealthy(t *testing.T, s *server, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !s.healthy() {
		select {
		case <-s.done:
			t.Fatalf("capstan exited before it was healthy:\n%s", s.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after %s", s.url, d)
		}
	}
}

// waitFor polls cond until it holds, failing with its last report after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s; last answer:\n%s", what, d, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// membersOf is `capstanctl members -o json` through s; nil (and what it
// printed) when the call failed.
func membersOf(t *testing.T, s *server) (*capstanv1.MembersResponse, string) {
	t.Helper()
	var ms capstanv1.MembersResponse
	return ctlJSON(t, s, &ms, "members")
}

// statusOf is `capstanctl shards list -o json` through s.
func statusOf(t *testing.T, s *server) (*capstanv1.StatusResponse, string) {
	t.Helper()
	var st capstanv1.StatusResponse
	return ctlJSON(t, s, &st, "shards", "list")
}

func ctlJSON[M proto.Message](t *testing.T, s *server, m M, args ...string) (M, string) {
	t.Helper()
	var zero M
	code, out, errs := s.ctl(t, append(args, "-o", "json")...)
	if code != 0 {
		return zero, fmt.Sprintf("exit %d: %s", code, errs)
	}
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("capstanctl %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
	return m, out
}

func unmarshal(t *testing.T, out string, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("not the message's JSON: %v\n%s", err, out)
	}
}
