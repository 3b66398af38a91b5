package engine

import (
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func TestParseQuantity(t *testing.T) {
	for _, tc := range []struct {
		in, value, unit string
	}{
		{"30days", "30", "day"},
		{"1day", "1", "day"},
		{"1d", "1", "day"},
		{"2w", "2", "week"},
		{"1GB", "1", "GB"},
		{"1gb", "1", "GB"},
		{"1.5e-7", "0.00000015", ""},
		{"1_000", "1000", ""},
		{"10 min", "10", "min"},
		{"10m", "10", "min"},
		{"  -2.5s  ", "-2.5", "s"},
		{"+3hrs", "3", "hr"},
		{"1h", "1", "hr"},
		{"500ms", "500", "ms"},
		{"45 seconds", "45", "s"},
		{"512KiB", "512", "KiB"},
		{"2 gigabytes", "2", "GB"},
		{"1bytes", "1", "B"},
		{"3PiB", "3", "PiB"},
		{"0", "0", ""},
		{"1E3", "1000", ""},
	} {
		n, err := ParseQuantity(tc.in)
		if err != nil {
			t.Errorf("ParseQuantity(%q): %v", tc.in, err)
			continue
		}
		if n.Value.String() != tc.value || n.Unit != tc.unit {
			t.Errorf("ParseQuantity(%q) = %s %q, want %s %q", tc.in, n.Value, n.Unit, tc.value, tc.unit)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", `invalid quantity "": empty`},
		{"days", `invalid quantity "days": expected a number`},
		{"-", `invalid quantity "-": expected a number`},
		{"5km", `invalid quantity "5km": unknown unit "km"`},
		{"5Gb", `invalid quantity "5Gb": unknown unit "Gb"`},
		{"1e2000000000", `invalid quantity "1e2000000000": number "1e2000000000": exponent is outside ±100`},
		{"1_", `invalid quantity "1_": invalid number "1_": '_' must separate digits`},
		{"1.2.3", `invalid quantity "1.2.3": unknown unit ".3"`},
		{strings.Repeat("1", 65), `invalid quantity "` + strings.Repeat("1", 65) + `": number has more than 64 characters`},
	} {
		_, err := ParseQuantity(tc.in)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseQuantity(%q):\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
}

func TestCanonicalUnit(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "ms": "ms", "milliseconds": "ms", "sec": "s", "secs": "s", "second": "s",
		"m": "min", "mins": "min", "minute": "min", "hrs": "hr", "hour": "hr", "days": "day",
		"weeks": "week", "B": "B", "byte": "B", "kB": "KB", "KB": "KB", "mib": "MiB",
		"TB": "TB", "TiB": "TiB", "petabytes": "PB",
	} {
		got, err := CanonicalUnit(in)
		if err != nil || got != want {
			t.Errorf("CanonicalUnit(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"km", "M", "Mb", "D", "years", "float"} {
		if _, err := CanonicalUnit(in); err == nil {
			t.Errorf("CanonicalUnit(%q) accepted", in)
		}
	}
}

func TestDurationMillis(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want int64
	}{
		{"30days", 30 * 86_400_000},
		{"1day", 86_400_000},
		{"10min", 600_000},
		{"2.5s", 2500},
		{"1w", 604_800_000},
		{"1.5hr", 5_400_000},
		{"250", 250},
		{"0.5s", 500},
		{qty("1", "day"), 86_400_000},
		{num("1500"), 1500},
		{&Number{Value: decimal.NewFromInt(3), Unit: "s"}, 3000},
		{int64(42), 42},
		{7, 7},
		{"-1s", -1000},
	} {
		got, err := DurationMillis(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("DurationMillis(%v) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   any
		want string
	}{
		{"1.5ms", "duration: 1.5ms is not a whole number of milliseconds"},
		{"1GB", "duration: GB is not a time unit"},
		{qty("1", "MB"), "duration: MB is not a time unit"},
		{"soon", `duration: invalid quantity "soon": expected a number`},
		{"1e30days", "duration: 1000000000000000000000000000000day is out of range"},
		{true, "duration: cannot use bool as a duration"},
		{(*Number)(nil), "duration: nil number"},
	} {
		_, err := DurationMillis(tc.in)
		if err == nil || err.Error() != tc.want {
			t.Errorf("DurationMillis(%v):\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
}

func TestConvertUnits(t *testing.T) {
	for _, tc := range []struct {
		n      Number
		target string
		want   string
	}{
		{qty("2", "GB"), "MB", "2000"},
		{qty("1.5", "GiB"), "MiB", "1536"},
		{qty("1", "KiB"), "KB", "1.024"},
		{qty("1000", "KB"), "KiB", "976.5625"},
		{qty("1", "B"), "PiB", "0.00000000000000088817841970012523233890533447265625"}, // 2^-50, exact
		{qty("100", "GB"), "GB", "100"},
		{qty("1", "day"), "s", "86400"},
		{qty("90", "min"), "hr", "1.5"},
		{qty("1", "week"), "day", "7"},
		{qty("250", "ms"), "s", "0.25"},
		{qty("1", "s"), "min", "0.016666666666666666666666666666666666666666666666666666666667"}, // 1/60, rounded
		{num("1000"), "MB", "1000"}, // bare number: already in the target unit
		{qty("2", "GB"), "", "2"},
		{qty("2", "GB"), "float", "2"},
		{qty("-3", "hr"), "min", "-180"},
		{qty("0", "TB"), "B", "0"},
	} {
		got, err := ConvertUnits(tc.n, tc.target)
		if err != nil || got.String() != tc.want {
			t.Errorf("ConvertUnits(%s, %q) = %s, %v; want %s", tc.n, tc.target, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		n      Number
		target string
		want   string
	}{
		{qty("1", "day"), "MB", "convert: cannot convert day (time) to MB (bytes)"},
		{qty("1", "GB"), "s", "convert: cannot convert GB (bytes) to s (time)"},
		{qty("1", "GB"), "furlongs", `convert: unknown unit "furlongs"`},
		{Number{Value: decimal.NewFromInt(1), Unit: "parsec"}, "MB", `convert: unknown unit "parsec"`},
	} {
		_, err := ConvertUnits(tc.n, tc.target)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ConvertUnits(%s, %q):\n got %v\nwant %s", tc.n, tc.target, err, tc.want)
		}
	}
}

func TestParseDecimalBounds(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"1e100", "1e100"},
		{"1e-100", "1e-100"},
		{"1e0100", "1e100"},
		{"1.", "1"},
		{".5", "0.5"},
		{"-0", "0"},
		{strings.Repeat("9", 64), strings.Repeat("9", 64)},
	} {
		d, err := parseDecimal(tc.in)
		if err != nil || !d.Equal(decimal.RequireFromString(tc.want)) {
			t.Errorf("parseDecimal(%q) = %s, %v; want %s", tc.in, d, err, tc.want)
		}
	}
	for _, in := range []string{"1e101", "1e-101", "1e99999999999999999999", "1e", "e5", ".", "1.2.3", "0x10", "1e5.5", "--1", "_1", "1_", "1._5", "NaN", "Infinity"} {
		if d, err := parseDecimal(in); err == nil {
			t.Errorf("parseDecimal(%q) = %s, want error", in, d)
		}
	}
}
