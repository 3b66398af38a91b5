package engine

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

// seedStof is the seed policy, verbatim.
const seedStof = `policy: {
credits: {
claude_sonnet_4: {
description: 'Claude Sonnet 4 token'
overhead_cost: 1.5e-7
price: { amount: 0.0003 }
}
}
plans: {
starter: {
label: 'Starter Plan'
entitlements: {
ai_chat: {
description: 'AI chat feature'
limit: {
credit: 'claude_sonnet_4'
mode: 'soft' // allow overage & send overage events
value: 16667 // ~$50 included at $0.0003/token
resets: true
reset_sch: 'monthly:1'
}
}
}
}
}
}
`

const seedJSON = `{
  "policy": {
    "credits": {
      "claude_sonnet_4": {
        "description": "Claude Sonnet 4 token",
        "overhead_cost": 1.5e-7,
        "price": { "amount": 0.0003 }
      }
    },
    "plans": {
      "starter": {
        "label": "Starter Plan",
        "entitlements": {
          "ai_chat": {
            "description": "AI chat feature",
            "limit": {
              "credit": "claude_sonnet_4",
              "mode": "soft",
              "value": 16667,
              "resets": true,
              "reset_sch": "monthly:1"
            }
          }
        }
      }
    }
  }
}
`

const seedYAML = `# The seed policy as YAML.
policy:
  credits:
    claude_sonnet_4:
      description: 'Claude Sonnet 4 token'
      overhead_cost: 1.5e-7
      price: { amount: 0.0003 }
  plans:
    starter:
      label: Starter Plan
      entitlements:
        ai_chat:
          description: AI chat feature
          limit:
            credit: claude_sonnet_4
            mode: soft # allow overage & send overage events
            value: 16667
            resets: true
            reset_sch: 'monthly:1'
`

const seedTOML = `# The seed policy as TOML.
[policy.credits.claude_sonnet_4]
description = 'Claude Sonnet 4 token'
overhead_cost = 1.5e-7
price = { amount = 0.0003 }

[policy.plans.starter]
label = 'Starter Plan'

[policy.plans.starter.entitlements.ai_chat]
description = 'AI chat feature'

[policy.plans.starter.entitlements.ai_chat.limit]
credit = 'claude_sonnet_4'
mode = 'soft' # allow overage & send overage events
value = 16667
resets = true
reset_sch = 'monthly:1'
`

// obj builds an *Object from alternating keys and values, in order.
func obj(kv ...any) *Object {
	o := NewObject()
	for i := 0; i < len(kv); i += 2 {
		o.Set(kv[i].(string), kv[i+1])
	}
	return o
}

// num builds a unit-less Number from its exact text.
func num(s string) Number { return Number{Value: decimal.RequireFromString(s)} }

// qty builds a Number with a canonical unit.
func qty(s, unit string) Number { return Number{Value: decimal.RequireFromString(s), Unit: unit} }

func seedTree() *Object {
	return obj("policy", obj(
		"credits", obj(
			"claude_sonnet_4", obj(
				"description", "Claude Sonnet 4 token",
				"overhead_cost", num("0.00000015"),
				"price", obj("amount", num("0.0003")),
			),
		),
		"plans", obj(
			"starter", obj(
				"label", "Starter Plan",
				"entitlements", obj(
					"ai_chat", obj(
						"description", "AI chat feature",
						"limit", obj(
							"credit", "claude_sonnet_4",
							"mode", "soft",
							"value", num("16667"),
							"resets", true,
							"reset_sch", "monthly:1",
						),
					),
				),
			),
		),
	))
}

// diffTree returns a description of the first difference between got and
// want, or "" when they are equal. Numbers compare by exact decimal value and
// unit; with ordered, object keys must also be in the same order.
func diffTree(path string, got, want any, ordered bool) string {
	switch w := want.(type) {
	case *Object:
		g, ok := got.(*Object)
		if !ok {
			return fmt.Sprintf("%s: got %T, want *Object", path, got)
		}
		if len(g.Keys) != len(g.Fields) {
			return fmt.Sprintf("%s: Keys %v out of sync with Fields (%d)", path, g.Keys, len(g.Fields))
		}
		gk, wk := slices.Clone(g.Keys), slices.Clone(w.Keys)
		if !ordered {
			sort.Strings(gk)
			sort.Strings(wk)
		}
		if !slices.Equal(gk, wk) {
			return fmt.Sprintf("%s: keys %q, want %q", path, gk, wk)
		}
		for _, k := range w.Keys {
			if d := diffTree(path+"."+k, g.Fields[k], w.Fields[k], ordered); d != "" {
				return d
			}
		}
		return ""
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Sprintf("%s: got %T, want []any", path, got)
		}
		if len(g) != len(w) {
			return fmt.Sprintf("%s: %d elements, want %d", path, len(g), len(w))
		}
		for i := range w {
			if d := diffTree(fmt.Sprintf("%s[%d]", path, i), g[i], w[i], ordered); d != "" {
				return d
			}
		}
		return ""
	case Number:
		g, ok := got.(Number)
		if !ok {
			return fmt.Sprintf("%s: got %T (%v), want Number %s", path, got, got, w)
		}
		if !g.Value.Equal(w.Value) || g.Unit != w.Unit {
			return fmt.Sprintf("%s: got %s, want %s", path, g, w)
		}
		return ""
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("%s: got %#v, want %#v", path, got, want)
	}
	return ""
}

// lookup follows a dotted path through nested objects.
func lookup(t *testing.T, root *Object, path string) any {
	t.Helper()
	var cur any = root
	for _, k := range strings.Split(path, ".") {
		o, ok := cur.(*Object)
		if !ok {
			t.Fatalf("%s: %q is not inside an object (%T)", path, k, cur)
		}
		if cur, ok = o.Get(k); !ok {
			t.Fatalf("%s: no key %q (have %q)", path, k, o.Keys)
		}
	}
	return cur
}

func mustParse(t *testing.T, text, format string) *Object {
	t.Helper()
	root, err := ParseDocument(text, format)
	if err != nil {
		t.Fatalf("ParseDocument(%s): %v", format, err)
	}
	return root
}

func TestParseSeedPolicyStof(t *testing.T) {
	root := mustParse(t, seedStof, "stof")
	if d := diffTree("root", root, seedTree(), true); d != "" {
		t.Fatal(d)
	}

	// Spot checks against the exact text, not just decimal equality.
	oc := lookup(t, root, "policy.credits.claude_sonnet_4.overhead_cost").(Number)
	if !oc.Value.Equal(decimal.New(15, -8)) || oc.Value.String() != "0.00000015" || oc.Unit != "" {
		t.Errorf("overhead_cost = %s (exp %d)", oc, oc.Value.Exponent())
	}
	v := lookup(t, root, "policy.plans.starter.entitlements.ai_chat.limit.value").(Number)
	if v.Value.String() != "16667" || !v.Value.IsInteger() {
		t.Errorf("limit.value = %s", v)
	}
	if s := lookup(t, root, "policy.plans.starter.entitlements.ai_chat.limit.reset_sch"); s != "monthly:1" {
		t.Errorf("reset_sch = %#v", s)
	}
	amount := lookup(t, root, "policy.credits.claude_sonnet_4.price.amount").(Number)
	if amount.Value.String() != "0.0003" {
		t.Errorf("price.amount = %s", amount)
	}
	limit := lookup(t, root, "policy.plans.starter.entitlements.ai_chat.limit").(*Object)
	if want := []string{"credit", "mode", "value", "resets", "reset_sch"}; !slices.Equal(limit.Keys, want) {
		t.Errorf("limit keys = %q, want %q", limit.Keys, want)
	}
}

func TestParseSeedPolicyAllFormats(t *testing.T) {
	want := mustParse(t, seedStof, "stof")
	for _, tc := range []struct{ format, text string }{
		{"json", seedJSON},
		{"yaml", seedYAML},
		{"toml", seedTOML},
		{"stof", seedStof},
	} {
		t.Run(tc.format, func(t *testing.T) {
			if got := DetectFormat(tc.text); got != tc.format {
				t.Errorf("DetectFormat = %q, want %q", got, tc.format)
			}
			for _, format := range []string{tc.format, ""} {
				root := mustParse(t, tc.text, format)
				// Every format keeps document order, TOML included (MetaData.Keys).
				if d := diffTree("root", root, want, true); d != "" {
					t.Errorf("format %q: %s", format, d)
				}
			}
		})
	}
}

// limitrStyle exercises the non-data parts of real Limitr policies.
const limitrStyle = `// A Limitr-style policy with everything Capstan must tolerate.
#[type]
/**
 * Shared credit type.
 */
Credit: {
    str! unit: 'credit';
    ver! version: 0.1.0;
}

/// The policy itself.
#[limitr]
Limitr policy: {
    obj credits: {
        "ai-token": {
            label: "AI token"
            str unit: 'token'
            float overhead_cost: 0.000003 // fallback rate
            price: { amount: 2e-5 }
            rates: { sonnet: { input: 0.000003, output: 0.000015 }, haiku: { input: 1e-6, output: 5e-6 } }

            // per-call provider cost; context is the event data
            #[cost('provider')]
            fn overhead(units: float, context?: obj) -> float {
                const rate = self.rates.get(context?.model ?? '');
                if (rate == null) return units * self.overhead_cost; // a '}' in a comment
                const s = "}"; /* { */
                (context.input * rate.input) + (context.output * rate.output)
            }
        }
        storage: { label: 'Storage', stof_units: 'MB', price: { amount: 0.0001 } }
    }

    plans: {
        pro: {
            label: 'Pro'; default: true;
            entitlements: {
                chat: { limit: { credit: 'ai-token', mode: 'soft', value: 1_000_000, resets: true, reset_inc: 1day } }
                storage: { limit: { credit: 'storage', value: 100GB } }
                claude-sonnet: {}
            }
            tags: ['a', "b\tc", r#"say "hi""#,]
            bool | int flag: true
            (str, ver) pair: [ 'x' 1.0.0 { n: -2.5s } as Pair ]
        }
    }

    #[test]
    async fn check() { assert(self.valid()); }

    hold_ttl: 10min
}
`

func TestParseLimitrStylePolicy(t *testing.T) {
	root := mustParse(t, limitrStyle, "")
	overhead := Func{
		Name:       "overhead",
		Params:     "units: float, context?: obj",
		ReturnType: "float",
		Body: `const rate = self.rates.get(context?.model ?? '');
                if (rate == null) return units * self.overhead_cost; // a '}' in a comment
                const s = "}"; /* { */
                (context.input * rate.input) + (context.output * rate.output)`,
	}
	want := obj(
		"Credit", obj("unit", "credit", "version", "0.1.0"),
		"policy", obj(
			"credits", obj(
				"ai-token", obj(
					"label", "AI token",
					"unit", "token",
					"overhead_cost", num("0.000003"),
					"price", obj("amount", num("0.00002")),
					"rates", obj(
						"sonnet", obj("input", num("0.000003"), "output", num("0.000015")),
						"haiku", obj("input", num("0.000001"), "output", num("0.000005")),
					),
					"overhead", overhead,
				),
				"storage", obj("label", "Storage", "stof_units", "MB", "price", obj("amount", num("0.0001"))),
			),
			"plans", obj(
				"pro", obj(
					"label", "Pro",
					"default", true,
					"entitlements", obj(
						"chat", obj("limit", obj(
							"credit", "ai-token",
							"mode", "soft",
							"value", num("1000000"),
							"resets", true,
							"reset_inc", qty("1", "day"),
						)),
						"storage", obj("limit", obj("credit", "storage", "value", qty("100", "GB"))),
						"claude-sonnet", obj(),
					),
					"tags", []any{"a", "b\tc", `say "hi"`},
					"flag", true,
					"pair", []any{"x", "1.0.0", obj("n", qty("-2.5", "s"))},
				),
			),
			"check", Func{Name: "check", Body: "assert(self.valid());"},
			"hold_ttl", qty("10", "min"),
		),
	)
	if d := diffTree("root", root, want, true); d != "" {
		t.Fatal(d)
	}
	ms, err := DurationMillis(lookup(t, root, "policy.plans.pro.entitlements.chat.limit.reset_inc"))
	if err != nil || ms != 86_400_000 {
		t.Errorf("reset_inc = %d ms, %v", ms, err)
	}
	mb, err := ConvertUnits(lookup(t, root, "policy.plans.pro.entitlements.storage.limit.value").(Number), "MB")
	if err != nil || mb.String() != "100000" {
		t.Errorf("storage in MB = %s, %v", mb, err)
	}
}

func TestParseStofValues(t *testing.T) {
	for _, tc := range []struct {
		src  string // value of field x
		want any
	}{
		{`16667`, num("16667")},
		{`-5`, num("-5")},
		{`+5`, num("5")},
		{`0`, num("0")},
		{`1_000_000`, num("1000000")},
		{`0.0003`, num("0.0003")},
		{`1.5e-7`, num("0.00000015")},
		{`1.5E+3`, num("1500")},
		{`2e100`, Number{Value: decimal.New(2, 100)}},
		{`1day`, qty("1", "day")},
		{`30days`, qty("30", "day")},
		{`10min`, qty("10", "min")},
		{`2hr`, qty("2", "hr")},
		{`2.5s`, qty("2.5", "s")},
		{`500ms`, qty("500", "ms")},
		{`1w`, qty("1", "week")},
		{`1GB`, qty("1", "GB")},
		{`100GB`, qty("100", "GB")},
		{`1.5GiB`, qty("1.5", "GiB")},
		{`-1day`, qty("-1", "day")},
		{`0.1.0`, "0.1.0"},
		{`'single'`, "single"},
		{`"double"`, "double"},
		{`'it\'s'`, "it's"},
		{`"a\nb\t\\\"\u00e9\u{1F600}\uD83D\uDE00"`, "a\nb\t\\\"é😀😀"},
		{`"multi
line"`, "multi\nline"},
		{"`plain`", "plain"},
		{`r"raw \n"`, `raw \n`},
		{`r##"has "# inside"##`, `has "# inside`},
		{`true`, true},
		{`false`, false},
		{`null`, nil},
		{`[]`, []any{}},
		{`[1 2 3]`, []any{num("1"), num("2"), num("3")}},
		{`[1, 2, 3,]`, []any{num("1"), num("2"), num("3")}},
		{`[[1], ['a'], {}]`, []any{[]any{num("1")}, []any{"a"}, obj()}},
		{`{ a: 1, b: 2; c: 3 }`, obj("a", num("1"), "b", num("2"), "c", num("3"))},
		{`{ 'quoted key': 1 "x y": 2 }`, obj("quoted key", num("1"), "x y", num("2"))},
		{`{} as Foo`, obj()},
	} {
		root, err := ParseDocument("x: "+tc.src, "stof")
		if err != nil {
			t.Errorf("%s: %v", tc.src, err)
			continue
		}
		if d := diffTree(tc.src, root, obj("x", tc.want), true); d != "" {
			t.Error(d)
		}
	}
}

func TestParseStofRootForms(t *testing.T) {
	want := obj("a", num("1"), "b", obj("c", "d"))
	for _, src := range []string{
		"a: 1\nb: { c: 'd' }",
		"{ a: 1, b: { c: 'd' } }",
		"{\"a\": 1, \"b\": {\"c\": \"d\"}}",
		"  // comment only line\n/* block */ a: 1 /// doc\n b: {c: 'd'};",
	} {
		root, err := ParseDocument(src, "stof")
		if err != nil {
			t.Errorf("%q: %v", src, err)
			continue
		}
		if d := diffTree("root", root, want, true); d != "" {
			t.Errorf("%q: %s", src, d)
		}
	}
	for _, src := range []string{"", "   \n// nothing\n"} {
		root, err := ParseDocument(src, "stof")
		if err != nil || len(root.Keys) != 0 {
			t.Errorf("%q: got %v, %v; want empty object", src, root, err)
		}
	}
}

func TestParseStofErrors(t *testing.T) {
	deep := strings.Repeat("{ a: ", 64) + "1" + strings.Repeat(" }", 64)
	for _, tc := range []struct{ name, src, want string }{
		{"stray comma", "a: { , }", `stof: line 1 col 6: expected '}' or field name, found ','`},
		{"comma at top", ", a: 1", `stof: line 1 col 1: expected field name or end of input, found ','`},
		{"missing colon", "policy {\n}", `stof: line 1 col 8: expected ':' after field name "policy", found '{'`},
		{"missing value", "a: \n}", `stof: line 2 col 1: expected a value (object, array, string, number, true, false or null), found '}'`},
		{"unclosed object", "policy: {\n  a: 1\n", `stof: line 3 col 1: expected '}' or field name, found end of input (object opened at line 1 col 9)`},
		{"unclosed array", "a: [1, 2", `stof: line 1 col 9: expected ']' or value, found end of input (array opened at line 1 col 4)`},
		{"bad array element", "a: [1, }", `stof: line 1 col 8: expected ']' or value, found '}'`},
		{"import", "// header\n\nimport './memory' as self.Memory;\npolicy: {}", `stof: line 3 col 1: imports are not supported`},
		{"unknown unit", "a: 5km", `stof: line 1 col 5: unknown unit "km" in "5km"`},
		{"bad underscore", "a: 1__0", `stof: line 1 col 4: invalid number "1__0": '_' must separate digits`},
		{"huge exponent", "a: 1e2000000000", `stof: line 1 col 4: number "1e2000000000": exponent is outside ±100`},
		{"exponent 101", "a: 1e-101", `stof: line 1 col 4: number "1e-101": exponent is outside ±100`},
		{"long number", "a: " + strings.Repeat("1", 65), `stof: line 1 col 4: number has more than 64 characters`},
		{"bad version", "a: 1.2.3a", `stof: line 1 col 4: invalid number "1.2.3a"`},
		{"duplicate", "a: {\n  b: 1\n  b: 2\n}", `stof: line 3 col 3: duplicate field "b"`},
		{"duplicate fn", "a: 1\nfn a() {}", `stof: line 2 col 4: duplicate field "a"`},
		{"expression", "map events: map();", `stof: line 1 col 13: expected a value (object, array, string, number, true, false or null), found identifier "map"`},
		{"tuple", "t: ('a', 1)", `stof: line 1 col 4: tuples are not supported`},
		{"two values", "a: 1 2", `stof: line 1 col 6: expected field name or end of input, found number 2`},
		{"no name", "(str): 1", `stof: line 1 col 6: expected field name before ':'`},
		{"unterminated string", "a: 'abc\n", `stof: line 1 col 4: unterminated string`},
		{"unterminated comment", "a: 1 /* never", `stof: line 1 col 6: unterminated block comment`},
		{"unterminated raw", `a: r#"abc"`, `stof: line 1 col 4: unterminated raw string`},
		{"bad escape", `a: 'x\q'`, `stof: line 1 col 6: invalid escape '\q' in string`},
		{"bad unicode", `a: '\uZZZZ'`, `stof: line 1 col 5: invalid \u escape`},
		{"lone surrogate", `a: '\uD800'`, `stof: line 1 col 5: invalid \u escape`},
		{"template value", "a: `hi ${name}`", `stof: line 1 col 4: template strings with ${...} are not supported as values`},
		{"unterminated fn", "c: {\n  fn f(x: int) -> int {\n    x + 1\n", `stof: line 4 col 1: unterminated body of function "f": '{' at line 2 col 23 is never closed`},
		{"fn without body", "fn f() -> int;", `stof: line 1 col 14: expected '{' to start the body of function "f", found ';'`},
		{"fn bad arrow", "fn f() int {}", `stof: line 1 col 8: expected '->' or '{' after the parameters of function "f", found identifier "int"`},
		{"unterminated attribute", "#[type(\na: 1", `stof: line 2 col 5: unterminated attribute: '[' at line 1 col 2 is never closed`},
		{"dangling attribute", "a: {\n  #[test]\n}", `stof: line 3 col 1: expected a field or function after the attribute, found '}'`},
		{"hash without bracket", "# comment\na: 1", `stof: line 1 col 3: expected '[' after '#' (attribute), found identifier "comment"`},
		{"data after root", "{ a: 1 } b: 2", `stof: line 1 col 10: expected end of input after the root object, found identifier "b"`},
		{"too deep", "x: " + deep, `stof: line 1 col 319: nesting deeper than 64`},
		{"invalid utf8", "a: 1\nb: '\xff'", `stof: line 2 col 5: invalid UTF-8`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDocument(tc.src, "stof")
			if err == nil {
				t.Fatalf("no error, want %s", tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("error:\n got %s\nwant %s", err, tc.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Format != "stof" || pe.Line < 1 || pe.Col < 1 {
				t.Fatalf("error %#v is not a positioned stof ParseError", err)
			}
		})
	}
}

func TestParseNestingLimit(t *testing.T) {
	// The root object is depth 1, so 63 nested objects inside it are fine
	// and 64 are one too many, in every format.
	nest := func(n int, open, close, inner string) string {
		return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
	}
	for _, tc := range []struct {
		format     string
		ok, tooFar string
	}{
		{"stof", "x: " + nest(63, "{a: ", "}", "1"), "x: " + nest(64, "{a: ", "}", "1")},
		{"stof", "x: " + nest(63, "[", "]", "1"), "x: " + nest(64, "[", "]", "1")},
		{"json", `{"x": ` + nest(63, `{"a": `, "}", "1") + "}", `{"x": ` + nest(64, `{"a": `, "}", "1") + "}"},
		{"json", `{"x": ` + nest(63, "[", "]", "1") + "}", `{"x": ` + nest(64, "[", "]", "1") + "}"},
		{"yaml", "x: " + nest(63, "{a: ", "}", "1"), "x: " + nest(64, "{a: ", "}", "1")},
		{"yaml", "x: " + nest(63, "[", "]", "1"), "x: " + nest(64, "[", "]", "1")},
		{"toml", "x = " + nest(63, "{a = ", "}", "1"), "x = " + nest(64, "{a = ", "}", "1")},
		{"toml", "x = " + nest(63, "[", "]", "1"), "x = " + nest(64, "[", "]", "1")},
		{"toml", "[" + strings.Repeat("a.", 62) + "b]\nc = 1", "[" + strings.Repeat("a.", 63) + "b]\nc = 1"},
	} {
		if _, err := ParseDocument(tc.ok, tc.format); err != nil {
			t.Errorf("%s: depth 64 rejected: %v", tc.format, err)
		}
		_, err := ParseDocument(tc.tooFar, tc.format)
		if err == nil || !strings.Contains(err.Error(), "nesting deeper than 64") {
			t.Errorf("%s: depth 65: got %v", tc.format, err)
		}
	}
	// Pathologically deep input is refused quickly, without recursing.
	for _, format := range []string{"stof", "json", "yaml", "toml"} {
		src := "x: " + strings.Repeat("[", 1<<20)
		switch format {
		case "json":
			src = `{"x": ` + strings.Repeat("[", 1<<20)
		case "toml":
			src = "x = " + strings.Repeat("[", 1<<20)
		}
		if _, err := ParseDocument(src, format); err == nil {
			t.Errorf("%s: 1M open brackets accepted", format)
		}
	}
	if _, err := ParseDocument(strings.Repeat("a.", 1<<20)+"b = 1", "toml"); err == nil || !strings.Contains(err.Error(), "nesting deeper") {
		t.Errorf("toml: 1M dotted key parts: %v", err)
	}
}

func TestParseNodeLimit(t *testing.T) {
	for _, tc := range []struct{ format, src string }{
		{"stof", "a: [" + strings.Repeat("{} ", MaxDocumentNodes) + "]"},
		{"json", `{"a": [` + strings.Repeat("1,", MaxDocumentNodes) + "1]}"},
		{"toml", "a = [" + strings.Repeat("1,", MaxDocumentNodes) + "1]"},
		{"yaml", "a: [" + strings.Repeat("1,", MaxDocumentNodes) + "1]"},
	} {
		if testing.Short() && (tc.format == "yaml" || tc.format == "toml") {
			continue // their libraries take seconds to build a million values
		}
		_, err := ParseDocument(tc.src, tc.format)
		if err == nil || !strings.Contains(err.Error(), "document has more than 1048576 values") {
			t.Errorf("%s: got %v", tc.format, err)
		}
	}
	// Just under the limit is fine: the root, "a" and its elements.
	src := "a: [" + strings.Repeat("1 ", MaxDocumentNodes-2) + "]"
	if _, err := ParseDocument(src, "stof"); err != nil {
		t.Errorf("stof at the limit: %v", err)
	}
}

func TestParseSizeLimit(t *testing.T) {
	big := "a: '" + strings.Repeat("x", MaxDocumentBytes) + "'"
	for _, format := range []string{"stof", "json", "yaml", "toml", ""} {
		_, err := ParseDocument(big, format)
		if err == nil || !strings.Contains(err.Error(), "over the 8388608 byte (8 MiB) limit") {
			t.Errorf("format %q: got %v", format, err)
		}
	}
	justFits := "a: '" + strings.Repeat("x", MaxDocumentBytes-5) + "'"
	if _, err := ParseDocument(justFits, "stof"); err != nil {
		t.Errorf("8 MiB document rejected: %v", err)
	}
}

func TestParseJSON(t *testing.T) {
	root := mustParse(t, `{"b": [1, 2.50, -3e-2, true, null, "s"], "a": {"z": 1, "y": {}}}`, "json")
	want := obj(
		"b", []any{num("1"), num("2.5"), num("-0.03"), true, nil, "s"},
		"a", obj("z", num("1"), "y", obj()),
	)
	if d := diffTree("root", root, want, true); d != "" {
		t.Fatal(d)
	}
	// Exact decimals, not float64: this is not representable as a double.
	root = mustParse(t, `{"x": 0.1000000000000000055511151231257827}`, "json")
	if got := lookup(t, root, "x").(Number).Value.String(); got != "0.1000000000000000055511151231257827" {
		t.Errorf("x = %s", got)
	}

	for _, tc := range []struct{ name, src, want string }{
		{"syntax", "{\n  \"a\": 1,\n  \"b\": ,\n}", `json: line 3 col 8: invalid character ',' looking for beginning of value`},
		{"root array", `[1, 2]`, `json: line 1 col 1: the root must be an object`},
		{"duplicate", "{\n  \"a\": 1,\n  \"a\": 2\n}", `json: line 3 col 5: duplicate key "a"`},
		{"huge exponent", `{"a": 1e2000000000}`, `json: line 1 col 7: number "1e2000000000": exponent is outside ±100`},
		{"bad key", "{\"a\": 1 x}", `json: line 1 col 9: invalid character 'x' after object key:value pair`},
		{"long number", `{"a": ` + strings.Repeat("9", 65) + `}`, `json: line 1 col 7: number has more than 64 characters`},
		{"trailing", `{} {}`, `json: line 1 col 4: unexpected data after the root object`},
		{"truncated", `{"a": [1, 2`, `json: line 1 col 12: unexpected end of input`},
		{"empty", ``, `json: line 1 col 1: unexpected end of input`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDocument(tc.src, "json")
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestParseYAML(t *testing.T) {
	src := `
base: &base
  mode: soft
  value: 1_000
limits:
  a:
    <<: *base
    value: 5
  b:
    <<: [*base]
    credit: x
nums: [0x1F, 0o17, +12, -1.5e-7, .5, 1e3, 99999999999999999999999]
strs: [1day, '10', "yes", yes, 2024-01-02, ~]
`
	root := mustParse(t, src, "yaml")
	want := obj(
		"base", obj("mode", "soft", "value", num("1000")),
		"limits", obj(
			"a", obj("mode", "soft", "value", num("5")),
			"b", obj("mode", "soft", "value", num("1000"), "credit", "x"),
		),
		"nums", []any{num("31"), num("15"), num("12"), num("-0.00000015"), num("0.5"), num("1000"), num("99999999999999999999999")},
		"strs", []any{"1day", "10", "yes", "yes", "2024-01-02", nil},
	)
	if d := diffTree("root", root, want, true); d != "" {
		t.Fatal(d)
	}

	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for i, prev := 'b', 'a'; i <= 'j'; i, prev = i+1, i {
		bomb += fmt.Sprintf("%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n", i, i, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
	}
	if _, err := ParseDocument(bomb, "yaml"); err == nil || !strings.Contains(err.Error(), "more than 1048576 values (aliases expanded)") {
		t.Errorf("alias bomb: %v", err)
	}

	// Syntax errors carry the line yaml.v3 reports, which is where the
	// enclosing construct starts; Capstan's own checks have line and column.
	for _, tc := range []struct{ name, src, want string }{
		{"duplicate", "a: 1\nb:\n  c: 1\n  c: 2\n", `yaml: line 4 col 3: duplicate key "c"`},
		{"syntax", "a: 1\nb: [1, 2\nc: 3\n", `yaml: line 1: did not find expected ',' or ']'`},
		{"indent", "a:\n  b: 1\n c: 2\n", `yaml: line 2: did not find expected key`},
		{"root list", "- a\n- b\n", `yaml: line 1 col 1: the root must be a mapping`},
		{"two docs", "a: 1\n---\nb: 2\n", `yaml: line 2 col 1: multiple documents are not supported`},
		{"inf", "a: .inf\n", `yaml: line 1 col 4: non-finite number ".inf" is not supported`},
		{"big exponent", "a: 1e150\n", `yaml: line 1 col 4: number "1e150": exponent is outside ±100`},
		{"complex key", "? [a]\n: 1\n", `yaml: line 1 col 3: mapping keys must be scalars`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDocument(tc.src, "yaml")
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
	if root, err := ParseDocument("# only a comment\n", "yaml"); err != nil || len(root.Keys) != 0 {
		t.Errorf("comment-only YAML: %v, %v", root, err)
	}
}

func TestParseTOML(t *testing.T) {
	src := `
z = 1
a = { y = 2, x = [1, 2.5, 'three'] }
when = 1979-05-27T07:32:00Z
day = 1979-05-27
hex = 0xff

[[plans]]
name = 'b'
value = 1_000

[[plans]]
name = 'a'
extra = true
`
	root := mustParse(t, src, "toml")
	want := obj(
		"z", num("1"),
		"a", obj("y", num("2"), "x", []any{num("1"), num("2.5"), "three"}),
		"when", "1979-05-27T07:32:00Z",
		"day", "1979-05-27",
		"hex", num("255"),
		"plans", []any{
			obj("name", "b", "value", num("1000")),
			obj("name", "a", "extra", true),
		},
	)
	if d := diffTree("root", root, want, true); d != "" {
		t.Fatal(d)
	}

	for _, tc := range []struct{ name, src, want string }{
		{"syntax", "a = 1\nb = [1,\n", `toml: line 2 col 8: unexpected EOF; expected value`},
		{"duplicate", "a = 1\na = 2\n", `toml: line 2 col 7: Key 'a' has already been defined.`},
		{"huge exponent", "a = 1e200\n", `toml: number 1e+200 at "a": exponent is outside ±100`},
		{"inf", "a = inf\n", `toml: non-finite number at "a" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDocument(tc.src, "toml")
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestDetectFormat(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{seedStof, "stof"},
		{seedJSON, "json"},
		{seedYAML, "yaml"},
		{seedTOML, "toml"},
		{limitrStyle, "stof"},
		{"Limitr policy: {\n credits: {}\n}", "stof"},
		{"{ policy: { credits: {} } }", "stof"},
		{"  {\"policy\": {}}", "json"},
		{"#[type]\nCredit: {}", "stof"},
		{"// c\na: 1", "stof"},
		{"a: 1\nb: 'x'\n", "stof"},       // valid in both: Stof is tried first
		{"a: hello world\n", "yaml"},     // not Stof
		{"a: 1 # comment\nb: 2", "yaml"}, // '#' comments are not Stof
		{"---\na: 1", "yaml"},
		{"- a\n- b", "yaml"},
		{"# comment\nkey = 1", "toml"},
		{"[policy]\nx = 1", "toml"},
		{"\"quoted.key\" = 1", "toml"},
		{"", "stof"},
	} {
		if got := DetectFormat(tc.text); got != tc.want {
			t.Errorf("DetectFormat(%.30q) = %q, want %q", tc.text, got, tc.want)
		}
	}
}

func TestParseDocumentFormatNames(t *testing.T) {
	if _, err := ParseDocument("a: 1", "YML"); err != nil {
		t.Errorf("YML: %v", err)
	}
	if _, err := ParseDocument("a: 1", "xml"); err == nil || !strings.Contains(err.Error(), `unsupported document format "xml"`) {
		t.Errorf("xml: %v", err)
	}
	// A UTF-8 byte order mark is ignored.
	root := mustParse(t, "\uFEFFa: 1", "")
	if d := diffTree("root", root, obj("a", num("1")), true); d != "" {
		t.Error(d)
	}
}

func TestObject(t *testing.T) {
	o := NewObject()
	o.Set("b", 1)
	o.Set("a", 2)
	o.Set("b", 3) // replaces in place
	if !slices.Equal(o.Keys, []string{"b", "a"}) {
		t.Errorf("keys = %q", o.Keys)
	}
	if v, ok := o.Get("b"); !ok || v != 3 {
		t.Errorf("b = %v, %v", v, ok)
	}
	if _, ok := o.Get("missing"); ok {
		t.Error("missing key found")
	}
	var zero Object
	zero.Set("x", nil) // the zero value is usable
	if v, ok := zero.Get("x"); !ok || v != nil || len(zero.Keys) != 1 {
		t.Errorf("zero object: %v %v %q", v, ok, zero.Keys)
	}
	var nilObj *Object
	if _, ok := nilObj.Get("x"); ok {
		t.Error("nil object has a key")
	}
}

// checkTree verifies structural invariants of a parsed tree.
func checkTree(t *testing.T, v any, depth int) {
	if depth > MaxNestingDepth+1 {
		t.Fatalf("tree deeper than %d", MaxNestingDepth)
	}
	switch x := v.(type) {
	case *Object:
		if x == nil || len(x.Keys) != len(x.Fields) {
			t.Fatalf("inconsistent object %v", x)
		}
		for _, k := range x.Keys {
			f, ok := x.Fields[k]
			if !ok {
				t.Fatalf("key %q missing from Fields", k)
			}
			checkTree(t, f, depth+1)
		}
	case []any:
		for _, e := range x {
			checkTree(t, e, depth+1)
		}
	case Number:
		if x.Unit != "" {
			if c, err := CanonicalUnit(x.Unit); err != nil || c != x.Unit {
				t.Fatalf("non-canonical unit %q", x.Unit)
			}
		}
	case string, bool, nil, Func:
	default:
		t.Fatalf("unexpected node type %T", v)
	}
}

func FuzzParseStof(f *testing.F) {
	for _, s := range []string{
		seedStof, limitrStyle, seedJSON,
		"a: 1", "a: { b: [1, 2, 'x'] }", "fn f(a: int) -> int { a }", "#[x] a: 1day",
		"a: r#\"x\"#", "a: `t`", "a: 1.0.0", "a: -1_000.5e-3GB", "{ , }", "a: '\\u{1F600}'",
		"import 'x'", "a: {", "a: /*", "x: 1e2000000000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 1<<16 {
			return
		}
		root, err := ParseDocument(s, "stof")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Format != "stof" || pe.Line < 1 || pe.Col < 1 {
				t.Fatalf("error is not a positioned stof ParseError: %#v", err)
			}
			return
		}
		if root == nil {
			t.Fatal("nil root without error")
		}
		checkTree(t, root, 1)
	})
}

func TestParseYAMLHugeExponentIsAString(t *testing.T) {
	// yaml.v3 only tags a scalar !!float when strconv.ParseFloat accepts it,
	// so an overflowing literal stays a string and never becomes a number.
	root := mustParse(t, "a: 1e2000000000\n", "yaml")
	if v := lookup(t, root, "a"); v != "1e2000000000" {
		t.Errorf("a = %#v", v)
	}
}

// FuzzParseDocument runs every format (and detection) over arbitrary input:
// no panics, and any tree returned is well-formed.
func FuzzParseDocument(f *testing.F) {
	for _, s := range []string{
		seedStof, seedJSON, seedYAML, seedTOML,
		"a: &a {b: 1}\nc: *a\nd:\n  <<: *a\n", "[[a]]\nb = 1\n[[a]]\nb = 2", "x = 1979-05-27", `{"a": [1, {"b": 2e-3}]}`,
	} {
		for _, format := range []string{"", "json", "yaml", "toml", "stof"} {
			f.Add(s, format)
		}
	}
	f.Fuzz(func(t *testing.T, s, format string) {
		if len(s) > 1<<14 {
			return
		}
		if root, err := ParseDocument(s, format); err == nil {
			checkTree(t, root, 1)
		}
	})
}
