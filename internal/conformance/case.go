// Package conformance runs policy test cases: a policy plus steps (engine calls with
// expectations), written in YAML. The same format is used for the project's own
// conformance suite and for users testing their own policies.
//
// A case is run against a Target: the in-process engine (NewEngineTarget) or, later,
// a remote server. Run stops at the first mismatch and names the file, line, step
// and verb, and what was expected and what came back.
package conformance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"
)

// Case is one policy test: a policy and steps run in order against a fresh target.
type Case struct {
	Name   string
	About  string
	Policy string
	Format string // json | yaml | toml | stof | "" (detect)
	File   string // the file the case was loaded from
	Steps  []Step

	policyLine int
}

// Step is one call with its expectations. Args and Expect hold YAML values decoded
// without loss: strings, bools, nil, json.Number (the number's text exactly as
// written, so 0.0003 stays exact), []any and map[string]any.
type Step struct {
	Line   int    // line of the step in its file
	At     string // RFC 3339; sets the clock from this step on ("" = unchanged)
	Verb   string // "" when the step only sets the clock
	Args   map[string]any
	Expect map[string]any

	verbLine    int            // line of the verb
	atLine      int            // line of at
	expectOrder []string       // expectation keys in document order
	expectLines map[string]int // line of each expectation
}

// verbSpec lists a verb's argument names; required ones are marked with a leading '*'.
type verbSpec []string

var (
	allowArgs = verbSpec{"*customer", "*entitlement", "value", "unit", "event", "overhead", "caps", "force"}
	stepArgs  = verbSpec{"*customer", "*entitlement", "event", "overhead", "caps", "force"}
	readArgs  = verbSpec{"*customer", "*entitlement"}
	capIDArgs = verbSpec{"*customer", "*cap_id"}
)

// verbs is every step verb and its arguments (the Limitr call's own names).
var verbs = map[string]verbSpec{
	"create_customer":   {"*id", "plan", "type", "label", "refs", "alts", "metadata"},
	"delete_customer":   {"*id"},
	"set_alt_id":        {"*id", "*alt"},
	"delete_alt_id":     {"*alt"},
	"set_refs":          {"*id", "refs"},
	"estimate":          {"*customer", "*entitlement", "segment", "basis", "quantile"},
	"margin":            {"*customer"},
	"rate":              readArgs,
	"set_customer_plan": {"*id", "*plan", "overwrite_meters"},

	"allow":     allowArgs,
	"check":     allowArgs,
	"increment": stepArgs,
	"decrement": stepArgs,

	"reserve": {"*customer", "*entitlement", "value", "unit", "event", "overhead", "caps", "ttl", "as", "segment", "basis", "quantile"},
	"settle":  {"*customer", "*entitlement", "*hold", "*value", "unit", "event", "overhead", "caps", "segment", "basis"},
	"release": {"*customer", "*entitlement", "*hold"},
	"held":    readArgs,

	"add_cap": {"*customer", "*value", "cap_id", "credit", "exchangeable", "overage_only", "ignore_grants",
		"observe_only", "overhead_cost", "follow_decrements", "hard_trailing", "scope", "resets", "reset_inc",
		"reset_sch", "expires_on", "shared", "shared_with"},
	"cap":        capIDArgs,
	"reset_cap":  capIDArgs,
	"remove_cap": capIDArgs,

	"apply_topup":      {"*customer", "*topup"},
	"grant":            {"*customer", "*credit", "*value", "expires_on", "id"},
	"credit_remaining": {"*customer", "*credit"},
	"create_override": {"*customer", "*entitlement", "credit", "mode", "value", "increment", "resets",
		"reset_inc", "reset_sch", "expires", "expires_on"},
	"remove_override": {"*customer", "*entitlement"},

	"value":     readArgs,
	"remaining": readArgs,
	"limit":     readArgs,
	"allowance": readArgs,
	"resets":    readArgs,
}

// Verbs returns every step verb, sorted.
func Verbs() []string {
	out := make([]string, 0, len(verbs))
	for v := range verbs {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// expectKeys is every expectation a step may make.
var expectKeys = map[string]bool{
	"allowed": true, "reason": true, "cap_id": true, "events": true, "event": true,
	"value": true, "remaining": true, "limit": true, "allowance": true, "held": true, "meter_value": true,
	"resets": true, "released": true, "removed": true, "hold": true, "hold_id": true, "grant_id": true,
	"error": true, "samples": true, "source": true, "overhead": true, "revenue": true, "cost": true,
	"margin": true, "rate": true, "projected_exhaustion": true, "customer": true,
}

var topKeys = map[string]bool{"name": true, "about": true, "policy": true, "format": true, "steps": true}

// LoadError is a problem in a case file, at a line.
type LoadError struct {
	File string
	Line int
	Msg  string
}

func (e *LoadError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// LoadFile reads one case file.
func LoadFile(path string) (*Case, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// LoadPath loads a case file, or every *.yaml / *.yml file in a directory (sorted by
// name, not recursive).
func LoadPath(path string) ([]*Case, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		c, err := LoadFile(path)
		if err != nil {
			return nil, err
		}
		return []*Case{c}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") {
			continue
		}
		if strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var cases []*Case
	var errs []error
	for _, n := range names {
		c, err := LoadFile(filepath.Join(path, n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cases = append(cases, c)
	}
	if len(errs) > 0 {
		return cases, errors.Join(errs...)
	}
	if len(cases) == 0 {
		return nil, fmt.Errorf("%s: no *.yaml or *.yml case files", path)
	}
	return cases, nil
}

// Parse reads a case from YAML text; file names it in messages.
func Parse(file string, data []byte) (*Case, error) {
	p := &loader{file: file}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, p.yamlErr(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, p.errf(extra.Line, "more than one YAML document (one case per file)")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	root = deref(root)
	if root.Kind != yaml.MappingNode {
		return nil, p.errf(root.Line, "a case must be a mapping with name, policy and steps")
	}
	c := &Case{File: file}
	seen := map[string]bool{}
	var stepsNode *yaml.Node
	stepsLine := 0
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], deref(root.Content[i+1])
		if seen[k.Value] {
			return nil, p.errf(k.Line, "duplicate key %q", k.Value)
		}
		seen[k.Value] = true
		if !topKeys[k.Value] {
			return nil, p.errf(k.Line, "unknown key %q (want name, about, policy, format, steps)", k.Value)
		}
		if k.Value == "steps" {
			stepsNode, stepsLine = v, k.Line
			continue
		}
		if v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" {
			return nil, p.errf(v.Line, "%s must be a string", k.Value)
		}
		switch k.Value {
		case "name":
			c.Name = v.Value
		case "about":
			c.About = v.Value
		case "policy":
			c.Policy, c.policyLine = v.Value, v.Line
		case "format":
			switch v.Value {
			case "json", "yaml", "toml", "stof":
			default:
				return nil, p.errf(v.Line, "unknown format %q (want json, yaml, toml or stof)", v.Value)
			}
			c.Format = v.Value
		}
	}
	if c.Name == "" {
		c.Name = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(file), ".yaml"), ".yml")
	}
	if strings.TrimSpace(c.Policy) == "" {
		return nil, p.errf(root.Line, "missing policy")
	}
	if stepsNode == nil {
		return nil, p.errf(root.Line, "missing steps")
	}
	if stepsNode.Kind != yaml.SequenceNode {
		return nil, p.errf(stepsLine, "steps must be a list")
	}
	for _, sn := range stepsNode.Content {
		st, err := p.step(deref(sn))
		if err != nil {
			return nil, err
		}
		c.Steps = append(c.Steps, st)
	}
	if len(c.Steps) == 0 {
		return nil, p.errf(stepsLine, "no steps")
	}
	return c, nil
}

type loader struct{ file string }

func (p *loader) errf(line int, format string, args ...any) error {
	return &LoadError{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

func (p *loader) yamlErr(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	// yaml.v3 reports "line N: msg"; lift the line into file:line.
	if strings.HasPrefix(msg, "line ") {
		rest := msg[len("line "):]
		if i := strings.Index(rest, ":"); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				return p.errf(n, "%s", strings.TrimSpace(rest[i+1:]))
			}
		}
	}
	return p.errf(0, "%s", msg)
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func (p *loader) step(n *yaml.Node) (Step, error) {
	st := Step{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		return st, p.errf(n.Line, "a step must be a mapping (a verb with its arguments, optionally at and expect)")
	}
	seen := map[string]bool{}
	var expectNode *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if seen[k.Value] {
			return st, p.errf(k.Line, "duplicate key %q", k.Value)
		}
		seen[k.Value] = true
		switch k.Value {
		case "at":
			if v.Kind != yaml.ScalarNode || v.Value == "" {
				return st, p.errf(v.Line, "at must be an RFC 3339 timestamp")
			}
			if _, err := parseTime(v.Value); err != nil {
				return st, p.errf(v.Line, "at: %v", err)
			}
			st.At, st.atLine = v.Value, k.Line
		case "expect":
			expectNode = v
		default:
			spec, ok := verbs[k.Value]
			if !ok {
				return st, p.errf(k.Line, "unknown verb %q (known: %s)", k.Value, strings.Join(Verbs(), ", "))
			}
			if st.Verb != "" {
				return st, p.errf(k.Line, "a step has one verb; this one has %q and %q", st.Verb, k.Value)
			}
			st.Verb, st.verbLine = k.Value, k.Line
			args, err := p.args(k.Value, spec, v)
			if err != nil {
				return st, err
			}
			st.Args = args
		}
	}
	if st.Verb == "" && st.At == "" {
		return st, p.errf(n.Line, "a step needs a verb (or at least `at`)")
	}
	if expectNode != nil {
		if st.Verb == "" {
			return st, p.errf(expectNode.Line, "expect without a verb")
		}
		if err := p.expect(&st, expectNode); err != nil {
			return st, err
		}
	}
	return st, nil
}

func (p *loader) args(verb string, spec verbSpec, v *yaml.Node) (map[string]any, error) {
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
		v = &yaml.Node{Kind: yaml.MappingNode, Line: v.Line}
	}
	if v.Kind != yaml.MappingNode {
		return nil, p.errf(v.Line, "%s: arguments must be a mapping", verb)
	}
	known := map[string]bool{}
	for _, a := range spec {
		known[strings.TrimPrefix(a, "*")] = true
	}
	val, err := p.value(v)
	if err != nil {
		return nil, err
	}
	args := val.(map[string]any)
	for i := 0; i+1 < len(v.Content); i += 2 {
		k := v.Content[i]
		if !known[k.Value] {
			var names []string
			for _, a := range spec {
				names = append(names, strings.TrimPrefix(a, "*"))
			}
			return nil, p.errf(k.Line, "%s: unknown argument %q (want %s)", verb, k.Value, strings.Join(names, ", "))
		}
	}
	for _, a := range spec {
		if name, req := strings.CutPrefix(a, "*"); req {
			if _, ok := args[name]; !ok {
				return nil, p.errf(v.Line, "%s: missing argument %q", verb, name)
			}
		}
	}
	if name, ok := args["as"]; ok {
		if s, isStr := name.(string); !isStr || s == "" {
			return nil, p.errf(v.Line, "%s: as must be a name", verb)
		}
	}
	return args, nil
}

func (p *loader) expect(st *Step, v *yaml.Node) error {
	if v.Kind != yaml.MappingNode {
		return p.errf(v.Line, "expect must be a mapping")
	}
	val, err := p.value(v)
	if err != nil {
		return err
	}
	st.Expect = val.(map[string]any)
	st.expectLines = map[string]int{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, kv := v.Content[i], deref(v.Content[i+1])
		if !expectKeys[k.Value] {
			var names []string
			for n := range expectKeys {
				names = append(names, n)
			}
			sort.Strings(names)
			return p.errf(k.Line, "unknown expectation %q (want %s)", k.Value, strings.Join(names, ", "))
		}
		st.expectOrder = append(st.expectOrder, k.Value)
		st.expectLines[k.Value] = k.Line
		if err := p.checkExpect(k.Value, kv); err != nil {
			return err
		}
	}
	if _, ok := st.Expect["error"]; ok && len(st.Expect) > 1 {
		return p.errf(v.Line, "expect: error cannot be combined with other expectations (a refused step answers nothing)")
	}
	return nil
}

// checkExpect validates an expectation's shape, so a typo fails at load time.
func (p *loader) checkExpect(key string, v *yaml.Node) error {
	tag := v.ShortTag()
	switch key {
	case "allowed", "released", "removed", "hold":
		if tag != "!!bool" {
			return p.errf(v.Line, "expect %s: want true or false", key)
		}
	case "reason", "cap_id", "hold_id", "grant_id", "error":
		if v.Kind != yaml.ScalarNode || tag == "!!null" {
			return p.errf(v.Line, "expect %s: want a string", key)
		}
	case "value", "remaining", "limit", "allowance", "held", "meter_value":
		if v.Kind != yaml.ScalarNode {
			return p.errf(v.Line, "expect %s: want a decimal (as a string) or null", key)
		}
		if tag != "!!null" {
			if _, err := decimal.NewFromString(v.Value); err != nil {
				return p.errf(v.Line, "expect %s: %q is not a decimal", key, v.Value)
			}
		}
	case "resets":
		if v.Kind != yaml.ScalarNode {
			return p.errf(v.Line, "expect resets: want an RFC 3339 timestamp or null")
		}
		if tag != "!!null" {
			if _, err := parseTime(v.Value); err != nil {
				return p.errf(v.Line, "expect resets: %v", err)
			}
		}
	case "events":
		if v.Kind != yaml.SequenceNode {
			return p.errf(v.Line, "expect events: want a list of event names")
		}
		for _, e := range v.Content {
			if e = deref(e); e.Kind != yaml.ScalarNode || e.ShortTag() == "!!null" {
				return p.errf(e.Line, "expect events: want event names")
			}
		}
	case "event":
		if v.Kind != yaml.MappingNode {
			return p.errf(v.Line, "expect event: want a mapping of field: value")
		}
		for i := 1; i < len(v.Content); i += 2 {
			if e := deref(v.Content[i]); e.Kind != yaml.ScalarNode {
				return p.errf(e.Line, "expect event: field values must be scalars")
			}
		}
	}
	return nil
}

// value decodes a node without loss: numbers keep their text (json.Number).
func (p *loader) value(n *yaml.Node) (any, error) {
	n = deref(n)
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, p.errf(n.Line, "%v", err)
			}
			return b, nil
		case "!!int", "!!float":
			if isJSONNumber(n.Value) {
				return json.Number(n.Value), nil
			}
			if d, err := decimal.NewFromString(strings.ReplaceAll(n.Value, "_", "")); err == nil {
				return json.Number(d.String()), nil
			}
			if n.ShortTag() == "!!int" {
				var i int64
				if err := n.Decode(&i); err == nil {
					return json.Number(strconv.FormatInt(i, 10)), nil
				}
			}
			return nil, p.errf(n.Line, "%q is not a finite decimal number", n.Value)
		default:
			return n.Value, nil
		}
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, e := range n.Content {
			v, err := p.value(e)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := deref(n.Content[i])
			if k.Kind != yaml.ScalarNode {
				return nil, p.errf(k.Line, "keys must be strings")
			}
			if k.Value == "<<" {
				return nil, p.errf(k.Line, "merge keys (<<) are not supported")
			}
			if _, dup := out[k.Value]; dup {
				return nil, p.errf(k.Line, "duplicate key %q", k.Value)
			}
			v, err := p.value(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		return out, nil
	}
	return nil, p.errf(n.Line, "unsupported YAML node")
}

func isJSONNumber(s string) bool {
	if s == "" || s[0] == '+' || s[0] == '.' {
		return false
	}
	return (s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) && json.Valid([]byte(s))
}
