package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

const (
	e2eAdminKey  = "e2e-admin-key-0123456789"
	e2eClientKey = "e2e-client-key-0123456789"
)

// node is one `capstan serve` configuration, restartable on the same data dir
// and ports.
type node struct {
	dataDir, listen, raftAddr, policyFile, keysFile string
}

func newNode(t *testing.T) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{
		dataDir:    filepath.Join(dir, "data"),
		listen:     freeAddr(t),
		raftAddr:   freeAddr(t),
		policyFile: filepath.Join(dir, "policy.stof"),
		keysFile:   filepath.Join(dir, "keys"),
	}
	if err := os.WriteFile(n.policyFile, []byte(devPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	// The admin key comes from the file, the client key from the environment.
	if err := os.WriteFile(n.keysFile, []byte("# test keys\n"+e2eAdminKey+":admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) start(t *testing.T) *proc {
	t.Helper()
	return start(t, "http://"+n.listen, []string{"CAPSTAN_API_KEYS=" + e2eClientKey + ":client", "CAPSTAN_SHARDS=2"},
		"serve", "--node-id", "n1", "--data-dir", n.dataDir, "--listen", n.listen, "--raft-addr", n.raftAddr,
		"--bootstrap", "--policy", n.policyFile, "--api-keys-file", n.keysFile, "--region", "test")
}

// h2c is an HTTP client that speaks HTTP/2 without TLS (prior knowledge).
func h2c() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

func bearer(key string) connect.Option {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+key)
			return next(ctx, req)
		}
	}))
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(capstanBin, "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), testVersion) {
		t.Fatalf("version: %v %s", err, out)
	}
	if err := exec.Command(capstanBin, "bogus").Run(); err == nil {
		t.Fatal("an unknown command succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("unknown command: %v, want exit code 2", err)
	}
}

// TestServe drives a real single-node server over HTTP, restarts it on the
// same data dir and checks the state survived.
func TestServe(t *testing.T) {
	n := newNode(t)
	p := n.start(t)
	url := p.url
	ctx := context.Background()

	t.Run("grpc health over h2c", func(t *testing.T) {
		// A raw gRPC call: 5-byte frame header, empty HealthCheckRequest.
		req, _ := http.NewRequest("POST", url+"/grpc.health.v1.Health/Check", bytes.NewReader(make([]byte, 5)))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
		res, err := h2c().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.ProtoMajor != 2 || res.Trailer.Get("Grpc-Status") != "0" {
			t.Fatalf("proto %s, grpc-status %q", res.Proto, res.Trailer.Get("Grpc-Status"))
		}
		if len(body) < 5 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
			t.Fatalf("bad frame %x", body)
		}
		// HealthCheckResponse{status: SERVING} is field 1, varint 1.
		if !bytes.Equal(body[5:], []byte{0x08, 0x01}) {
			t.Fatalf("health = %x, want SERVING", body[5:])
		}
		// Per service too.
		st, err := healthJSON(url)
		if err != nil || !serving(st) {
			t.Fatalf("health json = %q, %v", st, err)
		}
	})

	t.Run("auth", func(t *testing.T) {
		allow := `{"customer":"nobody","entitlement":"ai_chat","value":"1"}`
		code, out := callJSON(t, url, "", "capstan.v1.LimiterService/Allow", allow)
		if code != 401 || out["code"] != "unauthenticated" {
			t.Fatalf("no key: %d %v", code, out)
		}
		code, out = callJSON(t, url, "not-a-real-key-0123456789", "capstan.v1.LimiterService/Allow", allow)
		if code != 401 || out["code"] != "unauthenticated" || !strings.Contains(str(out, "message"), "invalid API key") {
			t.Fatalf("bad key: %d %v", code, out)
		}
		code, out = callJSON(t, url, e2eClientKey, "capstan.v1.CustomerService/CreateCustomer", `{"id":"sneaky"}`)
		if code != 403 || out["code"] != "permission_denied" {
			t.Fatalf("client key on admin service: %d %v", code, out)
		}
		code, out = callJSON(t, url, e2eClientKey, "capstan.v1.AdminService/Status", `{}`)
		if code != 403 || out["code"] != "permission_denied" {
			t.Fatalf("client key on admin service: %d %v", code, out)
		}
		out = mustJSON(t, url, e2eClientKey, "capstan.v1.LimiterService/Allow", allow)
		if str(out, "allowed") != "" || str(out, "reason") != "unknown_customer" {
			t.Fatalf("client key on limiter: %v", out)
		}
		// Nothing was created by the refused call.
		code, out = callJSON(t, url, e2eAdminKey, "capstan.v1.CustomerService/GetCustomer", `{"id":"sneaky"}`)
		if code != 404 || out["code"] != "not_found" {
			t.Fatalf("sneaky exists: %d %v", code, out)
		}
	})

	t.Run("seed spend caps over connect json", func(t *testing.T) {
		mustJSON(t, url, e2eAdminKey, "capstan.v1.CustomerService/CreateCustomer",
			`{"id":"cus_123","plan":"starter","type":"user","label":"Jane Doe","metadata":{"email":"jane@example.com"},"idempotency_key":"create-cus_123"}`)
		mustJSON(t, url, e2eAdminKey, "capstan.v1.CustomerService/AddCap",
			`{"customer":"cus_123","value":"20","cap_id":"ai_overage_cap","overage_only":true,"ignore_grants":true,"reset_sch":"monthly:1"}`)
		mustJSON(t, url, e2eAdminKey, "capstan.v1.CustomerService/AddCap",
			`{"customer":"cus_123","value":"15","cap_id":"ai_weekly_guardrail","overage_only":true,"ignore_grants":true,"reset_sch":"weekly:mon"}`)
		allow := func(v string) map[string]any {
			return mustJSON(t, url, e2eClientKey, "capstan.v1.LimiterService/Allow",
				`{"customer":"cus_123","entitlement":"ai_chat","value":"`+v+`"}`)
		}
		out := allow("6420")
		if str(out, "allowed") != "true" || str(out, "remaining") != "10247" || str(out, "policyVersion") != "1" || str(out, "resetsAt") == "" {
			t.Fatalf("allow 1: %v", out)
		}
		if evs, _ := out["events"].([]any); len(evs) != 1 || str(evs[0].(map[string]any), "type") != "meter-changed" {
			t.Fatalf("allow 1 events: %v", out["events"])
		}
		allow("6420")
		out = allow("6420")
		evs, _ := out["events"].([]any)
		if str(out, "allowed") != "true" || len(evs) != 1 || str(evs[0].(map[string]any), "type") != "meter-overage" ||
			str(evs[0].(map[string]any), "overage") != "2593" {
			t.Fatalf("allow 3: %v", out)
		}
		out = allow("50000")
		if str(out, "allowed") != "" || str(out, "reason") != "cap" || str(out, "capId") != "ai_weekly_guardrail" {
			t.Fatalf("allow 4 should be denied by the weekly guardrail: %v", out)
		}
		cp := mustJSON(t, url, e2eClientKey, "capstan.v1.LimiterService/GetCustomerCap", `{"customer":"cus_123","cap_id":"ai_weekly_guardrail"}`)
		if str(cp, "cap", "meterValue") != "0.7779" || str(cp, "cap", "remaining") != "14.2221" {
			t.Fatalf("cap: %v", cp)
		}
		// A retried create with the same key is a replay, not a second create.
		out = mustJSON(t, url, e2eAdminKey, "capstan.v1.CustomerService/CreateCustomer",
			`{"id":"cus_123","plan":"starter","type":"user","label":"Jane Doe","metadata":{"email":"jane@example.com"},"idempotency_key":"create-cus_123"}`)
		if str(out, "duplicate") != "true" {
			t.Fatalf("retried create: %v", out)
		}
	})

	t.Run("binary connect and grpc clients", func(t *testing.T) {
		for name, opts := range map[string][]connect.ClientOption{
			"connect+proto": {bearer(e2eClientKey)},
			"grpc":          {bearer(e2eClientKey), connect.WithGRPC()},
		} {
			lim := capstanv1connect.NewLimiterServiceClient(h2c(), url, opts...)
			res, err := lim.GetUsage(ctx, connect.NewRequest(&capstanv1.GetUsageRequest{Customer: "cus_123", Entitlement: "ai_chat"}))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if u := res.Msg.Usage; !u.Found || u.Value != "19260" || u.Mode != "soft" || u.Credit != "claude_sonnet_4" || u.ResetsAt == nil {
				t.Fatalf("%s: usage = %v", name, u)
			}
			_, err = lim.Allow(ctx, connect.NewRequest(&capstanv1.AllowRequest{Customer: "cus_123", Entitlement: "ai_chat", Value: "abc"}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("%s: bad value: %v", name, err)
			}
		}
		adm := capstanv1connect.NewAdminServiceClient(h2c(), url, bearer(e2eAdminKey))
		st, err := adm.Status(ctx, connect.NewRequest(&capstanv1.StatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if st.Msg.NodeId != "n1" || st.Msg.Region != "test" || st.Msg.Version != testVersion || len(st.Msg.Shards) != 2 || st.Msg.PolicyVersion != 1 {
			t.Fatalf("status = %v", st.Msg)
		}
	})

	badInput(t, url)

	t.Run("metrics", func(t *testing.T) {
		res, err := http.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		for _, want := range []string{
			`capstan_decisions_total{method="Allow",reason="cap",result="denied"} 1`,
			`capstan_request_duration_seconds_count{code="invalid_argument",procedure="/capstan.v1.LimiterService/Allow"}`,
			`go_goroutines`,
			`capstan_shard_is_leader{shard="0"} 1`,
			`capstan_shard_is_leader{shard="1"} 1`,
			`capstan_proposals_total{outcome="ok"}`,
			`capstan_cluster_members{state="alive"} 1`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	before := mustJSON(t, url, e2eAdminKey, "capstan.v1.CustomerService/GetCustomer", `{"id":"cus_123"}`)
	p.stop()
	if !strings.Contains(p.stderr.String(), "shutting down") {
		t.Errorf("no shutdown log:\n%s", p.stderr.String())
	}

	t.Run("restart keeps state", func(t *testing.T) {
		p := n.start(t)
		after := mustJSON(t, p.url, e2eAdminKey, "capstan.v1.CustomerService/GetCustomer", `{"id":"cus_123"}`)
		for _, path := range [][]string{
			{"customer", "plan"}, {"customer", "metadata"}, {"customer", "usage"}, {"customer", "caps"},
		} {
			if str(before, path...) != str(after, path...) {
				t.Errorf("%v changed over the restart:\nbefore %s\nafter  %s", path, str(before, path...), str(after, path...))
			}
		}
		u := mustJSON(t, p.url, e2eClientKey, "capstan.v1.LimiterService/GetUsage", `{"customer":"cus_123","entitlement":"ai_chat"}`)
		if str(u, "usage", "value") != "19260" {
			t.Fatalf("usage after restart: %v", u)
		}
		// Still deciding, and still capped.
		out := mustJSON(t, p.url, e2eClientKey, "capstan.v1.LimiterService/Allow", `{"customer":"cus_123","entitlement":"ai_chat","value":"50000"}`)
		if str(out, "reason") != "cap" || str(out, "capId") != "ai_weekly_guardrail" {
			t.Fatalf("allow after restart: %v", out)
		}
		p.stop()
	})
}

// badInput sends a matrix of bad requests; each must be INVALID_ARGUMENT
// naming the field, and the customer must read back unchanged.
func badInput(t *testing.T, url string) {
	t.Run("bad input", func(t *testing.T) {
		mustJSON(t, url, e2eAdminKey, "capstan.v1.CustomerService/CreateCustomer", `{"id":"u1"}`) // the default plan
		mustJSON(t, url, e2eClientKey, "capstan.v1.LimiterService/Allow", `{"customer":"u1","entitlement":"ai_chat","value":"60"}`)
		read := func() string {
			out := mustJSON(t, url, e2eAdminKey, "capstan.v1.CustomerService/GetCustomer", `{"id":"u1"}`)
			if str(out, "customer", "plan") != "free" {
				t.Fatalf("u1 = %v", out)
			}
			return str(out, "customer")
		}
		before := read()
		long := strings.Repeat("x", 257)
		for _, tc := range []struct {
			procedure, body, field string
		}{
			{"LimiterService/Allow", `{"customer":"","entitlement":"ai_chat","value":"1"}`, "customer"},
			{"LimiterService/Allow", `{"customer":"u 1","entitlement":"ai_chat","value":"1"}`, "customer"},
			{"LimiterService/Allow", `{"customer":"` + long + `","entitlement":"ai_chat","value":"1"}`, "customer"},
			{"LimiterService/Allow", `{"customer":"u1","entitlement":"ai\tchat","value":"1"}`, "entitlement"},
			{"LimiterService/Allow", `{"customer":"u1","entitlement":"ai_chat","value":"1e2000000000"}`, "value"},
			{"LimiterService/Allow", `{"customer":"u1","entitlement":"ai_chat","value":"abc"}`, "value"},
			{"LimiterService/Allow", `{"customer":"u1","entitlement":"ai_chat","value":"0.0000000000000000001"}`, "value"},
			{"LimiterService/Allow", `{"customer":"u1","entitlement":"ai_chat","value":"1","overhead":"-5"}`, "overhead"},
			{"LimiterService/Allow", `{"customer":"u1","entitlement":"ai_chat","value":"1","caps":{"rune":"-5"}}`, "caps.rune"},
			{"LimiterService/Allow", `{"customer":"u1","entitlement":"ai_chat","value":"1","caps":{"doubloons":"1"}}`, "caps.doubloons"},
			{"LimiterService/Reserve", `{"customer":"u1","entitlement":"ai_chat","value":"-5"}`, "value"},
			{"LimiterService/Reserve", `{"customer":"u1","entitlement":"ai_chat","ttl":"forever"}`, "ttl"},
			{"CustomerService/AddCap", `{"customer":"u1","value":"-5"}`, "value"},
			{"CustomerService/AddCap", `{"customer":"u1","value":"5","credit":"no_such_credit"}`, "credit"},
			{"CustomerService/AddCap", `{"customer":"u1","value":"5","reset_sch":"fortnightly:3"}`, "reset_sch"},
			{"CustomerService/AddCap", `{"customer":"u1","value":"5","reset_inc":"1e2000000000days"}`, "reset_inc"},
			{"CustomerService/Grant", `{"customer":"u1","credit":"claude_sonnet_4","value":"-5"}`, "value"},
			{"CustomerService/Grant", `{"customer":"u1","credit":"gold","value":"5"}`, "credit"},
			{"CustomerService/CreditRemaining", `{"customer":"u1","credit":"gold"}`, "credit"},
			{"CustomerService/SetPlan", `{"customer":"u1","plan":"platinum"}`, "plan"},
			{"CustomerService/CreateOverride", `{"customer":"u1","entitlement":"ai_chat","value":"abc"}`, "value"},
			{"CustomerService/SetMetadata", `{"customer":"u1","metadata":{"bad key":"x"}}`, "metadata"},
		} {
			code, out := callJSON(t, url, e2eAdminKey, "capstan.v1."+tc.procedure, tc.body)
			msg := str(out, "message")
			if code != 400 || out["code"] != "invalid_argument" || !strings.HasPrefix(msg, tc.field+": ") {
				t.Errorf("%s %s: %d %v, want invalid_argument naming %q", tc.procedure, tc.body, code, out, tc.field)
			}
		}
		// A JSON number where a decimal string belongs is refused by the codec.
		code, out := callJSON(t, url, e2eAdminKey, "capstan.v1.LimiterService/Allow", `{"customer":"u1","entitlement":"ai_chat","value":1}`)
		if code != 400 || out["code"] != "invalid_argument" {
			t.Errorf("number value: %d %v", code, out)
		}
		if after := read(); after != before {
			t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
		}
	})
}
