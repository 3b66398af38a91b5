package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Target runs steps: the embedded engine is one target; a remote server is another.
type Target interface {
	// Reset starts again from a fresh state under the policy.
	Reset(policy, format string) error
	// Do runs one verb at now (Unix ms, UTC). An error means the step was refused
	// (bad input, nothing changed); otherwise the answer, normalised (see Result).
	Do(now int64, verb string, args map[string]any) (Result, error)
}

// StateDumper is implemented by targets that can dump their whole state
// deterministically; Run uses it to check that a refused step changed nothing.
type StateDumper interface {
	Dump() ([]byte, error)
}

// Result is a step's answer, normalised across targets:
//
//	allowed bool, reason string, cap_id string, hold bool, hold_id string,
//	released bool, removed bool, grant_id string,
//	events []string (every event type the step emitted, in order),
//	event map[string]string (fields of the step's meter event: overage,
//	    grant_value_applied, remaining, price_diff, overage_price, invalid_value,
//	    value, old, limit, diff, overhead, overhead_diff, ...),
//	value, remaining, limit, allowance, held, meter_value: decimal strings (or nil),
//	resets: RFC 3339 string or nil.
type Result map[string]any

// ArgError is a step whose arguments the target could not use (a runner or case
// problem, not the engine refusing bad input). It never satisfies `expect: error`.
type ArgError struct {
	Arg string
	Msg string
}

func (e *ArgError) Error() string {
	if e.Arg == "" {
		return e.Msg
	}
	return e.Arg + ": " + e.Msg
}

func argErr(arg, format string, args ...any) error {
	return &ArgError{Arg: arg, Msg: fmt.Sprintf(format, args...)}
}

// StepFailure says where and why a case failed.
type StepFailure struct {
	File    string
	Line    int
	Step    int // 1-based; 0 = before the first step (the policy)
	Message string
}

func (f *StepFailure) Error() string { return f.Message }

// CaseResult is the outcome of one case.
type CaseResult struct {
	Case    *Case
	Pass    bool
	Failure *StepFailure
	Steps   int // steps run (including the failing one)
}

// DefaultStart is the clock before any step sets it.
var DefaultStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 timestamp (e.g. 2026-03-02T10:00:00Z)", s)
	}
	return t.UTC(), nil
}

// FormatTime renders Unix ms as RFC 3339 UTC (milliseconds only when non-zero).
func FormatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

// Run runs a case's steps in order against t (after resetting it to the case's
// policy) and stops at the first mismatch.
func Run(c *Case, t Target) CaseResult {
	res := CaseResult{Case: c}
	fail := func(line, step int, verb, format string, args ...any) CaseResult {
		where := fmt.Sprintf("%s:%d", c.File, line)
		if step > 0 {
			where += fmt.Sprintf(" step %d", step)
			if verb != "" {
				where += " (" + verb + ")"
			}
		}
		res.Pass = false
		res.Failure = &StepFailure{File: c.File, Line: line, Step: step, Message: where + ": " + fmt.Sprintf(format, args...)}
		return res
	}
	if err := t.Reset(c.Policy, c.Format); err != nil {
		return fail(c.policyLine, 0, "", "policy: %v", err)
	}
	now := DefaultStart.UnixMilli()
	holds := map[string]string{}
	for i := range c.Steps {
		st := &c.Steps[i]
		n := i + 1
		res.Steps = n
		if st.At != "" {
			at, err := parseTime(st.At)
			if err != nil {
				return fail(st.atLineOr(), n, st.Verb, "at: %v", err)
			}
			if at.UnixMilli() < now {
				return fail(st.atLineOr(), n, st.Verb, "at: %s is before the clock (%s); the clock never goes backwards",
					st.At, FormatTime(now))
			}
			now = at.UnixMilli()
		}
		if st.Verb == "" {
			continue
		}
		args := make(map[string]any, len(st.Args))
		for k, v := range st.Args {
			args[k] = v
		}
		delete(args, "as")
		if name, ok := args["hold"].(string); ok {
			if id, bound := holds[name]; bound {
				args["hold"] = id
			}
		}
		wantErr, expectErr := st.Expect["error"]
		dumper, canDump := t.(StateDumper)
		var before []byte
		if expectErr && canDump {
			b, err := dumper.Dump()
			if err != nil {
				return fail(st.callLine(), n, st.Verb, "dumping state: %v", err)
			}
			before = b
		}
		r, err := t.Do(now, st.Verb, args)
		var ae *ArgError
		if errors.As(err, &ae) {
			return fail(st.callLine(), n, st.Verb, "bad step arguments: %v", err)
		}
		if expectErr {
			line := st.lineOf("error")
			want := fmt.Sprint(wantErr)
			if err == nil {
				return fail(line, n, st.Verb, "error: want a refusal containing %q, got no error (%s)", want, r.brief())
			}
			if !strings.Contains(err.Error(), want) {
				return fail(line, n, st.Verb, "error: want a refusal containing %q, got %q", want, err.Error())
			}
			if canDump {
				after, derr := dumper.Dump()
				if derr != nil {
					return fail(st.callLine(), n, st.Verb, "dumping state: %v", derr)
				}
				if !bytes.Equal(before, after) {
					return fail(line, n, st.Verb, "error: refused as expected (%q) but the state changed:\n%s",
						err.Error(), firstDiff(before, after))
				}
			}
			continue
		}
		if err != nil {
			return fail(st.callLine(), n, st.Verb, "refused: %v", err)
		}
		if name, ok := st.Args["as"].(string); ok && name != "" {
			if id, _ := r["hold_id"].(string); id != "" {
				holds[name] = id
			}
		}
		for _, key := range st.keys() {
			if msg, ok := compareKey(key, st.Expect[key], r); !ok {
				return fail(st.lineOf(key), n, st.Verb, "%s: %s", key, msg)
			}
		}
	}
	res.Pass = true
	return res
}

// RunAll runs every case against a fresh use of t.
func RunAll(cases []*Case, t Target) []CaseResult {
	out := make([]CaseResult, 0, len(cases))
	for _, c := range cases {
		out = append(out, Run(c, t))
	}
	return out
}

func (st *Step) keys() []string {
	if len(st.expectOrder) == len(st.Expect) {
		return st.expectOrder
	}
	keys := make([]string, 0, len(st.Expect))
	for k := range st.Expect {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (st *Step) lineOf(key string) int {
	if l := st.expectLines[key]; l > 0 {
		return l
	}
	return st.callLine()
}

func (st *Step) callLine() int {
	if st.verbLine > 0 {
		return st.verbLine
	}
	return st.Line
}

func (st *Step) atLineOr() int {
	if st.atLine > 0 {
		return st.atLine
	}
	return st.Line
}

func (r Result) brief() string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		if k == "event" {
			continue
		}
		parts = append(parts, k+"="+show(r[k]))
	}
	return strings.Join(parts, " ")
}

// firstDiff shows where two state dumps first differ.
func firstDiff(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(0, i-80)
	clip := func(s []byte) string {
		end := min(len(s), i+80)
		if from > end {
			return ""
		}
		return string(s[from:end])
	}
	return fmt.Sprintf("  before: …%s…\n  after:  …%s…", clip(a), clip(b))
}

var (
	boolKeys    = map[string]bool{"allowed": true, "released": true, "removed": true, "hold": true}
	decimalKeys = map[string]bool{"value": true, "remaining": true, "limit": true, "allowance": true, "held": true,
		"meter_value": true, "overhead": true, "revenue": true, "cost": true, "margin": true, "rate": true}
)

// compareKey checks one expectation against a result; msg says "want X, got Y".
func compareKey(key string, want any, r Result) (string, bool) {
	got, present := r[key]
	if !present {
		got = nil
	}
	switch {
	case key == "events":
		return compareEvents(want, got)
	case key == "event":
		return compareEventFields(want, got)
	case key == "resets" || key == "projected_exhaustion":
		return compareTime(want, got)
	case decimalKeys[key]:
		return compareDecimal(want, got)
	case boolKeys[key]:
		wb, wok := want.(bool)
		gb, gok := got.(bool)
		if wok && gok && wb == gb {
			return "", true
		}
		return fmt.Sprintf("want %s, got %s", show(want), show(got)), false
	default:
		if got != nil && fmt.Sprint(want) == fmt.Sprint(got) {
			return "", true
		}
		return fmt.Sprintf("want %s, got %s", show(want), show(got)), false
	}
}

func show(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if x == "" {
			return `""`
		}
		return x
	case []string:
		return "[" + strings.Join(x, ", ") + "]"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = show(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case decimal.Decimal:
		return x.String()
	case *decimal.Decimal:
		if x == nil {
			return "null"
		}
		return x.String()
	}
	return fmt.Sprint(v)
}

func toDecimal(v any) (decimal.Decimal, bool) {
	switch x := v.(type) {
	case string:
		d, err := decimal.NewFromString(x)
		return d, err == nil
	case json.Number:
		d, err := decimal.NewFromString(string(x))
		return d, err == nil
	case decimal.Decimal:
		return x, true
	case *decimal.Decimal:
		if x == nil {
			return decimal.Decimal{}, false
		}
		return *x, true
	case int:
		return decimal.NewFromInt(int64(x)), true
	case int64:
		return decimal.NewFromInt(x), true
	}
	return decimal.Decimal{}, false
}

func compareDecimal(want, got any) (string, bool) {
	if want == nil || got == nil {
		if want == nil && isNil(got) {
			return "", true
		}
		return fmt.Sprintf("want %s, got %s", show(want), show(got)), false
	}
	wd, wok := toDecimal(want)
	gd, gok := toDecimal(got)
	if !wok {
		return fmt.Sprintf("want %s: not a decimal", show(want)), false
	}
	if !gok || !wd.Equal(gd) {
		return fmt.Sprintf("want %s, got %s", show(want), show(got)), false
	}
	return "", true
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	if d, ok := v.(*decimal.Decimal); ok && d == nil {
		return true
	}
	return false
}

func compareTime(want, got any) (string, bool) {
	if want == nil || got == nil {
		if want == nil && got == nil {
			return "", true
		}
		return fmt.Sprintf("want %s, got %s", show(want), show(got)), false
	}
	wt, werr := parseTime(fmt.Sprint(want))
	gt, gerr := parseTime(fmt.Sprint(got))
	if werr != nil {
		return fmt.Sprintf("want %s: %v", show(want), werr), false
	}
	if gerr != nil || !wt.Equal(gt) {
		return fmt.Sprintf("want %s, got %s", show(want), show(got)), false
	}
	return "", true
}

func stringList(v any) ([]string, bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case []string:
		return x, true
	case []any:
		out := make([]string, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out[i] = s
		}
		return out, true
	}
	return nil, false
}

// multisetDiff compares two lists as multisets: what want has that got lacks
// (missing) and what got has beyond want (extra), each sorted.
func multisetDiff(want, got []string) (missing, extra []string) {
	count := map[string]int{}
	for _, w := range want {
		count[w]++
	}
	for _, g := range got {
		count[g]--
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for n := count[k]; n > 0; n-- {
			missing = append(missing, k)
		}
		for n := count[k]; n < 0; n++ {
			extra = append(extra, k)
		}
	}
	return missing, extra
}

func compareEvents(want, got any) (string, bool) {
	w, ok := stringList(want)
	if !ok {
		return "want a list of event names", false
	}
	g, ok := stringList(got)
	if !ok {
		return fmt.Sprintf("target returned events as %T", got), false
	}
	missing, extra := multisetDiff(w, g)
	if len(missing) == 0 && len(extra) == 0 {
		return "", true
	}
	var why []string
	if len(missing) > 0 {
		why = append(why, "missing "+strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		why = append(why, "extra "+strings.Join(extra, ", "))
	}
	return fmt.Sprintf("want %s, got %s (%s)", show(w), show(g), strings.Join(why, "; ")), false
}

func compareEventFields(want, got any) (string, bool) {
	wm, ok := want.(map[string]any)
	if !ok {
		return "want a mapping of event fields", false
	}
	fields := map[string]any{}
	switch x := got.(type) {
	case nil:
	case map[string]string:
		for k, v := range x {
			fields[k] = v
		}
	case map[string]any:
		fields = x
	default:
		return fmt.Sprintf("target returned event as %T", got), false
	}
	keys := make([]string, 0, len(wm))
	for k := range wm {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		wv := wm[k]
		gv, present := fields[k]
		if got == nil {
			return fmt.Sprintf("%s: want %s, got no meter event", k, show(wv)), false
		}
		if wv == nil {
			if present && gv != nil {
				return fmt.Sprintf("%s: want none, got %s", k, show(gv)), false
			}
			continue
		}
		if !present || gv == nil {
			return fmt.Sprintf("%s: want %s, got none", k, show(wv)), false
		}
		wd, wok := toDecimal(wv)
		gd, gok := toDecimal(gv)
		if wok && gok {
			if !wd.Equal(gd) {
				return fmt.Sprintf("%s: want %s, got %s", k, show(wv), show(gv)), false
			}
			continue
		}
		if fmt.Sprint(wv) != fmt.Sprint(gv) {
			return fmt.Sprintf("%s: want %s, got %s", k, show(wv), show(gv)), false
		}
	}
	return "", true
}
