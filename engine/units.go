package engine

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
)

// Limits on number literals. They exist so that a hostile policy cannot make
// decimal arithmetic explode: "1e2000000000" is eleven characters but would
// be a number with two billion digits once anything multiplied it.
const (
	// MaxNumberLen is the longest number literal accepted, in characters as
	// written (sign, digits, '_' separators, '.', exponent; not the unit).
	MaxNumberLen = 64
	// MaxExponent bounds the written exponent: |exp| in "1.5e-7" must be <= 100.
	MaxExponent = 100
)

// Units are grouped in families; conversions only happen within a family.
type unitFamily uint8

const (
	familyTime unitFamily = iota + 1
	familyBytes
)

func (f unitFamily) String() string {
	switch f {
	case familyTime:
		return "time"
	case familyBytes:
		return "bytes"
	}
	return "unknown"
}

// unitInfo describes one canonical unit: its family and its size in the
// family's base unit (milliseconds for time, bytes for bytes).
type unitInfo struct {
	name   string
	family unitFamily
	factor int64
}

// lookupUnit maps every accepted spelling to its canonical unit. It is a
// switch rather than a map so the table cannot be mutated at run time.
//
// Time spellings follow Stof (ms, s, min, hr, day/days) plus common
// aliases. A bare "m" means minutes here, even though Stof itself reads "m"
// as metres: policies only ever use time and byte units, and "10m" as a
// reset period means ten minutes to every reader. Weeks are not a Stof unit
// but are accepted for convenience.
//
// Byte units are case-sensitive as in Stof ("KB", "MiB"), plus all-lower-case
// forms ("gb", "mib") and long names ("gigabytes"). Mixed forms such as "Gb"
// are rejected because they conventionally mean bits.
func lookupUnit(s string) (unitInfo, bool) {
	const (
		ms   = 1
		sec  = 1000 * ms
		min  = 60 * sec
		hr   = 60 * min
		day  = 24 * hr
		week = 7 * day
	)
	switch s {
	case "ms", "msec", "msecs", "millisecond", "milliseconds":
		return unitInfo{"ms", familyTime, ms}, true
	case "s", "sec", "secs", "second", "seconds":
		return unitInfo{"s", familyTime, sec}, true
	case "m", "min", "mins", "minute", "minutes":
		return unitInfo{"min", familyTime, min}, true
	case "h", "hr", "hrs", "hour", "hours":
		return unitInfo{"hr", familyTime, hr}, true
	case "d", "day", "days":
		return unitInfo{"day", familyTime, day}, true
	case "w", "week", "weeks":
		return unitInfo{"week", familyTime, week}, true

	case "B", "byte", "bytes":
		return unitInfo{"B", familyBytes, 1}, true
	case "KB", "kB", "kb", "kilobyte", "kilobytes":
		return unitInfo{"KB", familyBytes, 1e3}, true
	case "MB", "mb", "megabyte", "megabytes":
		return unitInfo{"MB", familyBytes, 1e6}, true
	case "GB", "gb", "gigabyte", "gigabytes":
		return unitInfo{"GB", familyBytes, 1e9}, true
	case "TB", "tb", "terabyte", "terabytes":
		return unitInfo{"TB", familyBytes, 1e12}, true
	case "PB", "pb", "petabyte", "petabytes":
		return unitInfo{"PB", familyBytes, 1e15}, true
	case "KiB", "kib", "kibibyte", "kibibytes":
		return unitInfo{"KiB", familyBytes, 1 << 10}, true
	case "MiB", "mib", "mebibyte", "mebibytes":
		return unitInfo{"MiB", familyBytes, 1 << 20}, true
	case "GiB", "gib", "gibibyte", "gibibytes":
		return unitInfo{"GiB", familyBytes, 1 << 30}, true
	case "TiB", "tib", "tebibyte", "tebibytes":
		return unitInfo{"TiB", familyBytes, 1 << 40}, true
	case "PiB", "pib", "pebibyte", "pebibytes":
		return unitInfo{"PiB", familyBytes, 1 << 50}, true
	}
	return unitInfo{}, false
}

// CanonicalUnit returns the canonical name of a unit spelling: "ms", "s",
// "min", "hr", "day", "week" for time and "B", "KB", "MB", "GB", "TB", "PB",
// "KiB", "MiB", "GiB", "TiB", "PiB" for bytes. "" stays "".
func CanonicalUnit(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	u, ok := lookupUnit(s)
	if !ok {
		return "", fmt.Errorf("unknown unit %q", s)
	}
	return u.name, nil
}

// ParseQuantity parses "30days", "1GB", "1.5e-7", "1_000", "10 min" into a
// Number (canonical unit). Space between the number and its unit is allowed;
// '_' may separate digits.
func ParseQuantity(s string) (Number, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Number{}, fmt.Errorf("invalid quantity %q: empty", s)
	}
	i := 0
	if t[0] == '+' || t[0] == '-' {
		i = 1
	}
	end := scanNumber(t, i)
	if end == i {
		return Number{}, fmt.Errorf("invalid quantity %q: expected a number", s)
	}
	d, err := parseDecimal(t[:end])
	if err != nil {
		return Number{}, fmt.Errorf("invalid quantity %q: %w", s, err)
	}
	unit, err := CanonicalUnit(strings.TrimSpace(t[end:]))
	if err != nil {
		return Number{}, fmt.Errorf("invalid quantity %q: %w", s, err)
	}
	return Number{Value: d, Unit: unit}, nil
}

// DurationMillis converts a Number or string (with a time unit, or bare =
// milliseconds) to whole milliseconds. Ints are accepted as milliseconds.
// Fractions of a millisecond ("1.5ms") are an error rather than silently
// rounded, as is anything outside int64.
func DurationMillis(v any) (int64, error) {
	var n Number
	switch x := v.(type) {
	case Number:
		n = x
	case *Number:
		if x == nil {
			return 0, fmt.Errorf("duration: nil number")
		}
		n = *x
	case string:
		q, err := ParseQuantity(x)
		if err != nil {
			return 0, fmt.Errorf("duration: %w", err)
		}
		n = q
	case int:
		return int64(x), nil
	case int64:
		return x, nil
	default:
		return 0, fmt.Errorf("duration: cannot use %T as a duration", v)
	}
	ms := n.Value
	if n.Unit != "" {
		u, ok := lookupUnit(n.Unit)
		if !ok {
			return 0, fmt.Errorf("duration: unknown unit %q", n.Unit)
		}
		if u.family != familyTime {
			return 0, fmt.Errorf("duration: %s is not a time unit", u.name)
		}
		ms = ms.Mul(decimal.NewFromInt(u.factor))
	}
	if !ms.IsInteger() {
		return 0, fmt.Errorf("duration: %s is not a whole number of milliseconds", n)
	}
	b := ms.BigInt()
	if !b.IsInt64() {
		return 0, fmt.Errorf("duration: %s is out of range", n)
	}
	return b.Int64(), nil
}

// ConvertUnits converts n into the target unit (e.g. "MB"). Both must be in
// the same family (time or bytes). Target "" or "float" means no conversion:
// the unit is dropped and the value returned unchanged. A bare number (no
// unit) is taken to be in the target unit already, which is how Limitr reads
// `value: 1000` on a credit whose stof_units is 'MB'.
//
// Results are exact whenever the decimal expansion terminates, which is
// always the case within bytes and for conversions towards smaller time
// units. Otherwise (1s in min = 1/60) the result is rounded half away from
// zero to 60 decimal places beyond the input's own scale.
func ConvertUnits(n Number, target string) (decimal.Decimal, error) {
	target = strings.TrimSpace(target)
	if target == "" || target == "float" {
		return n.Value, nil
	}
	to, ok := lookupUnit(target)
	if !ok {
		return decimal.Decimal{}, fmt.Errorf("convert: unknown unit %q", target)
	}
	if n.Unit == "" {
		return n.Value, nil
	}
	from, ok := lookupUnit(n.Unit)
	if !ok {
		return decimal.Decimal{}, fmt.Errorf("convert: unknown unit %q", n.Unit)
	}
	if from.family != to.family {
		return decimal.Decimal{}, fmt.Errorf("convert: cannot convert %s (%s) to %s (%s)",
			from.name, from.family, to.name, to.family)
	}
	if from.factor == to.factor {
		return n.Value, nil
	}
	num := n.Value.Mul(decimal.NewFromInt(from.factor))
	prec := int32(60)
	if e := num.Exponent(); e < 0 {
		prec -= e
	}
	return trimZeros(num.DivRound(decimal.NewFromInt(to.factor), prec)), nil
}

// trimZeros drops trailing fractional zeros so that 1.5000 prints as 1.5
// after a division carried out at high precision.
func trimZeros(d decimal.Decimal) decimal.Decimal {
	c, e := d.Coefficient(), d.Exponent()
	if c.Sign() == 0 {
		return decimal.Zero
	}
	ten := big.NewInt(10)
	q, r := new(big.Int), new(big.Int)
	for e < 0 {
		q.QuoRem(c, ten, r)
		if r.Sign() != 0 {
			break
		}
		c.Set(q)
		e++
	}
	return decimal.NewFromBigInt(c, e)
}

// String renders the number as Stof would write it: "30day", "1.5", "100GB".
func (n Number) String() string {
	return n.Value.String() + n.Unit
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scanNumber returns the end of the unsigned number literal starting at s[i]:
// digits with '_' separators, an optional fraction and an optional exponent.
// The exponent is only taken when digits follow the 'e', so "2EB"-style unit
// suffixes are never eaten. Validation happens in parseDecimal.
func scanNumber(s string, i int) int {
	digits := func(i int) int {
		for i < len(s) && (isDigit(s[i]) || s[i] == '_') {
			i++
		}
		return i
	}
	if i >= len(s) || !isDigit(s[i]) {
		return i
	}
	i = digits(i)
	if i+1 < len(s) && s[i] == '.' && isDigit(s[i+1]) {
		i = digits(i + 1)
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if j < len(s) && isDigit(s[j]) {
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			i = j
		}
	}
	return i
}

// parseDecimal converts a number literal to an exact decimal. Accepted:
// [+-] digits [. digits] [e [+-] digits], also ".5" and "5." (YAML floats),
// with '_' allowed only between two digits. Length and exponent are bounded
// (MaxNumberLen, MaxExponent) before any arithmetic happens.
func parseDecimal(raw string) (decimal.Decimal, error) {
	if len(raw) > MaxNumberLen {
		return decimal.Decimal{}, fmt.Errorf("number has more than %d characters", MaxNumberLen)
	}
	s := raw
	if strings.IndexByte(s, '_') >= 0 {
		for i := 0; i < len(s); i++ {
			if s[i] == '_' && (i == 0 || i+1 == len(s) || !isDigit(s[i-1]) || !isDigit(s[i+1])) {
				return decimal.Decimal{}, fmt.Errorf("invalid number %q: '_' must separate digits", raw)
			}
		}
		s = strings.ReplaceAll(s, "_", "")
	}
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	intStart := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	nDigits := i - intStart
	if i < len(s) && s[i] == '.' {
		i++
		fracStart := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		nDigits += i - fracStart
	}
	if nDigits == 0 {
		return decimal.Decimal{}, fmt.Errorf("invalid number %q", raw)
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		expDigits := s[j:]
		if expDigits == "" {
			return decimal.Decimal{}, fmt.Errorf("invalid number %q: empty exponent", raw)
		}
		for k := 0; k < len(expDigits); k++ {
			if !isDigit(expDigits[k]) {
				return decimal.Decimal{}, fmt.Errorf("invalid number %q", raw)
			}
		}
		// Length-check before converting so "1e99999999999999999999" can't
		// overflow the exponent parse itself.
		sig := strings.TrimLeft(expDigits, "0")
		exp := 0
		if len(sig) <= 3 && sig != "" {
			exp, _ = strconv.Atoi(sig)
		}
		if len(sig) > 3 || exp > MaxExponent {
			return decimal.Decimal{}, fmt.Errorf("number %q: exponent is outside ±%d", raw, MaxExponent)
		}
		i = len(s)
	}
	if i != len(s) {
		return decimal.Decimal{}, fmt.Errorf("invalid number %q", raw)
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Decimal{}, fmt.Errorf("invalid number %q", raw)
	}
	return d, nil
}
