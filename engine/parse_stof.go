package engine

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// This file reads the data subset of Stof, the document language Limitr
// policies are written in (https://stof.dev):
//
//	#[type]                               // attributes: skipped
//	Limitr policy: {                      // "Type name:" - the type is dropped
//	    credits: {
//	        token: {
//	            label: 'AI token', price: { amount: 0.00002 }
//	            str unit: 'token'         // typed field: the type is dropped
//	            fn overhead(units: float) -> float { units * 0.000003 }
//	        }
//	    }
//	    limit: { value: 1_000_000, reset_inc: 1day, storage: 100GB }
//	}
//
// Fields are `[type...] name: value`, separated by newlines, ',' or ';'.
// Values are objects, arrays, strings ('..', "..", r#".."#, `..` without
// ${}), true/false/null, numbers (with '_' separators, exponents and a unit
// glued on) and version literals (1.0.0, kept as a string). Functions are
// kept as source text in a Func; nothing is ever evaluated. A trailing
// `as Type` cast is dropped. Expressions, tuples, `new` and imports are
// rejected with a positioned error.
//
// Block comments do not nest.

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokErr
	tokIdent
	tokString
	tokNumber
	tokPunct
)

type token struct {
	kind     tokKind
	text     string // identifier, decoded string, raw number text or punctuation
	off, end int    // byte span in the source
	err      error  // tokErr only

	// Strings: problems that only matter when the string is used as data.
	// Function bodies may hold strings Stof accepts but this reader would
	// not decode (unknown escapes, templates); those must not fail the parse.
	template bool   // backtick string containing ${...}
	bad      string // decoding problem, e.g. an unknown escape
	badOff   int
}

func (t token) is(punct string) bool     { return t.kind == tokPunct && t.text == punct }
func (t token) isIdent(name string) bool { return t.kind == tokIdent && t.text == name }

func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of input"
	case tokIdent:
		return fmt.Sprintf("identifier %q", t.text)
	case tokString:
		s := t.text
		if utf8.RuneCountInString(s) > 24 {
			s = string([]rune(s)[:24]) + "..."
		}
		return fmt.Sprintf("string %q", s)
	case tokNumber:
		return "number " + t.text
	case tokPunct:
		return "'" + t.text + "'"
	}
	return "invalid token"
}

// stofLexer produces tokens on demand; nothing is buffered beyond the
// parser's few tokens of lookahead, so memory stays proportional to the tree.
type stofLexer struct {
	src string
	pos int
}

func (lx *stofLexer) errAt(off int, msg string, args ...any) token {
	return token{kind: tokErr, off: off, end: off, err: errAtOffset("stof", lx.src, off, msg, args...)}
}

// skipSpace skips whitespace and comments (//, ///, /* */, /** */).
func (lx *stofLexer) skipSpace() *token {
	for lx.pos < len(lx.src) {
		rest := lx.src[lx.pos:]
		switch c := rest[0]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			lx.pos++
		case strings.HasPrefix(rest, "//"):
			if i := strings.IndexByte(rest, '\n'); i >= 0 {
				lx.pos += i
			} else {
				lx.pos = len(lx.src)
			}
		case strings.HasPrefix(rest, "/*"):
			i := strings.Index(rest[2:], "*/")
			if i < 0 {
				t := lx.errAt(lx.pos, "unterminated block comment")
				return &t
			}
			lx.pos += 2 + i + 2
		case c >= utf8.RuneSelf:
			r, w := utf8.DecodeRuneInString(rest)
			if !unicode.IsSpace(r) {
				return nil
			}
			lx.pos += w
		default:
			return nil
		}
	}
	return nil
}

func (lx *stofLexer) next() token {
	if t := lx.skipSpace(); t != nil {
		return *t
	}
	start := lx.pos
	if start >= len(lx.src) {
		return token{kind: tokEOF, off: start, end: start}
	}
	c := lx.src[start]
	r, w := utf8.DecodeRuneInString(lx.src[start:])
	switch {
	case c == 'r' && lx.rawStringAhead():
		return lx.rawString()
	case r == '_' || unicode.IsLetter(r):
		return lx.ident()
	case isDigit(c):
		return lx.number()
	case c == '\'' || c == '"' || c == '`':
		return lx.str(c)
	case c == '-' && start+1 < len(lx.src) && lx.src[start+1] == '>':
		lx.pos += 2
		return token{kind: tokPunct, text: "->", off: start, end: lx.pos}
	}
	lx.pos += w
	return token{kind: tokPunct, text: lx.src[start:lx.pos], off: start, end: lx.pos}
}

func isIdentRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// ident reads an identifier. '-' is allowed between identifier characters so
// that names such as claude-sonnet-4 need no quotes.
func (lx *stofLexer) ident() token {
	start, i := lx.pos, lx.pos
	for i < len(lx.src) {
		r, w := utf8.DecodeRuneInString(lx.src[i:])
		if isIdentRune(r) {
			i += w
			continue
		}
		if r == '-' && i > start && i+1 < len(lx.src) {
			if r2, _ := utf8.DecodeRuneInString(lx.src[i+1:]); isIdentRune(r2) {
				i++
				continue
			}
		}
		break
	}
	lx.pos = i
	return token{kind: tokIdent, text: lx.src[start:i], off: start, end: i}
}

// number reads a number with everything glued to it: '_' separators,
// fraction, exponent, further ".digits" (version literals) and a unit. It is
// deliberately loose; the parser validates when the number is used as data.
func (lx *stofLexer) number() token {
	s, start := lx.src, lx.pos
	i := scanNumber(s, start)
	for i+1 < len(s) && s[i] == '.' && isDigit(s[i+1]) {
		i++
		for i < len(s) && (isDigit(s[i]) || s[i] == '_') {
			i++
		}
	}
	for i < len(s) && (('a' <= s[i] && s[i] <= 'z') || ('A' <= s[i] && s[i] <= 'Z')) {
		i++
	}
	lx.pos = i
	return token{kind: tokNumber, text: s[start:i], off: start, end: i}
}

func (lx *stofLexer) rawStringAhead() bool {
	j := lx.pos + 1
	for j < len(lx.src) && lx.src[j] == '#' {
		j++
	}
	return j < len(lx.src) && lx.src[j] == '"'
}

// rawString reads r"..." or r#"..."# (any number of '#'); no escapes.
func (lx *stofLexer) rawString() token {
	start := lx.pos
	j := start + 1
	for lx.src[j] == '#' {
		j++
	}
	term := `"` + lx.src[start+1:j]
	k := strings.Index(lx.src[j+1:], term)
	if k < 0 {
		return lx.errAt(start, "unterminated raw string")
	}
	lx.pos = j + 1 + k + len(term)
	return token{kind: tokString, text: lx.src[j+1 : j+1+k], off: start, end: lx.pos}
}

// str reads a '...', "..." or `...` string and decodes its escapes:
// \n \t \r \0 \\ \' \" \` \$ \/ \b \f \uXXXX (with surrogate pairs) \u{X..}.
func (lx *stofLexer) str(q byte) token {
	s, start := lx.src, lx.pos
	var b strings.Builder
	t := token{kind: tokString, off: start}
	bad := func(off int, msg string) {
		if t.bad == "" {
			t.bad, t.badOff = msg, off
		}
	}
	i := start + 1
	for {
		if i >= len(s) {
			return lx.errAt(start, "unterminated string")
		}
		c := s[i]
		if c == q {
			i++
			break
		}
		if c != '\\' {
			if q == '`' && c == '$' && i+1 < len(s) && s[i+1] == '{' {
				t.template = true
			}
			b.WriteByte(c)
			i++
			continue
		}
		if i+1 >= len(s) {
			return lx.errAt(start, "unterminated string")
		}
		esc := s[i+1]
		switch esc {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '0':
			b.WriteByte(0)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case '\\', '\'', '"', '`', '$', '/':
			b.WriteByte(esc)
		case 'u':
			r, n, ok := decodeUnicodeEscape(s[i:])
			if !ok {
				bad(i, "invalid \\u escape")
				n = 2
			} else {
				b.WriteRune(r)
			}
			i += n
			continue
		default:
			r, w := utf8.DecodeRuneInString(s[i+1:])
			bad(i, fmt.Sprintf("invalid escape '\\%c' in string", r))
			b.WriteString(s[i+1 : i+1+w])
			i += 1 + w
			continue
		}
		i += 2
	}
	lx.pos = i
	t.text, t.end = b.String(), i
	return t
}

// decodeUnicodeEscape decodes \uXXXX (joining a following low surrogate) or
// \u{X...} at the start of s and returns the rune and bytes consumed.
func decodeUnicodeEscape(s string) (rune, int, bool) {
	if strings.HasPrefix(s, `\u{`) {
		end := strings.IndexByte(s, '}')
		if end < 4 || end > 9 {
			return 0, 0, false
		}
		v, err := strconv.ParseUint(s[3:end], 16, 32)
		if err != nil || !utf8.ValidRune(rune(v)) {
			return 0, 0, false
		}
		return rune(v), end + 1, true
	}
	hex4 := func(s string) (rune, bool) {
		if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(s[2:6], 16, 32)
		return rune(v), err == nil
	}
	r, ok := hex4(s)
	if !ok {
		return 0, 0, false
	}
	if utf16.IsSurrogate(r) {
		lo, ok := hex4(s[6:])
		if !ok {
			return 0, 0, false
		}
		joined := utf16.DecodeRune(r, lo)
		if joined == utf8.RuneError {
			return 0, 0, false
		}
		return joined, 12, true
	}
	return r, 6, true
}

// stofParser is a recursive-descent parser over stofLexer with a small
// lookahead buffer. Recursion only happens per nesting level, which is
// bounded by MaxNestingDepth.
type stofParser struct {
	src   string
	lx    stofLexer
	buf   [maxLookahead]token // tokens peeked but not consumed
	nbuf  int
	depth int
	nodes int // values parsed so far, bounded by MaxDocumentNodes
}

// maxLookahead is the most tokens the grammar needs to see ahead:
// `async fn name (` is the longest decision.
const maxLookahead = 4

func parseStof(text string) (*Object, error) {
	p := &stofParser{src: text, lx: stofLexer{src: text}}
	if p.peek(0).is("{") { // the whole document in braces, JSON-style
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		if t := p.peek(0); t.kind != tokEOF {
			return nil, p.unexpected(t, "end of input after the root object")
		}
		return v.(*Object), nil
	}
	root := NewObject()
	p.depth = 1
	if err := p.fields(root, nil); err != nil {
		return nil, err
	}
	return root, nil
}

// peek returns the token n places ahead (n < maxLookahead) without
// consuming it.
func (p *stofParser) peek(n int) token {
	for p.nbuf <= n {
		p.buf[p.nbuf] = p.lx.next()
		p.nbuf++
	}
	return p.buf[n]
}

// next consumes and returns one token. End of input and lexing errors are
// sticky: they are returned again by every later call.
func (p *stofParser) next() token {
	t := p.peek(0)
	if t.kind != tokEOF && t.kind != tokErr {
		copy(p.buf[:], p.buf[1:p.nbuf])
		p.nbuf--
	}
	return t
}

func (p *stofParser) errAt(off int, msg string, args ...any) error {
	return errAtOffset("stof", p.src, off, msg, args...)
}

// unexpected reports t where want was expected (or t's own lexing error).
func (p *stofParser) unexpected(t token, want string) error {
	if t.kind == tokErr {
		return t.err
	}
	return p.errAt(t.off, "expected %s, found %s", want, t.describe())
}

func (p *stofParser) openedAt(t token) string {
	line, col := lineCol(p.src, t.off)
	return fmt.Sprintf("line %d col %d", line, col)
}

// fields parses object members up to the closing '}' (not consumed), or to
// the end of input for the implicit root object (open == nil).
func (p *stofParser) fields(obj *Object, open *token) error {
	for {
		t := p.peek(0)
		switch {
		case t.kind == tokEOF && open == nil:
			return nil
		case t.kind == tokEOF:
			return p.errAt(t.off, "expected '}' or field name, found end of input (object opened at %s)", p.openedAt(*open))
		case t.is("}") && open != nil:
			return nil
		}
		if err := p.field(obj, open == nil); err != nil {
			return err
		}
		if t := p.peek(0); t.is(",") || t.is(";") {
			p.next()
		}
	}
}

// field parses one member: attributes, then a function or
// `[type annotation...] name: value`. The last identifier or string before
// ':' is the name; whatever precedes it (Limitr, obj, str!, bool | int,
// (str, ver)) is a type annotation and is dropped.
func (p *stofParser) field(obj *Object, top bool) error {
	want := "'}' or field name"
	if top {
		want = "field name or end of input"
	}
	attributes := false
	for p.peek(0).is("#") {
		if err := p.skipAttribute(); err != nil {
			return err
		}
		attributes = true
	}
	t := p.peek(0)
	if attributes && (t.kind == tokEOF || t.is("}")) {
		return p.unexpected(t, "a field or function after the attribute")
	}
	if t.isIdent("import") && !p.peek(1).is(":") {
		return p.errAt(t.off, "imports are not supported")
	}
	if t.isIdent("async") && p.peek(1).isIdent("fn") && p.peek(2).kind == tokIdent && p.peek(3).is("(") {
		p.next()
		t = p.peek(0)
	}
	if t.isIdent("fn") && p.peek(1).kind == tokIdent && p.peek(2).is("(") {
		return p.function(obj)
	}
	if t.kind != tokIdent && t.kind != tokString && !t.is("(") {
		return p.unexpected(t, want)
	}

	var name token
	haveName, nest := false, 0
header:
	for {
		t := p.next()
		switch {
		case t.is(":") && nest == 0:
			if !haveName {
				return p.errAt(t.off, "expected field name before ':'")
			}
			break header
		case t.kind == tokIdent || t.kind == tokString:
			if nest == 0 {
				name, haveName = t, true
			}
		case t.is("(") || t.is("<") || t.is("["):
			nest++
			haveName = false
		case nest > 0 && (t.is(")") || t.is(">") || t.is("]")):
			nest--
			haveName = false
		case t.is("!") || t.is("?") || t.is("|") || (nest > 0 && t.is(",")):
			haveName = false // part of a type: str!, bool | int, (str, ver)
		case haveName:
			return p.unexpected(t, fmt.Sprintf("':' after field name %q", name.text))
		default:
			return p.unexpected(t, "field name")
		}
	}
	if name.kind == tokString && name.bad != "" {
		return p.errAt(name.badOff, "%s", name.bad)
	}
	if name.template {
		return p.errAt(name.off, "template strings with ${...} are not supported as field names")
	}
	if _, dup := obj.Fields[name.text]; dup {
		return p.errAt(name.off, "duplicate field %q", name.text)
	}
	v, err := p.value()
	if err != nil {
		return err
	}
	p.skipCast()
	obj.Set(name.text, v)
	return nil
}

// skipCast drops a trailing `as Type` cast ({ ... } as MyType). "as" is only a
// cast when the identifier after it is not itself followed by ':', so a
// field named "as", or typed "as", still parses.
func (p *stofParser) skipCast() {
	if p.peek(0).isIdent("as") && p.peek(1).kind == tokIdent && !p.peek(2).is(":") {
		p.next()
		p.next()
	}
}

// skipAttribute skips #[...] or #![...], e.g. #[type], #[test],
// #[type('FreeSeats')].
func (p *stofParser) skipAttribute() error {
	p.next() // '#'
	if p.peek(0).is("!") {
		p.next()
	}
	open := p.next()
	if !open.is("[") {
		return p.unexpected(open, "'[' after '#' (attribute)")
	}
	_, err := p.skipBalanced(open, "[", "]", "attribute")
	return err
}

// skipBalanced consumes tokens up to and including the one that closes open
// and returns it. Strings and comments were already absorbed by the lexer, so
// brackets inside them do not count.
func (p *stofParser) skipBalanced(open token, o, c, what string) (token, error) {
	depth := 1
	for {
		t := p.next()
		switch {
		case t.kind == tokErr:
			return t, t.err
		case t.kind == tokEOF:
			return t, p.errAt(t.off, "unterminated %s: '%s' at %s is never closed", what, o, p.openedAt(open))
		case t.is(o):
			depth++
		case t.is(c):
			depth--
			if depth == 0 {
				return t, nil
			}
		}
	}
}

// function records `fn name(params) [-> type] { body }` as a Func stored under
// its name. The body is brace-matched, never interpreted.
func (p *stofParser) function(obj *Object) error {
	if err := p.count(p.next()); err != nil { // fn
		return err
	}
	name := p.next()
	open := p.next() // '(' (checked by the caller's lookahead)
	closeTok, err := p.skipBalanced(open, "(", ")", "parameter list")
	if err != nil {
		return err
	}
	fn := Func{Name: name.text, Params: strings.TrimSpace(p.src[open.end:closeTok.off])}
	t := p.next()
	if t.is("->") {
		start, nest := t.end, 0
		for {
			t = p.next()
			if t.is("{") && nest == 0 {
				break
			}
			switch {
			case t.kind == tokEOF || t.kind == tokErr || t.is("}") || t.is(";"):
				return p.unexpected(t, fmt.Sprintf("'{' to start the body of function %q", name.text))
			case t.is("(") || t.is("<") || t.is("["):
				nest++
			case t.is(")") || t.is(">") || t.is("]"):
				nest--
			}
		}
		fn.ReturnType = strings.TrimSpace(p.src[start:t.off])
		if fn.ReturnType == "" {
			return p.errAt(t.off, "expected return type after '->' in function %q", name.text)
		}
	}
	if !t.is("{") {
		return p.unexpected(t, fmt.Sprintf("'->' or '{' after the parameters of function %q", name.text))
	}
	closeTok, err = p.skipBalanced(t, "{", "}", fmt.Sprintf("body of function %q", name.text))
	if err != nil {
		return err
	}
	fn.Body = strings.TrimSpace(p.src[t.end:closeTok.off])
	if _, dup := obj.Fields[name.text]; dup {
		return p.errAt(name.off, "duplicate field %q", name.text)
	}
	obj.Set(name.text, fn)
	return nil
}

// count accounts for one more value at t.
func (p *stofParser) count(t token) error {
	p.nodes++
	if p.nodes > MaxDocumentNodes {
		return p.errAt(t.off, "document has more than %d values", MaxDocumentNodes)
	}
	return nil
}

// enter accounts for one more level of nesting at t.
func (p *stofParser) enter(t token) error {
	p.depth++
	if p.depth > MaxNestingDepth {
		return p.errAt(t.off, "nesting deeper than %d", MaxNestingDepth)
	}
	return nil
}

func (p *stofParser) value() (any, error) {
	t := p.next()
	if err := p.count(t); err != nil {
		return nil, err
	}
	switch t.kind {
	case tokPunct:
		switch t.text {
		case "{":
			if err := p.enter(t); err != nil {
				return nil, err
			}
			obj := NewObject()
			if err := p.fields(obj, &t); err != nil {
				return nil, err
			}
			p.next() // '}'
			p.depth--
			return obj, nil
		case "[":
			return p.array(t)
		case "-", "+":
			if n := p.peek(0); n.kind == tokNumber && n.off == t.end {
				p.next()
				return p.number(n, t.text == "-")
			}
		case "(":
			return nil, p.errAt(t.off, "tuples are not supported")
		}
	case tokString:
		if t.bad != "" {
			return nil, p.errAt(t.badOff, "%s", t.bad)
		}
		if t.template {
			return nil, p.errAt(t.off, "template strings with ${...} are not supported as values")
		}
		return t.text, nil
	case tokNumber:
		return p.number(t, false)
	case tokIdent:
		switch t.text {
		case "true":
			return true, nil
		case "false":
			return false, nil
		case "null":
			return nil, nil
		}
	}
	return nil, p.unexpected(t, "a value (object, array, string, number, true, false or null)")
}

// array parses the elements after '['; commas are optional and may trail.
func (p *stofParser) array(open token) (any, error) {
	if err := p.enter(open); err != nil {
		return nil, err
	}
	arr := []any{}
	for {
		t := p.peek(0)
		if t.is("]") {
			p.next()
			break
		}
		if t.kind == tokEOF {
			return nil, p.errAt(t.off, "expected ']' or value, found end of input (array opened at %s)", p.openedAt(open))
		}
		if t.kind == tokPunct && !t.is("{") && !t.is("[") && !t.is("-") && !t.is("+") {
			return nil, p.unexpected(t, "']' or value")
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		p.skipCast()
		if p.peek(0).is(",") {
			p.next()
		}
	}
	p.depth--
	return arr, nil
}

// number converts a number token: "16667", "1_000_000", "1.5e-7", "30days",
// "100GB". "1.0.0" is a version literal and stays a string.
func (p *stofParser) number(t token, neg bool) (any, error) {
	raw := t.text
	end := scanNumber(raw, 0)
	num, unit := raw[:end], raw[end:]
	if strings.HasPrefix(unit, ".") {
		if !neg && isVersion(raw) {
			return raw, nil
		}
		return nil, p.errAt(t.off, "invalid number %q", raw)
	}
	if neg {
		num = "-" + num
	}
	d, err := parseDecimal(num)
	if err != nil {
		return nil, p.errAt(t.off, "%s", err.Error())
	}
	u, err := CanonicalUnit(unit)
	if err != nil {
		return nil, p.errAt(t.off+end, "%s in %q", err.Error(), raw)
	}
	return Number{Value: d, Unit: u}, nil
}

// isVersion reports whether s is a version literal: three or more
// dot-separated runs of digits (Stof's ver type, e.g. 0.1.0).
func isVersion(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) < 3 {
		return false
	}
	for _, part := range parts {
		if part == "" {
			return false
		}
		for i := 0; i < len(part); i++ {
			if !isDigit(part[i]) {
				return false
			}
		}
	}
	return true
}
