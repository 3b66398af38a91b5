package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/conformance"
)

// These tests build the real capstan binary, start one single-node server
// for the package and drive capstanctl's run() against it.

const (
	testAdminKey  = "test-admin-key-0123456789"
	testClientKey = "test-client-key-0123456789"
	testVersion   = "v0.0.0-ctl-test"
	testShards    = 4
)

var (
	repoRoot   = filepath.Join("..", "..")
	sharedDir  = filepath.Join(repoRoot, "..", "shared", "conformance")
	seedCase   = filepath.Join(sharedDir, "seed-spend-caps.yaml")
	capstanBin string // built by TestMain unless -short
	binDir     string

	srvOnce sync.Once
	srv     *server
	srvErr  error
)

func TestMain(m *testing.M) {
	// The test binary is capstanctl itself for tests that need it as a
	// process (events --follow, interrupted by a signal).
	if os.Getenv("CAPSTANCTL_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if !testing.Short() {
		dir, err := os.MkdirTemp("", "capstanctl-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
		capstanBin = filepath.Join(dir, "capstan")
		build := exec.Command("go", "build", "-o", capstanBin,
			"-ldflags", "-X github.com/capstanhq/capstan/internal/version.Version="+testVersion, "../capstan")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./cmd/capstan: %v\n%s", err, out)
			return 1
		}
	}
	code := m.Run()
	if srv != nil {
		srv.stop()
	}
	return code
}

// server is one running `capstan serve`.
type server struct {
	url, raftAddr, policyFile, policy string
	cmd                               *exec.Cmd
	stderr                            *syncBuffer
	done                              chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer returns the package's server, starting it on first use.
func testServer(t *testing.T) *server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a capstan server")
	}
	if _, err := os.Stat(seedCase); err != nil {
		t.Skipf("no seed case at %s", seedCase)
	}
	srvOnce.Do(func() { srv, srvErr = startServer() })
	if srvErr != nil {
		t.Fatal(srvErr)
	}
	return srv
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startServer() (*server, error) {
	seed, err := conformance.LoadFile(seedCase)
	if err != nil {
		return nil, err
	}
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	raftAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &server{url: "http://" + listen, raftAddr: raftAddr, policy: seed.Policy,
		policyFile: filepath.Join(binDir, "seed.stof"), stderr: &syncBuffer{}, done: make(chan struct{})}
	if err := os.WriteFile(s.policyFile, []byte(seed.Policy), 0o600); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(capstanBin, "serve", "--bootstrap", "--node-id", "n1", "--region", "test",
		"--data-dir", filepath.Join(binDir, "data"), "--listen", listen, "--raft-addr", raftAddr,
		"--policy", s.policyFile, "--shards", fmt.Sprint(testShards))
	s.cmd.Env = append(os.Environ(), "CAPSTAN_API_KEYS="+testAdminKey+":admin,"+testClientKey+":client")
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for !s.healthy() {
		select {
		case <-s.done:
			return nil, fmt.Errorf("capstan serve exited before it was healthy:\n%s", s.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("capstan serve not healthy after 60s:\n%s", s.stderr.String())
		}
	}
	return s, nil
}

// healthy asks grpc.health.v1 (open, no key) whether every shard has a leader.
func (s *server) healthy() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/grpc.health.v1.Health/Check", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	var out struct{ Status string }
	return json.NewDecoder(res.Body).Decode(&out) == nil && strings.HasSuffix(out.Status, "SERVING") && !strings.Contains(out.Status, "NOT")
}

func (s *server) stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// ctl runs capstanctl against the server with the admin key.
func (s *server) ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCtl(t, append([]string{"--server", s.url, "--api-key", testAdminKey}, args...)...)
}

// mustCtl is ctl that wants exit 0.
func (s *server) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := s.ctl(t, args...)
	if code != 0 {
		t.Fatalf("capstanctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// field is the value of a NAME  value line of a table.
func field(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\s{2,}(.*?)\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s line in:\n%s", name, out)
	}
	return m[1]
}

// rows splits a table into rows of columns (header first).
func rows(out string) [][]string {
	var r [][]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		r = append(r, strings.Fields(l))
	}
	return r
}

func decodeJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	return m
}

func TestServerStatus(t *testing.T) {
	s := testServer(t)
	out := s.mustCtl(t, "status")
	for name, want := range map[string]string{
		"NODE": "n1", "REGION": "test", "VERSION": testVersion, "RAFT": s.raftAddr, "POLICY": "v1",
		"SHARDS": fmt.Sprintf("%d (%d with a leader)", testShards, testShards),
	} {
		if got := field(t, out, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	_, table, _ := strings.Cut(out, "\n\n")
	r := rows(table)
	if strings.Join(r[0], " ") != "SHARD LEADER STATE APPLIED CUSTOMERS HASH" || len(r) != testShards+1 {
		t.Fatalf("shard table:\n%s", table)
	}
	for i, row := range r[1:] {
		if row[0] != fmt.Sprint(i) || row[1] != "n1" || row[2] != "Leader" || len(row[5]) != 12 {
			t.Fatalf("shard row %v", row)
		}
	}

	st := decodeJSON(t, s.mustCtl(t, "status", "-o", "json"))
	shards, _ := st["shards"].([]any)
	if st["nodeId"] != "n1" || st["region"] != "test" || st["version"] != testVersion || st["policyVersion"] != "1" || len(shards) != testShards {
		t.Fatalf("status json = %v", st)
	}
	for _, sh := range shards {
		if m := sh.(map[string]any); m["leader"] != "n1" || m["state"] != "Leader" || m["stateHash"] == "" {
			t.Fatalf("shard json = %v", m)
		}
	}

	r = rows(s.mustCtl(t, "shards", "list"))
	if len(r) != testShards+1 || r[0][2] != "LEADER-ADDR" || r[1][2] != s.raftAddr || r[1][7] != "v1" {
		t.Fatalf("shards list = %v", r)
	}
}

// TestServerSeedSpendCaps plays the seed's spend-caps example through the
// CLI: after three 6420-token calls both caps meter $0.7779 of overage, and a
// 50000-token call is denied by the weekly guardrail.
func TestServerSeedSpendCaps(t *testing.T) {
	s := testServer(t)
	out := s.mustCtl(t, "customer", "create", "cus_123", "--plan", "starter", "--type", "user",
		"--label", "Jane Doe", "--meta", "email=jane@example.com")
	if field(t, out, "PLAN") != "starter" || field(t, out, "LABEL") != "Jane Doe" || field(t, out, "METADATA") != "email=jane@example.com" {
		t.Fatalf("customer create:\n%s", out)
	}
	out = s.mustCtl(t, "cap", "add", "cus_123", "20", "--id", "ai_overage_cap", "--overage-only", "--ignore-grants", "--reset-sch", "monthly:1")
	if r := rows(out); len(r) != 2 || r[1][0] != "ai_overage_cap" || r[1][2] != "20" || r[1][3] != "0" ||
		r[1][6] != "overage-only,ignore-grants,reset-sch=monthly:1" {
		t.Fatalf("cap add:\n%s", out)
	}
	added := decodeJSON(t, s.mustCtl(t, "-o", "json", "cap", "add", "cus_123", "15", "--id", "ai_weekly_guardrail",
		"--overage-only", "--ignore-grants", "--reset-sch", "weekly:mon"))
	if c := added["cap"].(map[string]any); c["capId"] != "ai_weekly_guardrail" || c["value"] != "15" || c["overageOnly"] != true || c["resetSch"] != "weekly:mon" {
		t.Fatalf("cap add json = %v", added)
	}

	for i, wantEvents := range []string{"meter-changed", "meter-changed", "meter-overage"} {
		out := s.mustCtl(t, "allow", "cus_123", "ai_chat", "6420")
		if field(t, out, "RESULT") != "allowed" || field(t, out, "EVENTS") != wantEvents {
			t.Fatalf("allow %d:\n%s", i+1, out)
		}
	}
	for _, id := range []string{"ai_overage_cap", "ai_weekly_guardrail"} {
		if r := rows(s.mustCtl(t, "cap", "get", "cus_123", id)); r[1][3] != "0.7779" {
			t.Fatalf("cap %s = %v", id, r)
		}
		got := decodeJSON(t, s.mustCtl(t, "cap", "get", "cus_123", id, "-o", "json"))
		if m := got["cap"].(map[string]any)["meterValue"]; m != "0.7779" {
			t.Fatalf("cap %s json meterValue = %v", id, m)
		}
	}

	// Denied is an answer: exit 0, unless --fail-denied.
	out = s.mustCtl(t, "allow", "cus_123", "ai_chat", "50000")
	for name, want := range map[string]string{"RESULT": "denied", "REASON": "cap", "CAP": "ai_weekly_guardrail", "EVENTS": "cap-limit", "POLICY": "v1"} {
		if got := field(t, out, name); got != want {
			t.Errorf("denied allow %s = %q, want %q\n%s", name, got, want, out)
		}
	}
	code, out, errs := s.ctl(t, "allow", "cus_123", "ai_chat", "50000", "-o", "json", "--fail-denied")
	d := decodeJSON(t, out)
	if code != 1 || d["allowed"] != false || d["reason"] != "cap" || d["capId"] != "ai_weekly_guardrail" ||
		strings.TrimSpace(errs) != "capstanctl allow: denied: cap" {
		t.Fatalf("--fail-denied: exit %d %v %q", code, d, errs)
	}

	if v := field(t, s.mustCtl(t, "usage", "cus_123", "ai_chat"), "VALUE"); v != "19260" {
		t.Fatalf("usage value = %s", v)
	}
	if r := field(t, s.mustCtl(t, "check", "cus_123", "ai_chat", "1"), "RESULT"); r != "allowed" {
		t.Fatalf("check = %s", r)
	}
	cu := decodeJSON(t, s.mustCtl(t, "customer", "get", "cus_123", "-o", "json"))["customer"].(map[string]any)
	if caps := cu["caps"].([]any); len(caps) != 2 || cu["plan"] != "starter" {
		t.Fatalf("customer get json = %v", cu)
	}
	if r := rows(s.mustCtl(t, "cap", "list", "cus_123")); len(r) != 3 || r[1][0] != "ai_overage_cap" || r[2][0] != "ai_weekly_guardrail" {
		t.Fatalf("cap list = %v", r)
	}
}

// TestServerLifecycle covers the remaining mutating verbs on a customer of
// its own.
func TestServerLifecycle(t *testing.T) {
	s := testServer(t)
	s.mustCtl(t, "customer", "create", "cus_life", "--plan", "starter", "--alt", "life-alt")
	if alts := field(t, s.mustCtl(t, "customer", "get", "cus_life"), "ALT IDS"); alts != "life-alt" {
		t.Fatalf("alt ids = %s", alts)
	}
	s.mustCtl(t, "cap", "add", "cus_life", "1", "--id", "tiny")
	s.mustCtl(t, "allow", "cus_life", "ai_chat", "1000") // $0.30
	if m := rows(s.mustCtl(t, "cap", "get", "cus_life", "tiny"))[1][3]; m != "0.3" {
		t.Fatalf("tiny meter = %s", m)
	}
	if out := s.mustCtl(t, "cap", "reset", "cus_life", "tiny"); out != "cap tiny of cus_life reset\n" {
		t.Fatalf("reset: %q", out)
	}
	if m := rows(s.mustCtl(t, "cap", "get", "cus_life", "tiny"))[1][3]; m != "0" {
		t.Fatalf("tiny meter after reset = %s", m)
	}
	s.mustCtl(t, "cap", "remove", "cus_life", "tiny")
	if code, _, errs := s.ctl(t, "cap", "get", "cus_life", "tiny"); code != 1 || !strings.HasPrefix(errs, "capstanctl cap get: not_found: ") {
		t.Fatalf("removed cap: exit %d %s", code, errs)
	}
	out := s.mustCtl(t, "grant", "cus_life", "claude_sonnet_4", "500", "--id", "promo", "--expires", "2030-01-01T00:00:00Z")
	if r := rows(out); r[1][0] != "promo" || r[1][2] != "500" || r[1][5] != "2030-01-01T00:00:00Z" {
		t.Fatalf("grant:\n%s", out)
	}
	// Idempotency keys make retries safe; a replay is noted on stderr.
	s.mustCtl(t, "allow", "cus_life", "ai_chat", "5", "--idempotency-key", "k-1")
	_, out, errs := s.ctl(t, "allow", "cus_life", "ai_chat", "5", "--idempotency-key", "k-1")
	if !strings.Contains(errs, "replay") || field(t, out, "RESULT") != "allowed" {
		t.Fatalf("replay: %s %s", out, errs)
	}
	if v := field(t, s.mustCtl(t, "usage", "cus_life", "ai_chat"), "VALUE"); v != "1005" {
		t.Fatalf("usage after replay = %s", v)
	}
	// A negative value gives usage back without needing "--".
	s.mustCtl(t, "allow", "cus_life", "ai_chat", "-5")
	if v := field(t, s.mustCtl(t, "usage", "cus_life", "ai_chat"), "VALUE"); v != "1000" {
		t.Fatalf("usage after -5 = %s", v)
	}
	if out := s.mustCtl(t, "customer", "delete", "cus_life"); out != "customer cus_life deleted\n" {
		t.Fatalf("delete: %q", out)
	}
	if code, _, errs := s.ctl(t, "customer", "get", "cus_life"); code != 1 || !strings.Contains(errs, "not_found") {
		t.Fatalf("deleted customer: exit %d %s", code, errs)
	}
}

func TestServerPolicyGetSet(t *testing.T) {
	s := testServer(t)
	code, out, errs := s.ctl(t, "policy", "get")
	if code != 0 || strings.TrimSpace(out) != strings.TrimSpace(s.policy) || !strings.Contains(errs, "# policy version 1, format stof") {
		t.Fatalf("policy get: exit %d\n%s\n%s", code, out, errs)
	}
	if got := decodeJSON(t, s.mustCtl(t, "policy", "get", "-o", "json")); got["version"] != "1" || got["format"] != "stof" {
		t.Fatalf("policy get json = %v", got)
	}
	if out := s.mustCtl(t, "policy", "set", s.policyFile); out != "policy unchanged: already in force as version 1\n" {
		t.Fatalf("policy set same: %q", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"policy": {"plans": {"p": {"entitlements": {"chat": {"limit": {"credit": "x"}}}}}}}`), 0o600)
	code, _, errs = s.ctl(t, "policy", "set", bad)
	if code != 1 || !strings.HasPrefix(errs, "capstanctl policy set: invalid_argument: text: invalid policy") || !strings.Contains(errs, `unknown credit "x"`) {
		t.Fatalf("policy set invalid: exit %d %s", code, errs)
	}
}

// TestServerPolicyTest runs the conformance suites on the server and checks
// the output is what the local run prints.
func TestServerPolicyTest(t *testing.T) {
	s := testServer(t)
	dirs := []string{sharedDir, filepath.Join(repoRoot, "testdata", "conformance")}
	lcode, local, lerr := runCtl(t, append([]string{"policy", "test"}, dirs...)...)
	rcode, remote, rerr := runCtl(t, append([]string{"--api-key", testAdminKey, "policy", "test", "--server", s.url}, dirs...)...)
	if lcode != 0 || rcode != 0 {
		t.Fatalf("local exit %d, remote exit %d\n%s\n%s\n%s\n%s", lcode, rcode, local, lerr, remote, rerr)
	}
	if remote != local || !regexp.MustCompile(`\n\d+ passed, 0 failed\n$`).MatchString(remote) {
		t.Fatalf("remote output differs from local:\n--- local\n%s\n--- remote\n%s", local, remote)
	}

	dir := t.TempDir()
	failing := filepath.Join(dir, "bad.yaml")
	os.WriteFile(failing, []byte(`name: wrong-on-purpose
policy: |
  {"policy": {"credits": {"r": {}}, "plans": {"p": {"default": true, "entitlements": {
    "api": {"limit": {"credit": "r", "value": 10}}}}}}}
steps:
  - create_customer: {id: u}
  - allow: {customer: u, entitlement: api, value: 4}
    expect: {allowed: true}
  - value: {customer: u, entitlement: api}
    expect: {value: "5"}
`), 0o600)
	code, out, errs := s.ctl(t, "policy", "test", "--remote", failing)
	if code != 1 || !strings.Contains(out, "FAIL  wrong-on-purpose") || !strings.Contains(out, failing+":10 step 3 (value): value: want 5, got 4") ||
		!strings.HasSuffix(out, "\n0 passed, 1 failed\n") || !strings.Contains(errs, "1 of 1 cases failed") {
		t.Fatalf("failing case: exit %d\n%s\n%s", code, out, errs)
	}
	code, out, _ = s.ctl(t, "policy", "test", "--remote", "-o", "json", failing)
	if res := decodeJSON(t, out); code != 1 || res["failed"] != float64(1) || res["passed"] != float64(0) {
		t.Fatalf("failing case json: exit %d %v", code, res)
	}

	// A case without a policy runs under the server's, only on the server.
	noPolicy := filepath.Join(dir, "no-policy.yaml")
	os.WriteFile(noPolicy, []byte(`name: under-the-server-policy
steps:
  - create_customer: {id: u, plan: starter}
  - allow: {customer: u, entitlement: ai_chat, value: 16667}
    expect: {allowed: true, events: [meter-changed]}
  - allow: {customer: u, entitlement: ai_chat, value: 1}
    expect: {allowed: true, events: [meter-overage]}
`), 0o600)
	code, out, errs = s.ctl(t, "policy", "test", "--remote", noPolicy)
	if code != 0 || !strings.Contains(out, "PASS  under-the-server-policy") || !strings.Contains(errs, "server's policy version 1") {
		t.Fatalf("case without policy, remote: exit %d\n%s\n%s", code, out, errs)
	}
	code, _, errs = runCtl(t, "policy", "test", noPolicy)
	if code != 2 || !strings.Contains(errs, "missing policy") || !strings.Contains(errs, "--remote") {
		t.Fatalf("case without policy, local: exit %d %s", code, errs)
	}

	// A file that is not a case is the server's InvalidArgument.
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(broken, []byte("name: x\nsteps:\n  - frobnicate: {}\n"), 0o600)
	code, _, errs = s.ctl(t, "policy", "test", "--remote", broken)
	if code != 1 || !strings.HasPrefix(errs, "capstanctl policy test: invalid_argument: files[0].text: "+broken+":") {
		t.Fatalf("broken case: exit %d %s", code, errs)
	}
}

// TestServerErrors: refusals exit 1 with the server's code and message;
// missing credentials and unreachable servers exit 2.
func TestServerErrors(t *testing.T) {
	s := testServer(t)
	s.mustCtl(t, "customer", "create", "cus_err", "--plan", "starter")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad amount", []string{"allow", "cus_err", "ai_chat", "12abc"}, 1, `capstanctl allow: invalid_argument: value: "12abc" is not a decimal number`},
		{"bad cap value", []string{"cap", "add", "cus_err", "-3"}, 1, "capstanctl cap add: invalid_argument: value: "},
		{"bad event", []string{"allow", "cus_err", "ai_chat", "1", "--event", "[1]"}, 1, "capstanctl allow: invalid_argument: event_data: "},
		{"unknown plan", []string{"customer", "set-plan", "cus_err", "gold"}, 1, "capstanctl customer set-plan: invalid_argument: plan: "},
		{"unknown topup", []string{"topup", "apply", "cus_err", "nope"}, 1, "capstanctl topup apply: invalid_argument: topup: "},
		{"not found", []string{"customer", "get", "nobody"}, 1, "capstanctl customer get: not_found: "},
		{"unknown entitlement", []string{"usage", "cus_err", "nope"}, 1, "capstanctl usage: no usage of nope for cus_err: unknown_entitlement"},
		{"missing argument", []string{"allow", "cus_err"}, 2, "capstanctl allow: missing arguments; usage: capstanctl allow CUSTOMER ENTITLEMENT [VALUE]"},
		{"bad expires", []string{"grant", "cus_err", "claude_sonnet_4", "1", "--expires", "soon"}, 2, "capstanctl grant: invalid value \"soon\" for flag -expires"},
		{"bad output", []string{"status", "-o", "yaml"}, 2, `capstanctl status: -o must be table or json, got "yaml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := s.ctl(t, tc.args...)
			if code != tc.code || !strings.HasPrefix(errs, tc.want) {
				t.Fatalf("exit %d, want %d\nstderr: %s\nwant prefix: %s", code, tc.code, errs, tc.want)
			}
		})
	}

	t.Run("no api key", func(t *testing.T) {
		code, _, errs := runCtl(t, "--server", s.url, "--api-key", "", "status")
		if code != 2 || !strings.HasPrefix(errs, "capstanctl status: unauthenticated: missing API key") || !strings.Contains(errs, "set --api-key or CAPSTAN_API_KEY") {
			t.Fatalf("exit %d %s", code, errs)
		}
	})
	t.Run("wrong api key", func(t *testing.T) {
		code, _, errs := runCtl(t, "--server", s.url, "--api-key", "not-the-key-0123456789", "status")
		if code != 2 || !strings.HasPrefix(errs, "capstanctl status: unauthenticated: invalid API key") {
			t.Fatalf("exit %d %s", code, errs)
		}
	})
	t.Run("client key", func(t *testing.T) {
		code, _, errs := runCtl(t, "--server", s.url, "--api-key", testClientKey, "customer", "get", "cus_err")
		if code != 1 || !strings.HasPrefix(errs, "capstanctl customer get: permission_denied: ") {
			t.Fatalf("exit %d %s", code, errs)
		}
		code, out, errs := runCtl(t, "--server", s.url, "--api-key", testClientKey, "check", "cus_err", "ai_chat", "1")
		if code != 0 || field(t, out, "RESULT") != "allowed" {
			t.Fatalf("client key on check: exit %d %s %s", code, out, errs)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		addr, _ := freeAddr() // free a moment ago, so nothing listens
		code, _, errs := runCtl(t, "--server", "http://"+addr, "--api-key", testAdminKey, "status")
		if code != 2 || !strings.HasPrefix(errs, "capstanctl status: unavailable: ") || !strings.Contains(errs, "is capstan serving at http://"+addr) {
			t.Fatalf("exit %d %s", code, errs)
		}
	})
}
