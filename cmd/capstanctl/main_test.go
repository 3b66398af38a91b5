package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCtl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestPolicyTestPassesRepoCases(t *testing.T) {
	code, out, errs := runCtl(t, "policy", "test", filepath.Join("..", "..", "testdata", "conformance"))
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(out, " passed, 0 failed") || !strings.Contains(out, "PASS  ") {
		t.Fatalf("unexpected output:\n%s", out)
	}
}

func TestPolicyTestReportsFirstMismatch(t *testing.T) {
	dir := t.TempDir()
	bad := `name: wrong-on-purpose
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
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runCtl(t, "policy", "test", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	if !strings.Contains(out, "FAIL  wrong-on-purpose") || !strings.Contains(out, "want 5, got 4") || !strings.Contains(out, "0 passed, 1 failed") {
		t.Fatalf("failure not reported precisely:\n%s", out)
	}
	code, out, _ = runCtl(t, "-o", "json", "policy", "test", dir)
	if code != 1 || !strings.Contains(out, `"failed": 1`) {
		t.Fatalf("json output: exit %d\n%s", code, out)
	}
}

func TestPolicyValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.stof")
	os.WriteFile(good, []byte("policy: { credits: { tok: { price: { amount: 0.0003 } } } plans: { p: { default: true entitlements: { chat: { limit: { credit: 'tok', value: 1_000 } } } } } }"), 0o644)
	code, out, errs := runCtl(t, "policy", "validate", good)
	if code != 0 || !strings.Contains(out, "valid (1 credits, 1 plans)") {
		t.Fatalf("exit %d out %q err %q", code, out, errs)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"policy": {"plans": {"p": {"entitlements": {"chat": {"limit": {"credit": "x", "mode": "hardest"}}}}}}}`), 0o644)
	code, _, errs = runCtl(t, "policy", "validate", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{`policy.plans.p.entitlements.chat.limit.credit: unknown credit "x"`, `policy.plans.p.entitlements.chat.limit.mode: unknown mode "hardest"`} {
		if !strings.Contains(errs, want) {
			t.Fatalf("missing %q in:\n%s", want, errs)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	if code, _, _ := runCtl(t); code != 2 {
		t.Fatalf("no args: exit %d", code)
	}
	if code, _, errs := runCtl(t, "nope"); code != 2 || !strings.Contains(errs, `unknown command "nope"`) {
		t.Fatalf("unknown noun: %d %s", code, errs)
	}
	if code, _, errs := runCtl(t, "policy", "frob"); code != 2 || !strings.Contains(errs, `unknown verb "frob"`) {
		t.Fatalf("unknown verb: %d %s", code, errs)
	}
	if code, _, _ := runCtl(t, "policy", "test", "-h"); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
}
