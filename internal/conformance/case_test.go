package conformance

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testPolicy = `policy: |
  {"policy": {"credits": {"request": {}},
   "plans": {"free": {"default": true, "entitlements": {
     "api": {"limit": {"credit": "request", "mode": "hard", "value": 100}}}}}}}
format: json
`

func TestLoadUnknownVerb(t *testing.T) {
	src := "name: x\n" + testPolicy + `steps:
  - create_customer: {id: u1}
  - alow: {customer: u1, entitlement: api}
`
	_, err := Parse("x.yaml", []byte(src))
	if err == nil {
		t.Fatal("want an error for an unknown verb")
	}
	var le *LoadError
	if !errors.As(err, &le) || le.Line != 9 {
		t.Fatalf("want a LoadError at line 9, got %v", err)
	}
	if !strings.HasPrefix(err.Error(), "x.yaml:9: ") || !strings.Contains(err.Error(), `unknown verb "alow"`) {
		t.Fatalf("unclear message: %v", err)
	}
}

func TestLoadRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"unknown top-level key", "name: x\nsetps: []\n" + testPolicy, `x.yaml:2: unknown key "setps"`},
		{"unknown argument", "name: x\n" + testPolicy + "steps:\n  - allow: {customer: u1, entitlement: api, vaule: 1}\n",
			`x.yaml:8: allow: unknown argument "vaule"`},
		{"missing argument", "name: x\n" + testPolicy + "steps:\n  - allow: {customer: u1}\n",
			`x.yaml:8: allow: missing argument "entitlement"`},
		{"unknown expectation", "name: x\n" + testPolicy + "steps:\n  - allow: {customer: u1, entitlement: api}\n    expect: {alowed: true}\n",
			`x.yaml:9: unknown expectation "alowed"`},
		{"two verbs", "name: x\n" + testPolicy + "steps:\n  - check: {customer: u1, entitlement: api}\n    allow: {customer: u1, entitlement: api}\n",
			`x.yaml:9: a step has one verb`},
		{"bad at", "name: x\n" + testPolicy + "steps:\n  - at: yesterday\n", `x.yaml:8: at:`},
		{"expect without verb", "name: x\n" + testPolicy + "steps:\n  - at: 2026-01-02T00:00:00Z\n    expect: {allowed: true}\n",
			`x.yaml:9: expect without a verb`},
		{"error mixed", "name: x\n" + testPolicy + "steps:\n  - allow: {customer: u1, entitlement: api}\n    expect: {error: x, allowed: false}\n",
			`error cannot be combined`},
		{"bad decimal", "name: x\n" + testPolicy + "steps:\n  - value: {customer: u1, entitlement: api}\n    expect: {value: lots}\n",
			`x.yaml:9: expect value: "lots" is not a decimal`},
		{"yaml syntax", "name: x\nsteps: [\n", `x.yaml:`},
		{"missing policy", "name: x\nsteps:\n  - at: 2026-01-02T00:00:00Z\n", `missing policy`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestLoadKeepsNumberText(t *testing.T) {
	src := "name: x\n" + testPolicy + `steps:
  - allow: {customer: u1, entitlement: api, value: 0.0003, overhead: 1.5e-7, caps: {rune: 1.00}, event: {n: 0.1, ok: true}}
    expect: {remaining: "99.9997", allowed: true}
`
	c, err := Parse("x.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	st := c.Steps[0]
	if st.Line != 8 || st.Verb != "allow" {
		t.Fatalf("step: line %d verb %q", st.Line, st.Verb)
	}
	if got := st.Args["value"]; got != json.Number("0.0003") {
		t.Fatalf("value: %#v", got)
	}
	if got := st.Args["overhead"]; got != json.Number("1.5e-7") {
		t.Fatalf("overhead: %#v", got)
	}
	if got := st.Args["caps"].(map[string]any)["rune"]; got != json.Number("1.00") {
		t.Fatalf("caps.rune: %#v", got)
	}
	if got := st.Expect["allowed"]; got != true {
		t.Fatalf("expect allowed: %#v", got)
	}
	if got := st.keys(); strings.Join(got, ",") != "remaining,allowed" {
		t.Fatalf("expect order: %v", got)
	}
	b, _ := json.Marshal(st.Args["event"])
	if string(b) != `{"n":0.1,"ok":true}` {
		t.Fatalf("event json: %s", b)
	}
}

func TestLoadPathDir(t *testing.T) {
	dir := t.TempDir()
	one := "name: b\n" + testPolicy + "steps:\n  - create_customer: {id: u1}\n"
	two := "name: a\n" + testPolicy + "steps:\n  - create_customer: {id: u2}\n"
	os.WriteFile(filepath.Join(dir, "2.yml"), []byte(one), 0o644)
	os.WriteFile(filepath.Join(dir, "1.yaml"), []byte(two), 0o644)
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("# not a case"), 0o644)
	cases, err := LoadPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) != 2 || cases[0].Name != "a" || cases[1].Name != "b" {
		t.Fatalf("want cases a, b in file order, got %d", len(cases))
	}
	single, err := LoadPath(filepath.Join(dir, "2.yml"))
	if err != nil || len(single) != 1 || single[0].Name != "b" {
		t.Fatalf("single file: %v", err)
	}
}
