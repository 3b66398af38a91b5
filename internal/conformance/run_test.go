package conformance

import (
	"strings"
	"testing"
)

func TestMultisetDiff(t *testing.T) {
	for _, tc := range []struct {
		want, got      []string
		missing, extra string
	}{
		{nil, nil, "", ""},
		{[]string{"a", "b"}, []string{"b", "a"}, "", ""},
		{[]string{"a", "a", "b"}, []string{"a", "b"}, "a", ""},
		{[]string{"a"}, []string{"a", "a"}, "", "a"},
		{[]string{"a", "b"}, []string{"c"}, "a,b", "c"},
		{nil, []string{"x"}, "", "x"},
	} {
		m, e := multisetDiff(tc.want, tc.got)
		if strings.Join(m, ",") != tc.missing || strings.Join(e, ",") != tc.extra {
			t.Errorf("multisetDiff(%v, %v) = missing %v extra %v; want missing %q extra %q", tc.want, tc.got, m, e, tc.missing, tc.extra)
		}
	}
	if _, ok := compareEvents([]any{"meter-reset", "meter-changed"}, []string{"meter-changed", "meter-reset"}); !ok {
		t.Error("order must not matter")
	}
	if msg, ok := compareEvents([]any{"meter-changed"}, []string{"meter-changed", "cap-threshold-crossed"}); ok ||
		!strings.Contains(msg, "extra cap-threshold-crossed") {
		t.Errorf("an extra event must fail: %q", msg)
	}
	if msg, ok := compareEvents([]any{"meter-changed", "meter-changed"}, []string{"meter-changed"}); ok ||
		!strings.Contains(msg, "missing meter-changed") {
		t.Errorf("a missing duplicate must fail: %q", msg)
	}
}

func TestCompareDecimalsExactly(t *testing.T) {
	if _, ok := compareKey("value", "19260", Result{"value": "19260.000"}); !ok {
		t.Error("19260 == 19260.000")
	}
	if msg, ok := compareKey("meter_value", "0.7779", Result{"meter_value": "0.7778"}); ok || msg != "want 0.7779, got 0.7778" {
		t.Errorf("got %q", msg)
	}
	if _, ok := compareKey("resets", nil, Result{"resets": nil}); !ok {
		t.Error("null resets")
	}
	if _, ok := compareKey("resets", "2026-04-01T00:00:00Z", Result{"resets": "2026-04-01T00:00:00.000Z"}); !ok {
		t.Error("same instant")
	}
	if _, ok := compareKey("event", map[string]any{"overage": "2593"}, Result{"event": map[string]string{"overage": "2593.0"}}); !ok {
		t.Error("event field decimal compare")
	}
	if _, ok := compareKey("event", map[string]any{"overage": "1"}, Result{"event": map[string]string{}}); ok {
		t.Error("a missing event field must fail")
	}
}

const runnerCase = `name: runner
policy: |
  {"policy": {"credits": {"request": {}},
   "plans": {"free": {"default": true, "entitlements": {
     "api": {"limit": {"credit": "request", "mode": "hard", "value": 100}}}}}}}
format: json
steps:
  - at: 2026-03-02T10:00:00Z
    create_customer: {id: u1}
  - allow: {customer: u1, entitlement: api, value: 60}
    expect: {allowed: true, events: [meter-changed]}
  - value: {customer: u1, entitlement: api}
    expect:
      value: "60"
`

func TestRunPasses(t *testing.T) {
	c, err := Parse("runner.yaml", []byte(runnerCase))
	if err != nil {
		t.Fatal(err)
	}
	res := Run(c, NewEngineTarget())
	if !res.Pass || res.Steps != 3 {
		t.Fatalf("want a pass, got %+v %v", res, res.Failure)
	}
}

func TestRunCanFail(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{`value: "60"`, `value: "61"`, `runner.yaml:14 step 3 (value): value: want 61, got 60`},
		{`{allowed: true, events: [meter-changed]}`, `{allowed: false}`, `runner.yaml:11 step 2 (allow): allowed: want false, got true`},
		{`events: [meter-changed]`, `events: [meter-changed, meter-reset]`, `step 2 (allow): events: want [meter-changed, meter-reset], got [meter-changed] (missing meter-reset)`},
		{`{allowed: true, events: [meter-changed]}`, `{error: "nope"}`, `step 2 (allow): error: want a refusal containing "nope", got no error`},
		{`allow: {customer: u1, entitlement: api, value: 60}`, `allow: {customer: u1, entitlement: api, value: 600}`, `step 2 (allow): allowed: want true, got false`},
		{"  - value:", "  - at: 2026-03-01T00:00:00Z\n    value:", `runner.yaml:12 step 3 (value): at: 2026-03-01T00:00:00Z is before the clock (2026-03-02T10:00:00Z)`},
		{`create_customer: {id: u1}`, `create_customer: {id: u1, plan: gold}`, `runner.yaml:9 step 1 (create_customer): refused: plan: unknown plan "gold"`},
	} {
		src := strings.Replace(runnerCase, tc.from, tc.to, 1)
		c, err := Parse("runner.yaml", []byte(src))
		if err != nil {
			t.Fatalf("%s: %v", tc.to, err)
		}
		res := Run(c, NewEngineTarget())
		if res.Pass || res.Failure == nil {
			t.Fatalf("%s: want a failure", tc.to)
		}
		if !strings.Contains(res.Failure.Message, tc.want) {
			t.Errorf("want a failure containing\n  %s\ngot\n  %s", tc.want, res.Failure.Message)
		}
	}
}

// stateChanger refuses every step but changes its state anyway.
type stateChanger struct{ n int }

func (s *stateChanger) Reset(string, string) error { return nil }
func (s *stateChanger) Do(int64, string, map[string]any) (Result, error) {
	s.n++
	return nil, &ArgError{Msg: "never"}
}
func (s *stateChanger) Dump() ([]byte, error) { return []byte{byte(s.n)}, nil }

type refusingChanger struct{ stateChanger }

func (s *refusingChanger) Do(int64, string, map[string]any) (Result, error) {
	s.n++
	return nil, errString("value: must be >= 0")
}

type errString string

func (e errString) Error() string { return string(e) }

func TestRunErrorMustNotChangeState(t *testing.T) {
	src := "name: x\npolicy: p\nsteps:\n  - grant: {customer: u1, credit: c, value: -1}\n    expect: {error: \">= 0\"}\n"
	c, err := Parse("x.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	res := Run(c, &refusingChanger{})
	if res.Pass || !strings.Contains(res.Failure.Message, "the state changed") {
		t.Fatalf("want a state-changed failure, got %+v", res.Failure)
	}
	// An argument problem is the case's fault, never an expected refusal.
	res = Run(c, &stateChanger{})
	if res.Pass || !strings.Contains(res.Failure.Message, "bad step arguments") {
		t.Fatalf("want a bad-arguments failure, got %+v", res.Failure)
	}
}
