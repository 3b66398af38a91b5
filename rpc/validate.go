package rpc

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/engine"
	"github.com/shopspring/decimal"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Bounds on request fields, checked before anything is parsed or proposed.
const (
	maxAmountLen    = 64 // characters of a decimal string
	maxAmountScale  = 18 // decimal places
	maxAmountInt    = 24 // integer digits
	maxDurationLen  = 64 // characters of a duration string
	maxScheduleLen  = 64 // characters of a reset_sch
	maxUnitLen      = 32 // characters of a unit
	maxEventData    = 16 << 10
	maxListLen      = 64 // refs, alt ids, scope, shared_with, call caps
	maxMetadata     = 64
	maxMetaValueLen = 4096
	maxPolicyText   = 1 << 20
	maxTextLen      = 1024 // labels, types
)

// sign says which amounts a field accepts.
type sign uint8

const (
	anySign sign = iota
	nonNegative
	positive
)

// check validates one request. The first problem is kept; later checks are
// no-ops, so handlers can validate every field in a row and ask once.
type check struct {
	field string
	msg   string
}

func (c *check) fail(field, format string, args ...any) {
	if c.field == "" && c.msg == "" {
		c.field, c.msg = field, fmt.Sprintf(format, args...)
	}
}

func (c *check) failed() bool { return c.msg != "" }

// err is the InvalidArgument error for the first problem, or nil.
func (c *check) err() error {
	if !c.failed() {
		return nil
	}
	return invalidArgument(c.field, c.msg)
}

// invalidArgument builds the edge's InvalidArgument error: the message starts
// with the field, and the Capstan-Field header carries it for programs.
func invalidArgument(field, msg string) *connect.Error {
	text := msg
	if field != "" && !strings.HasPrefix(msg, field+": ") {
		text = field + ": " + msg
	}
	e := connect.NewError(connect.CodeInvalidArgument, errorString(text))
	if field != "" {
		e.Meta().Set(fieldHeader, field)
	}
	return e
}

// fieldHeader names the offending request field on InvalidArgument errors.
const fieldHeader = "Capstan-Field"

type errorString string

func (e errorString) Error() string { return string(e) }

// id checks a required id: 1..256 bytes of printable ASCII without spaces.
func (c *check) id(field, s string) {
	if c.failed() {
		return
	}
	if s == "" {
		c.fail(field, "required")
		return
	}
	c.optID(field, s)
}

// optID checks an id that may be empty.
func (c *check) optID(field, s string) {
	if c.failed() || s == "" {
		return
	}
	if len(s) > engine.MaxIDLength {
		c.fail(field, "longer than %d bytes", engine.MaxIDLength)
		return
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			c.fail(field, "invalid character %q at byte %d (want printable ASCII without spaces)", s[i], i)
			return
		}
	}
}

// ids checks a list of ids.
func (c *check) ids(field string, list []string) {
	if c.failed() {
		return
	}
	if len(list) > maxListLen {
		c.fail(field, "more than %d entries", maxListLen)
		return
	}
	for i, s := range list {
		c.id(fmt.Sprintf("%s[%d]", field, i), s)
	}
}

// text checks free text (labels, types): bounded, no control characters.
func (c *check) text(field, s string) {
	if c.failed() {
		return
	}
	if len(s) > maxTextLen {
		c.fail(field, "longer than %d bytes", maxTextLen)
		return
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			c.fail(field, "control character %q not allowed", r)
			return
		}
	}
}

// amount parses a decimal string. Plain notation only: an optional sign,
// digits, an optional fraction. Exponents are refused outright, so no amount
// can expand into billions of digits ("1e2000000000").
func (c *check) amount(field, s string, rule sign) decimal.Decimal {
	if c.failed() {
		return decimal.Zero
	}
	if s == "" {
		c.fail(field, "required (a decimal string such as \"12.5\")")
		return decimal.Zero
	}
	if len(s) > maxAmountLen {
		c.fail(field, "longer than %d characters", maxAmountLen)
		return decimal.Zero
	}
	intDigits, fracDigits, ok := plainDecimal(s)
	if !ok {
		c.fail(field, "%q is not a decimal number (want plain notation such as \"12.5\", no exponent)", s)
		return decimal.Zero
	}
	if fracDigits > maxAmountScale {
		c.fail(field, "more than %d decimal places", maxAmountScale)
		return decimal.Zero
	}
	if intDigits > maxAmountInt {
		c.fail(field, "more than %d integer digits", maxAmountInt)
		return decimal.Zero
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		c.fail(field, "%q is not a decimal number", s)
		return decimal.Zero
	}
	switch rule {
	case nonNegative:
		if d.IsNegative() {
			c.fail(field, "must be >= 0, got %s", s)
		}
	case positive:
		if !d.IsPositive() {
			c.fail(field, "must be > 0, got %s", s)
		}
	}
	return d
}

// plainDecimal recognises [+-]digits[.digits] (at least one digit) and counts
// the significant integer digits and the fraction digits (trailing zeros
// dropped).
func plainDecimal(s string) (intDigits, fracDigits int, ok bool) {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	start := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	nInt := i - start
	intPart := strings.TrimLeft(s[start:i], "0")
	nFrac, frac := 0, ""
	if i < len(s) && s[i] == '.' {
		i++
		fs := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		nFrac = i - fs
		frac = strings.TrimRight(s[fs:i], "0")
	}
	if i != len(s) || nInt+nFrac == 0 {
		return 0, 0, false
	}
	return len(intPart), len(frac), true
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// optAmount is amount for a field that may be empty (nil when it is).
func (c *check) optAmount(field, s string, rule sign) *decimal.Decimal {
	if s == "" || c.failed() {
		return nil
	}
	d := c.amount(field, s, rule)
	return &d
}

// amountOrZero is amount for a field whose empty value means zero.
func (c *check) amountOrZero(field, s string, rule sign) decimal.Decimal {
	if s == "" {
		return decimal.Zero
	}
	return c.amount(field, s, rule)
}

// duration parses an optional duration ("30days", "10min", bare = ms); 0 when
// empty. A given duration must be positive.
func (c *check) duration(field, s string) int64 {
	if c.failed() || s == "" {
		return 0
	}
	if len(s) > maxDurationLen {
		c.fail(field, "longer than %d characters", maxDurationLen)
		return 0
	}
	ms, err := engine.DurationMillis(s)
	if err != nil {
		c.fail(field, "%q: %v (want a duration such as \"30days\", \"10min\" or \"500ms\")", s, err)
		return 0
	}
	if ms <= 0 {
		c.fail(field, "must be positive, got %q", s)
		return 0
	}
	return ms
}

// schedule checks an optional reset schedule.
func (c *check) schedule(field, s string) {
	if c.failed() || s == "" {
		return
	}
	if len(s) > maxScheduleLen {
		c.fail(field, "longer than %d characters", maxScheduleLen)
		return
	}
	if _, err := engine.ParseSchedule(s); err != nil {
		// The engine's message starts with `reset_sch "..."`; the field prefix says that.
		c.fail(field, "%s", strings.TrimPrefix(err.Error(), "reset_sch "))
	}
}

// unit checks an optional unit of a value ("GB", "ms").
func (c *check) unit(field, s string) {
	if c.failed() || s == "" {
		return
	}
	if len(s) > maxUnitLen {
		c.fail(field, "longer than %d characters", maxUnitLen)
		return
	}
	if _, err := engine.CanonicalUnit(s); err != nil {
		c.fail(field, "%v", err)
	}
}

// instant converts an optional timestamp to Unix ms (0 when unset). A set
// timestamp must be valid and after the epoch.
func (c *check) instant(field string, ts *timestamppb.Timestamp) int64 {
	if c.failed() || ts == nil {
		return 0
	}
	if err := ts.CheckValid(); err != nil {
		c.fail(field, "%v", err)
		return 0
	}
	ms := ts.AsTime().UnixMilli()
	if ms <= 0 {
		c.fail(field, "must be after 1970-01-01T00:00:00Z")
		return 0
	}
	return ms
}

// eventData checks optional event data: a JSON object, bounded.
func (c *check) eventData(field, s string) {
	if c.failed() || s == "" {
		return
	}
	if len(s) > maxEventData {
		c.fail(field, "longer than %d bytes", maxEventData)
		return
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &obj); err != nil || obj == nil {
		c.fail(field, "must be a JSON object")
	}
}

// metadata checks a metadata map.
func (c *check) metadata(field string, md map[string]string) {
	if c.failed() {
		return
	}
	if len(md) > maxMetadata {
		c.fail(field, "more than %d entries", maxMetadata)
		return
	}
	for _, k := range sortedKeys(md) {
		var kc check
		kc.id("key", k)
		if kc.failed() {
			c.fail(field, "key %q: %s", k, kc.msg)
			return
		}
		if len(md[k]) > maxMetaValueLen {
			c.fail(field+"."+k, "longer than %d bytes", maxMetaValueLen)
		}
	}
}

// callCaps converts call-scoped caps (credit -> value) in credit order, so the
// command is the same whatever order the map was sent in.
func (c *check) callCaps(field string, caps map[string]string, pol *engine.Policy) []engine.CallCap {
	if c.failed() || len(caps) == 0 {
		return nil
	}
	if len(caps) > maxListLen {
		c.fail(field, "more than %d entries", maxListLen)
		return nil
	}
	out := make([]engine.CallCap, 0, len(caps))
	for _, credit := range sortedKeys(caps) {
		f := field + "." + credit
		c.id(f, credit)
		c.currency(f, credit, pol)
		v := c.amount(f, caps[credit], nonNegative)
		out = append(out, engine.CallCap{Credit: credit, Value: v})
	}
	return out
}

// currency checks that name is rune, an exchange currency or a credit of the
// policy in force. The engine checks again when the command applies (the
// policy may change in between); this catches typos before anything is
// proposed.
func (c *check) currency(field, name string, pol *engine.Policy) {
	if c.failed() || name == "" || pol == nil {
		return
	}
	if name == engine.Rune {
		return
	}
	if _, ok := pol.Exchange.Pairs[name]; ok {
		return
	}
	if _, ok := pol.Credits[name]; ok {
		return
	}
	c.fail(field, "unknown credit or currency %q", name)
}

// plan checks that an optional plan name is in the policy in force.
func (c *check) plan(field, name string, pol *engine.Policy) {
	if c.failed() || name == "" || pol == nil {
		return
	}
	if _, ok := pol.Plans[name]; !ok {
		c.fail(field, "unknown plan %q", name)
	}
}

// policyFormat checks a policy format name ("" = detect).
func (c *check) policyFormat(field, f string) {
	if c.failed() {
		return
	}
	switch f {
	case "", "json", "yaml", "toml", "stof":
	default:
		c.fail(field, "unknown format %q (want json, yaml, toml or stof, or empty to detect)", f)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
