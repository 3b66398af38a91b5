package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
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
	var res struct {
		Passed, Failed int
		Results        []struct {
			Name, File, Failure string
			Passed              bool
			Steps               int
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.Failed != 1 || res.Passed != 0 {
		t.Fatalf("json output: exit %d, %v\n%s", code, err, out)
	}
	if r := res.Results[0]; r.Name != "wrong-on-purpose" || r.Passed || r.Steps != 3 || !strings.Contains(r.Failure, "want 5, got 4") {
		t.Fatalf("json result = %+v", r)
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

func TestParseArgsInterspersed(t *testing.T) {
	g := &globals{output: "table"}
	for _, tc := range []struct {
		args []string
		pos  []string
		unit string
		out  string
	}{
		{[]string{"c1", "chat", "5"}, []string{"c1", "chat", "5"}, "", "table"},
		{[]string{"c1", "--unit", "GB", "chat", "-o", "json", "5"}, []string{"c1", "chat", "5"}, "GB", "json"},
		{[]string{"c1", "chat", "-5", "--unit=ms"}, []string{"c1", "chat", "-5"}, "ms", "table"},
		{[]string{"c1", "chat", "-0.25"}, []string{"c1", "chat", "-0.25"}, "", "table"},
		{[]string{"--", "-c1", "--unit"}, []string{"-c1", "--unit"}, "", "table"},
	} {
		g.output = "table"
		fs := flag.NewFlagSet("allow", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		g.register(fs)
		unit := fs.String("unit", "", "")
		fs.Bool("fail-denied", false, "")
		pos, err := parseArgs(g, fs, tc.args)
		if err != nil || !slices.Equal(pos, tc.pos) || *unit != tc.unit || g.output != tc.out {
			t.Fatalf("%q: pos %q unit %q -o %q err %v", tc.args, pos, *unit, g.output, err)
		}
	}
}

func TestServerURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:7070":    "http://127.0.0.1:7070",
		"127.0.0.1:7070":           "http://127.0.0.1:7070",
		"https://capstan.example/": "https://capstan.example",
	} {
		if got, err := serverURL(in); err != nil || got != want {
			t.Fatalf("%q: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "ftp://x", "http://"} {
		if _, err := serverURL(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help"}, "Exit codes:"},
		{[]string{"-h"}, "Global flags"},
		{[]string{"help", "cap"}, "add CUSTOMER VALUE"},
		{[]string{"help", "cap", "add"}, "-reset-sch"},
		{[]string{"help", "allow"}, "-fail-denied"},
		{[]string{"cap", "--help"}, "Verbs:"},
		{[]string{"cap", "add", "--help"}, "-overage-only"},
		{[]string{"status", "-h"}, "state hash"},
		{[]string{"policy", "test", "--help"}, "--remote"},
	} {
		code, out, errs := runCtl(t, tc.args...)
		if code != 0 || !strings.Contains(out, tc.want) || errs != "" {
			t.Fatalf("%q: exit %d, stdout lacks %q or stderr not empty:\n%s\n%s", tc.args, code, tc.want, out, errs)
		}
	}
	if code, _, errs := runCtl(t, "cap"); code != 2 || !strings.Contains(errs, "Verbs:") {
		t.Fatalf("noun without verb: exit %d", code)
	}
}
