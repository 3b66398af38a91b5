package rpc

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// caseFiles reads every *.yaml file in dir as TestPolicy files.
func caseFiles(t *testing.T, dir string) []*capstanv1.CaseFile {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no cases in %s: %v", dir, err)
	}
	var out []*capstanv1.CaseFile
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &capstanv1.CaseFile{Name: filepath.Base(p), Text: string(b)})
	}
	return out
}

func testPolicy(t *testing.T, env *testEnv, req *capstanv1.TestPolicyRequest) (*capstanv1.TestPolicyResponse, error) {
	t.Helper()
	res, err := env.pol.TestPolicy(context.Background(), connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// failingCase meters 4 and expects 5; the mismatch is on line 9.
const failingCase = `name: wrong-on-purpose
policy: |
  {"policy": {"credits": {"r": {}}, "plans": {"p": {"default": true, "entitlements": {
    "api": {"limit": {"credit": "r", "value": 10}}}}}}}
steps:
  - create_customer: {id: u}
  - allow: {customer: u, entitlement: api, value: 4}
    expect: {allowed: true}
  - value: {customer: u, entitlement: api}
    expect: {value: "5"}
`

// seedSteps runs against the seed policy, which the case does not carry.
const seedSteps = `name: seed-without-policy
steps:
  - at: 2026-03-02T10:00:00Z
    create_customer: {id: cus_123, plan: starter}
  - add_cap: {customer: cus_123, value: 15, cap_id: ai_weekly_guardrail, overage_only: true, ignore_grants: true, reset_sch: "weekly:mon"}
  - allow: {customer: cus_123, entitlement: ai_chat, value: 19260}
    expect: {allowed: true, events: [meter-overage]}
  - cap: {customer: cus_123, cap_id: ai_weekly_guardrail}
    expect: {meter_value: "0.7779"}
  - allow: {customer: cus_123, entitlement: ai_chat, value: 50000}
    expect: {allowed: false, reason: cap, cap_id: ai_weekly_guardrail}
`

func TestTestPolicyRunsRepoCases(t *testing.T) {
	env := newEnv(t)
	files := caseFiles(t, filepath.Join("..", "testdata", "conformance"))
	if shared := filepath.Join("..", "..", "shared", "conformance"); dirExists(shared) {
		files = append(files, caseFiles(t, shared)...)
	}
	out, err := testPolicy(t, env, &capstanv1.TestPolicyRequest{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	if int(out.Passed) != len(files) || out.Failed != 0 || len(out.Results) != len(files) {
		for _, r := range out.Results {
			if !r.Passed {
				t.Errorf("%s: %s", r.Name, r.Failure)
			}
		}
		t.Fatalf("passed %d failed %d of %d", out.Passed, out.Failed, len(files))
	}
	for i, r := range out.Results {
		if r.File != files[i].Name || r.Steps == 0 || r.Name == "" {
			t.Fatalf("result %d = %v", i, r)
		}
	}
	if out.PolicyVersion != 0 {
		t.Fatalf("policy_version = %d, but every case brought its own policy", out.PolicyVersion)
	}
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func TestTestPolicyReportsFailure(t *testing.T) {
	env := newEnv(t)
	out, err := testPolicy(t, env, &capstanv1.TestPolicyRequest{Files: []*capstanv1.CaseFile{
		{Name: "bad.yaml", Text: failingCase},
		{Name: "good.yaml", Text: strings.Replace(failingCase, `value: "5"`, `value: "4"`, 1)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if out.Passed != 1 || out.Failed != 1 {
		t.Fatalf("passed %d failed %d", out.Passed, out.Failed)
	}
	bad := out.Results[0]
	if bad.Passed || bad.Name != "wrong-on-purpose" || bad.File != "bad.yaml" || bad.Steps != 3 ||
		!strings.Contains(bad.Failure, "bad.yaml:10 step 3 (value)") || !strings.Contains(bad.Failure, "want 5, got 4") {
		t.Fatalf("failure = %v", bad)
	}
	if good := out.Results[1]; !good.Passed || good.Failure != "" || good.Steps != 3 {
		t.Fatalf("good = %v", good)
	}
}

// TestTestPolicyServerPolicy: a case without a policy runs under the one in
// force, and its failure lines still point into the file as sent.
func TestTestPolicyServerPolicy(t *testing.T) {
	env := newEnv(t)
	flow := `{name: flow-without-policy, steps: [{create_customer: {id: c, plan: starter}}, {allow: {customer: c, entitlement: ai_chat, value: 1}, expect: {allowed: true}}]}`
	out, err := testPolicy(t, env, &capstanv1.TestPolicyRequest{Files: []*capstanv1.CaseFile{
		{Name: "seed.yaml", Text: seedSteps},
		{Name: "seed-wrong.yaml", Text: strings.Replace(seedSteps, `"0.7779"`, `"0.78"`, 1)},
		{Name: "flow.yaml", Text: flow},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !out.Results[0].Passed || out.Results[0].Steps != 5 || !out.Results[2].Passed {
		t.Fatalf("results = %v", out.Results)
	}
	if r := out.Results[1]; r.Passed || !strings.Contains(r.Failure, "seed-wrong.yaml:9 step 4 (cap)") || !strings.Contains(r.Failure, "want 0.78, got 0.7779") {
		t.Fatalf("failure = %v", r)
	}
	if out.PolicyVersion != 1 {
		t.Fatalf("policy_version = %d", out.PolicyVersion)
	}
	// After a SetPolicy the next run uses the new policy.
	next := strings.Replace(seedPolicy, "value: 16667", "value: 20000", 1)
	if _, err := env.pol.SetPolicy(context.Background(), connect.NewRequest(&capstanv1.SetPolicyRequest{Text: next, Format: "stof"})); err != nil {
		t.Fatal(err)
	}
	out, err = testPolicy(t, env, &capstanv1.TestPolicyRequest{Files: []*capstanv1.CaseFile{{Name: "seed.yaml", Text: seedSteps}}})
	if err != nil {
		t.Fatal(err)
	}
	if r := out.Results[0]; r.Passed || !strings.Contains(r.Failure, "meter-overage") || out.PolicyVersion != 2 {
		t.Fatalf("under the new policy: %v (version %d)", r, out.PolicyVersion)
	}
}

// TestTestPolicySandbox: cases never touch the live state.
func TestTestPolicySandbox(t *testing.T) {
	env := newEnv(t)
	before := env.b.appliedCount()
	out, err := testPolicy(t, env, &capstanv1.TestPolicyRequest{Files: []*capstanv1.CaseFile{{Name: "seed.yaml", Text: seedSteps}}})
	if err != nil || out.Passed != 1 {
		t.Fatalf("%v %v", out, err)
	}
	if env.b.appliedCount() != before {
		t.Fatalf("TestPolicy proposed %d commands", env.b.appliedCount()-before)
	}
	_, err = env.cus.GetCustomer(context.Background(), connect.NewRequest(&capstanv1.GetCustomerRequest{Id: "cus_123"}))
	wantCode(t, err, connect.CodeNotFound, "")
}

func TestTestPolicyRunFilter(t *testing.T) {
	env := newEnv(t)
	out, err := testPolicy(t, env, &capstanv1.TestPolicyRequest{Run: "seed", Files: []*capstanv1.CaseFile{
		{Name: "bad.yaml", Text: failingCase},
		{Name: "seed.yaml", Text: seedSteps},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Results) != 1 || out.Results[0].Name != "seed-without-policy" || out.Failed != 0 {
		t.Fatalf("results = %v", out.Results)
	}
}

func TestTestPolicyBadRequests(t *testing.T) {
	env := newEnv(t)
	many := make([]*capstanv1.CaseFile, maxTestFiles+1)
	for i := range many {
		many[i] = &capstanv1.CaseFile{Name: fmt.Sprintf("c%d.yaml", i), Text: failingCase}
	}
	for _, tc := range []struct {
		name  string
		files []*capstanv1.CaseFile
		want  string
	}{
		{"none", nil, "files: required"},
		{"too many", many, "files: 201 files, more than 200"},
		{"empty text", []*capstanv1.CaseFile{{Name: "a.yaml", Text: failingCase}, {Name: "b.yaml"}}, "files[1].text: required"},
		{"too large", []*capstanv1.CaseFile{{Name: "big.yaml", Text: strings.Repeat("#", maxTestFileText+1)}}, "files[0].text: longer than 1048576 bytes"},
		{"control in name", []*capstanv1.CaseFile{{Name: "a\nb", Text: failingCase}}, "files[0].name: want UTF-8 text"},
		{"bad yaml", []*capstanv1.CaseFile{{Name: "ok.yaml", Text: failingCase}, {Name: "broken.yaml", Text: "name: x\nsteps:\n  - frobnicate: {}\n"}}, "files[1].text: broken.yaml:"},
		{"unknown verb", []*capstanv1.CaseFile{{Name: "v.yaml", Text: strings.Replace(failingCase, "- value:", "- valu:", 1)}}, `v.yaml:9: unknown verb "valu"`},
		{"format without policy", []*capstanv1.CaseFile{{Name: "f.yaml", Text: "format: json\n" + seedSteps}}, "files[0].text: f.yaml: the case gives a format but no policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testPolicy(t, env, &capstanv1.TestPolicyRequest{Files: tc.files})
			wantCode(t, err, connect.CodeInvalidArgument, tc.want)
			var ce *connect.Error
			if asConnect(err, &ce) && ce.Meta().Get(fieldHeader) == "" {
				t.Fatalf("no %s header", fieldHeader)
			}
		})
	}
}

func TestTestPolicyNeedsAdmin(t *testing.T) {
	env := newEnv(t)
	pol := capstanv1connect.NewPolicyServiceClient(http.DefaultClient, env.url, connect.WithInterceptors(bearer(clientKey)))
	_, err := pol.TestPolicy(context.Background(), connect.NewRequest(&capstanv1.TestPolicyRequest{
		Files: []*capstanv1.CaseFile{{Name: "seed.yaml", Text: seedSteps}},
	}))
	wantCode(t, err, connect.CodePermissionDenied, "admin")
}
