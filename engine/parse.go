package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"
)

// Limits applied to every document before and while it is parsed. Policies
// come from tenants, so the parser must stay cheap on hostile input.
const (
	// MaxDocumentBytes is the largest document accepted (8 MiB).
	MaxDocumentBytes = 8 << 20
	// MaxNestingDepth bounds object/array nesting; the root object is depth 1.
	MaxNestingDepth = 64
	// MaxDocumentNodes bounds the values (objects, arrays and scalars) in the
	// tree. A parsed value costs ~50x its smallest spelling ("1," or "{}"), so
	// without it an 8 MiB document could take ~500 MB; it also stops YAML
	// alias "billion laughs" expansion. Real policies are far below it.
	MaxDocumentNodes = 1 << 20
)

// A parsed document node is one of: *Object, []any, string, bool, nil,
// Number, and (Stof only) Func.

// Object is a mapping that remembers the order its keys were written in, so
// that everything downstream (validation errors, canonical output) is
// deterministic.
type Object struct {
	Keys   []string // insertion order as written (deterministic)
	Fields map[string]any
}

// NewObject returns an empty object.
func NewObject() *Object {
	return &Object{Fields: map[string]any{}}
}

// Get returns the value stored under key.
func (o *Object) Get(key string) (any, bool) {
	if o == nil {
		return nil, false
	}
	v, ok := o.Fields[key]
	return v, ok
}

// Set stores v under key: it appends key if new, replaces the value
// (keeping the original position) otherwise.
func (o *Object) Set(key string, v any) {
	if o.Fields == nil {
		o.Fields = map[string]any{}
	}
	if _, ok := o.Fields[key]; !ok {
		o.Keys = append(o.Keys, key)
	}
	o.Fields[key] = v
}

// Number is an exact decimal, optionally carrying a unit suffix as written
// ("days", "min", "GB"...).
type Number struct {
	Value decimal.Decimal
	Unit  string // "" when none; normalised canonical unit name, see units.go
}

// Func is a Stof function definition found inside an object, e.g. a credit's
// `fn overhead(units: float, context?: obj) -> float { ... }`. It is kept as
// source text, never executed; a later layer decides whether to reject it or
// translate it.
type Func struct {
	Name       string
	Params     string // text between the parentheses, trimmed
	ReturnType string // text after "->", trimmed; "" when absent
	Body       string // text between the braces, trimmed
}

// ParseError reports where and why a document failed to parse.
type ParseError struct {
	Format string // "json", "yaml", "toml" or "stof"
	Line   int    // 1-based; 0 when unknown
	Col    int    // 1-based, in characters; 0 when unknown
	Msg    string
}

func (e *ParseError) Error() string {
	switch {
	case e.Line > 0 && e.Col > 0:
		return fmt.Sprintf("%s: line %d col %d: %s", e.Format, e.Line, e.Col, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s: line %d: %s", e.Format, e.Line, e.Msg)
	}
	return e.Format + ": " + e.Msg
}

// errAtOffset builds a ParseError positioned at byte offset off of src.
func errAtOffset(format, src string, off int, msg string, args ...any) *ParseError {
	line, col := lineCol(src, off)
	return &ParseError{Format: format, Line: line, Col: col, Msg: fmt.Sprintf(msg, args...)}
}

// lineCol converts a byte offset to a 1-based line and character column.
func lineCol(src string, off int) (line, col int) {
	off = max(0, min(off, len(src)))
	before := src[:off]
	line = 1 + strings.Count(before, "\n")
	if i := strings.LastIndexByte(before, '\n'); i >= 0 {
		before = before[i+1:]
	}
	return line, 1 + utf8.RuneCountInString(before)
}

// ParseDocument parses text into a tree; the root is always *Object.
// format is "json", "yaml" (or "yml"), "toml" or "stof"; "" guesses with
// DetectFormat.
//
// All numbers become exact Numbers. JSON and YAML numbers are parsed from
// their text as written. TOML numbers come from BurntSushi/toml, which has
// already turned floats into float64; they are converted with
// decimal.NewFromFloat, i.e. the shortest text that round-trips (0.0003 stays
// 0.0003), so exactness holds for anything with at most ~15 significant
// digits. Only Stof carries units on numbers: "1day" in YAML, JSON or TOML is
// the string "1day", left for ParseQuantity.
//
// Object keys keep document order in every format (for TOML, the order of
// toml.MetaData.Keys()). A key defined twice in one object is an error in
// every format, because a silently overridden limit is a policy bug.
//
// Documents over MaxDocumentBytes, nested deeper than MaxNestingDepth, with
// more than MaxDocumentNodes values, or with number literals beyond
// MaxNumberLen / MaxExponent are rejected. Parse failures are *ParseError.
func ParseDocument(text, format string) (*Object, error) {
	f := strings.ToLower(strings.TrimSpace(format))
	switch f {
	case "yml":
		f = "yaml"
	case "", "json", "yaml", "toml", "stof":
	default:
		return nil, fmt.Errorf("unsupported document format %q (want json, yaml, toml or stof)", format)
	}
	name := f
	if name == "" {
		name = "document"
	}
	if len(text) > MaxDocumentBytes {
		return nil, &ParseError{Format: name, Msg: fmt.Sprintf("document is %d bytes, over the %d byte (8 MiB) limit", len(text), MaxDocumentBytes)}
	}
	if !utf8.ValidString(text) {
		off := 0
		for off < len(text) {
			r, w := utf8.DecodeRuneInString(text[off:])
			if r == utf8.RuneError && w == 1 {
				break
			}
			off += w
		}
		return nil, errAtOffset(name, text, off, "invalid UTF-8")
	}
	text = strings.TrimPrefix(text, "\uFEFF")
	if f == "" {
		var root *Object
		if f, root = detectFormat(text); root != nil {
			return root, nil // detection already parsed it as Stof
		}
	}
	switch f {
	case "json":
		return parseJSON(text)
	case "yaml":
		return parseYAML(text)
	case "toml":
		return parseTOML(text)
	default:
		return parseStof(text)
	}
}

var (
	// A TOML table header: [a.b] or [[a.b]], optionally followed by a comment.
	tomlHeaderRE = regexp.MustCompile(`^\[\[?\s*[A-Za-z0-9_\-."' ]+\s*\]\]?\s*(#.*)?$`)
	// A TOML key/value line: bare, quoted or dotted key, then '='.
	tomlKeyValueRE = regexp.MustCompile(`^("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(\s*\.\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*\s*=`)
	// Two identifiers before a colon: a Stof type annotation ("Limitr policy:").
	stofTypedFieldRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*[!?]?\s+[A-Za-z_][A-Za-z0-9_\-]*\s*:`)
)

// DetectFormat guesses the format of text: "json", "yaml", "toml" or "stof".
// It looks at the first significant lines for tell-tale syntax (a valid JSON
// object, TOML headers and `key = value`, YAML `key:` blocks and `- ` lists,
// Stof comments, attributes, `Type name:` and `key: {`). Documents that are
// plain `key: scalar` lines are valid in both YAML and Stof; those are tried
// as Stof and fall back to YAML.
func DetectFormat(text string) string {
	f, _ := detectFormat(text)
	return f
}

// detectFormat implements DetectFormat; when the answer came from a trial
// Stof parse it also returns that tree, so ParseDocument need not parse twice.
func detectFormat(text string) (string, *Object) {
	s := strings.TrimSpace(strings.TrimPrefix(text, "\uFEFF"))
	if s == "" {
		return "stof", nil
	}
	switch s[0] {
	case '{':
		if json.Valid([]byte(s)) {
			return "json", nil
		}
		return "stof", nil
	case '[':
		if json.Valid([]byte(s)) {
			return "json", nil
		}
		return "toml", nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 500 {
		lines = lines[:500]
	}
	for _, raw := range lines {
		l := strings.TrimSpace(raw)
		switch {
		case l == "":
			continue
		case strings.HasPrefix(l, "//"), strings.HasPrefix(l, "/*"), strings.HasPrefix(l, "#["),
			strings.HasPrefix(l, "fn "), strings.HasPrefix(l, "async fn "), strings.HasPrefix(l, "import "),
			strings.HasPrefix(l, "}"):
			return "stof", nil
		case strings.HasPrefix(l, "#"):
			continue // YAML or TOML comment
		case l == "---", strings.HasPrefix(l, "--- "), strings.HasPrefix(l, "%YAML"),
			l == "-", strings.HasPrefix(l, "- "):
			return "yaml", nil
		case tomlHeaderRE.MatchString(l), tomlKeyValueRE.MatchString(l):
			return "toml", nil
		case stofTypedFieldRE.MatchString(l):
			return "stof", nil
		}
		_, rest, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		if i := strings.Index(rest, "//"); i >= 0 {
			rest = strings.TrimSpace(rest[:i])
		}
		if i := strings.Index(rest, " #"); i >= 0 {
			rest = strings.TrimSpace(rest[:i])
		}
		switch {
		case rest == "", strings.HasPrefix(rest, "#"), strings.HasPrefix(rest, "|"), strings.HasPrefix(rest, ">"),
			strings.HasPrefix(rest, "&"), strings.HasPrefix(rest, "*"):
			return "yaml", nil // block mapping, block scalar, anchor or alias
		case strings.HasSuffix(rest, "{"), strings.HasSuffix(rest, "["):
			return "stof", nil // an object or array left open at the end of a line
		}
	}
	if root, err := parseStof(strings.TrimPrefix(text, "\uFEFF")); err == nil {
		return "stof", root
	}
	return "yaml", nil
}

// ---- JSON ----

// parseJSON walks encoding/json tokens so that key order is kept, numbers
// stay text (UseNumber) and depth is checked before descending.
func parseJSON(text string) (*Object, error) {
	w := jsonWalker{src: text, dec: json.NewDecoder(strings.NewReader(text))}
	w.dec.UseNumber()
	tok, err := w.dec.Token()
	if err != nil {
		return nil, w.err(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errAtOffset("json", text, int(w.dec.InputOffset())-1, "the root must be an object")
	}
	root, err := w.object(1)
	if err != nil {
		return nil, err
	}
	if _, err := w.dec.Token(); err != io.EOF {
		if err != nil {
			return nil, w.err(err)
		}
		return nil, errAtOffset("json", text, int(w.dec.InputOffset())-1, "unexpected data after the root object")
	}
	return root, nil
}

type jsonWalker struct {
	src   string
	dec   *json.Decoder
	nodes int
}

// err positions an encoding/json error.
func (w *jsonWalker) err(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		// Decoder.Token reports the offset of the offending byte, or of the
		// whitespace just before it; point at the byte itself.
		off := int(se.Offset)
		for off < len(w.src) && strings.IndexByte(" \t\r\n", w.src[off]) >= 0 {
			off++
		}
		return errAtOffset("json", w.src, off, "%s", se.Error())
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errAtOffset("json", w.src, len(w.src), "unexpected end of input")
	}
	return errAtOffset("json", w.src, int(w.dec.InputOffset()), "%s", err.Error())
}

func (w *jsonWalker) value(tok json.Token, depth int) (any, error) {
	w.nodes++
	if w.nodes > MaxDocumentNodes {
		return nil, errAtOffset("json", w.src, int(w.dec.InputOffset()), "document has more than %d values", MaxDocumentNodes)
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth > MaxNestingDepth {
			return nil, errAtOffset("json", w.src, int(w.dec.InputOffset())-1, "nesting deeper than %d", MaxNestingDepth)
		}
		if t == '{' {
			return w.object(depth)
		}
		arr := []any{}
		for w.dec.More() {
			tok, err := w.dec.Token()
			if err != nil {
				return nil, w.err(err)
			}
			v, err := w.value(tok, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if _, err := w.dec.Token(); err != nil { // ']'
			return nil, w.err(err)
		}
		return arr, nil
	case json.Number:
		d, err := parseDecimal(string(t))
		if err != nil {
			return nil, errAtOffset("json", w.src, int(w.dec.InputOffset())-len(t), "%s", err.Error())
		}
		return Number{Value: d}, nil
	case string, bool, nil:
		return t, nil
	}
	return nil, errAtOffset("json", w.src, int(w.dec.InputOffset()), "unexpected token %v", tok)
}

// object reads the members of an object whose '{' was just consumed.
func (w *jsonWalker) object(depth int) (*Object, error) {
	obj := NewObject()
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return nil, w.err(err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errAtOffset("json", w.src, int(w.dec.InputOffset())-1, "expected a string key")
		}
		keyEnd := int(w.dec.InputOffset())
		if _, dup := obj.Fields[key]; dup {
			return nil, errAtOffset("json", w.src, keyEnd-1, "duplicate key %q", key)
		}
		tok, err = w.dec.Token()
		if err != nil {
			return nil, w.err(err)
		}
		v, err := w.value(tok, depth+1)
		if err != nil {
			return nil, err
		}
		obj.Set(key, v)
	}
	if _, err := w.dec.Token(); err != nil { // '}'
		return nil, w.err(err)
	}
	return obj, nil
}

// ---- YAML ----

// yamlErrRE splits yaml.v3 messages such as "yaml: line 3: did not find
// expected key" into line and message.
var yamlErrRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML decodes into a yaml.Node tree (not into maps) so that key order
// and the raw text of numbers survive.
func parseYAML(text string) (*Object, error) {
	dec := yaml.NewDecoder(strings.NewReader(text))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return NewObject(), nil // empty (or comment-only) document
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			return nil, yamlError(err)
		}
		return nil, &ParseError{Format: "yaml", Line: extra.Line, Col: extra.Column, Msg: "multiple documents are not supported"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return NewObject(), nil
		}
		root = root.Content[0]
	}
	for root.Kind == yaml.AliasNode && root.Alias != nil {
		root = root.Alias
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return NewObject(), nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, yamlNodeErr(root, "the root must be a mapping")
	}
	w := yamlWalker{}
	v, err := w.node(root, 1)
	if err != nil {
		return nil, err
	}
	return v.(*Object), nil
}

func yamlError(err error) error {
	msg := err.Error()
	if m := yamlErrRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &ParseError{Format: "yaml", Line: line, Msg: m[2]}
	}
	return &ParseError{Format: "yaml", Msg: strings.TrimPrefix(msg, "yaml: ")}
}

func yamlNodeErr(n *yaml.Node, msg string, args ...any) error {
	return &ParseError{Format: "yaml", Line: n.Line, Col: n.Column, Msg: fmt.Sprintf(msg, args...)}
}

type yamlWalker struct {
	nodes int // nodes materialised so far, aliases included
}

func (w *yamlWalker) node(n *yaml.Node, depth int) (any, error) {
	w.nodes++
	if w.nodes > MaxDocumentNodes {
		return nil, yamlNodeErr(n, "document has more than %d values (aliases expanded)", MaxDocumentNodes)
	}
	switch n.Kind {
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, yamlNodeErr(n, "unknown alias")
		}
		return w.node(n.Alias, depth)
	case yaml.MappingNode:
		if depth > MaxNestingDepth {
			return nil, yamlNodeErr(n, "nesting deeper than %d", MaxNestingDepth)
		}
		return w.mapping(n, depth)
	case yaml.SequenceNode:
		if depth > MaxNestingDepth {
			return nil, yamlNodeErr(n, "nesting deeper than %d", MaxNestingDepth)
		}
		arr := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := w.node(c, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		return arr, nil
	case yaml.ScalarNode:
		return yamlScalar(n)
	}
	return nil, yamlNodeErr(n, "unsupported YAML node")
}

// mapping converts a YAML mapping. Merge keys (`<<: *base`) are honoured:
// keys written explicitly win, then earlier merge sources over later ones;
// merged keys are placed where the `<<` entry was written.
func (w *yamlWalker) mapping(n *yaml.Node, depth int) (*Object, error) {
	obj := NewObject()
	explicit := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		for k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			return nil, yamlNodeErr(k, "mapping keys must be scalars")
		}
		if k.ShortTag() == "!!merge" {
			continue
		}
		if explicit[k.Value] {
			return nil, yamlNodeErr(k, "duplicate key %q", k.Value)
		}
		explicit[k.Value] = true
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, vn := n.Content[i], n.Content[i+1]
		for k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.ShortTag() == "!!merge" {
			if err := w.merge(obj, vn, explicit, depth); err != nil {
				return nil, err
			}
			continue
		}
		v, err := w.node(vn, depth+1)
		if err != nil {
			return nil, err
		}
		obj.Set(k.Value, v)
	}
	return obj, nil
}

func (w *yamlWalker) merge(obj *Object, src *yaml.Node, explicit map[string]bool, depth int) error {
	sources := []*yaml.Node{src}
	if r := resolveAlias(src); r.Kind == yaml.SequenceNode {
		sources = r.Content
	}
	for _, s := range sources {
		if resolveAlias(s).Kind != yaml.MappingNode {
			return yamlNodeErr(s, "merge key (<<) needs a mapping or a list of mappings")
		}
		// Merged keys sit at the same level as obj's own keys.
		v, err := w.node(s, depth)
		if err != nil {
			return err
		}
		m := v.(*Object)
		for _, key := range m.Keys {
			if _, done := obj.Fields[key]; done || explicit[key] {
				continue
			}
			obj.Set(key, m.Fields[key])
		}
	}
	return nil
}

// newBigInt parses an integer the way strconv.ParseInt(s, 0, 64) would,
// without the 64-bit limit.
func newBigInt(s string) (*big.Int, bool) {
	return new(big.Int).SetString(s, 0)
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// yamlScalar converts a scalar using yaml.v3's own tag resolution, but takes
// numbers from their raw text so they stay exact.
func yamlScalar(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, yamlNodeErr(n, "invalid boolean %q", n.Value)
		}
		return b, nil
	case "!!int":
		if len(n.Value) > MaxNumberLen {
			return nil, yamlNodeErr(n, "number has more than %d characters", MaxNumberLen)
		}
		// yaml.v3 resolves ints with strconv.ParseInt(s without '_', 0, 64);
		// big.Int with base 0 reads the same prefixes (0x, 0o, 0b, leading 0)
		// without the int64 limit.
		plain := strings.ReplaceAll(n.Value, "_", "")
		if i, ok := newBigInt(plain); ok {
			return Number{Value: decimal.NewFromBigInt(i, 0)}, nil
		}
		d, err := parseDecimal(plain)
		if err != nil {
			return nil, yamlNodeErr(n, "%s", err.Error())
		}
		return Number{Value: d}, nil
	case "!!float":
		if len(n.Value) > MaxNumberLen {
			return nil, yamlNodeErr(n, "number has more than %d characters", MaxNumberLen)
		}
		plain := strings.ReplaceAll(n.Value, "_", "")
		switch strings.ToLower(strings.TrimLeft(plain, "+-")) {
		case ".inf", ".nan":
			return nil, yamlNodeErr(n, "non-finite number %q is not supported", n.Value)
		}
		d, err := parseDecimal(plain)
		if err != nil {
			return nil, yamlNodeErr(n, "%s", err.Error())
		}
		return Number{Value: d}, nil
	}
	// !!str, !!timestamp, !!binary and custom tags: the text as written.
	return n.Value, nil
}

// ---- TOML ----

// parseTOML decodes with BurntSushi/toml and rebuilds the tree with keys in
// the order toml.MetaData.Keys() reports them, which is document order.
// Keys it does not report (tables inside inline arrays) are appended sorted.
func parseTOML(text string) (*Object, error) {
	// BurntSushi recurses once per nested array or inline table; refuse deep
	// bracket nesting before handing it the text.
	if off, ok := tomlTooDeep(text); ok {
		return nil, errAtOffset("toml", text, off, "nesting deeper than %d", MaxNestingDepth)
	}
	var m map[string]any
	md, err := toml.Decode(text, &m)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ParseError{Format: "toml", Line: pe.Position.Line, Col: pe.Position.Col, Msg: pe.Message}
		}
		return nil, &ParseError{Format: "toml", Msg: err.Error()}
	}
	c := tomlConverter{order: map[string][]string{}}
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		// Paths deeper than the nesting limit are rejected by convert anyway;
		// not indexing them keeps this loop linear in the document.
		for i := 0; i < len(k) && i <= MaxNestingDepth; i++ {
			parent := strings.Join(k[:i], "\x00")
			id := parent + "\x00\x00" + k[i]
			if !seen[id] {
				seen[id] = true
				c.order[parent] = append(c.order[parent], k[i])
			}
		}
	}
	v, err := c.convert(m, nil, 1)
	if err != nil {
		return nil, err
	}
	return v.(*Object), nil
}

type tomlConverter struct {
	order map[string][]string // parent path (joined by \x00) -> child keys in order
	nodes int
}

func (c *tomlConverter) convert(v any, path []string, depth int) (any, error) {
	c.nodes++
	if c.nodes > MaxDocumentNodes {
		return nil, &ParseError{Format: "toml", Msg: fmt.Sprintf("document has more than %d values", MaxDocumentNodes)}
	}
	switch x := v.(type) {
	case map[string]any:
		if depth > MaxNestingDepth {
			return nil, &ParseError{Format: "toml", Msg: fmt.Sprintf("nesting deeper than %d at %q", MaxNestingDepth, strings.Join(path, "."))}
		}
		obj := NewObject()
		var rest []string
		ordered := c.order[strings.Join(path, "\x00")]
		for _, k := range ordered {
			if _, ok := x[k]; !ok {
				continue
			}
			if _, done := obj.Fields[k]; done {
				continue
			}
			cv, err := c.convert(x[k], append(path[:len(path):len(path)], k), depth+1)
			if err != nil {
				return nil, err
			}
			obj.Set(k, cv)
		}
		for k := range x {
			if _, done := obj.Fields[k]; !done {
				rest = append(rest, k)
			}
		}
		sort.Strings(rest)
		for _, k := range rest {
			cv, err := c.convert(x[k], append(path[:len(path):len(path)], k), depth+1)
			if err != nil {
				return nil, err
			}
			obj.Set(k, cv)
		}
		return obj, nil
	case []map[string]any: // [[array.of.tables]]
		arr := make([]any, 0, len(x))
		for _, e := range x {
			cv, err := c.convert(e, path, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, cv)
		}
		return arr, nil
	case []any:
		if depth > MaxNestingDepth {
			return nil, &ParseError{Format: "toml", Msg: fmt.Sprintf("nesting deeper than %d at %q", MaxNestingDepth, strings.Join(path, "."))}
		}
		arr := make([]any, 0, len(x))
		for _, e := range x {
			cv, err := c.convert(e, path, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, cv)
		}
		return arr, nil
	case int64:
		return Number{Value: decimal.NewFromInt(x)}, nil
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return nil, &ParseError{Format: "toml", Msg: fmt.Sprintf("non-finite number at %q is not supported", strings.Join(path, "."))}
		}
		// Same bound as written literals: the exponent of the shortest form.
		s := strconv.FormatFloat(x, 'e', -1, 64)
		if e, err := strconv.Atoi(s[strings.IndexByte(s, 'e')+1:]); err != nil || e > MaxExponent || e < -MaxExponent {
			return nil, &ParseError{Format: "toml", Msg: fmt.Sprintf("number %s at %q: exponent is outside ±%d", s, strings.Join(path, "."), MaxExponent)}
		}
		return Number{Value: decimal.NewFromFloat(x)}, nil
	case string, bool:
		return x, nil
	case time.Time:
		// Dates stay text, as written; BurntSushi marks local (zone-less)
		// values with these location names.
		switch x.Location().String() {
		case "datetime-local":
			return x.Format("2006-01-02T15:04:05.999999999"), nil
		case "date-local":
			return x.Format("2006-01-02"), nil
		case "time-local":
			return x.Format("15:04:05.999999999"), nil
		}
		return x.Format(time.RFC3339Nano), nil
	}
	return nil, &ParseError{Format: "toml", Msg: fmt.Sprintf("unsupported value of type %T at %q", v, strings.Join(path, "."))}
}

// tomlTooDeep scans TOML text outside strings and comments and reports the
// offset where nesting could exceed what the converter accepts: more than
// MaxNestingDepth+1 open '[' / '{' (one level of slack for [[headers]]), or a
// dotted key with more than MaxNestingDepth dots. BurntSushi/toml recurses
// once per level when decoding, so this must be refused before it runs.
// Dots are counted per segment between newlines and = , [ ] { }; a value in
// such a segment (a float, a time) has at most one dot.
func tomlTooDeep(s string) (int, bool) {
	depth, dots := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '#':
			for i+1 < len(s) && s[i+1] != '\n' {
				i++
			}
		case '"', '\'':
			if strings.HasPrefix(s[i:], strings.Repeat(string(c), 3)) {
				var end int
				if c == '"' {
					end = indexUnescaped(s[i+3:], `"""`)
				} else {
					end = strings.Index(s[i+3:], "'''")
				}
				if end < 0 {
					return 0, false // unterminated: let the real parser report it
				}
				i += 3 + end + 2
				for i+1 < len(s) && s[i+1] == c { // """" closes with extra quotes
					i++
				}
				continue
			}
			j := i + 1
			for j < len(s) && s[j] != c && s[j] != '\n' {
				if c == '"' && s[j] == '\\' {
					j++
				}
				j++
			}
			i = j
		case '.':
			dots++
			if dots > MaxNestingDepth {
				return i, true
			}
		case '\n', '=', ',':
			dots = 0
		case '[', '{':
			dots = 0
			depth++
			if depth > MaxNestingDepth+1 {
				return i, true
			}
		case ']', '}':
			dots = 0
			depth--
		}
	}
	return 0, false
}

// indexUnescaped finds sep in s, skipping backslash escapes.
func indexUnescaped(s, sep string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if strings.HasPrefix(s[i:], sep) {
			return i
		}
	}
	return -1
}
