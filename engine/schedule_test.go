package engine

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// at parses an RFC 3339 timestamp into Unix ms.
func schAt(t testing.TB, s string) int64 {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("bad timestamp %q: %v", s, err)
	}
	return v.UnixMilli()
}

// rfc formats Unix ms as RFC 3339 (UTC, fraction only when non-zero).
func schRFC(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano) }

func schMust(t testing.TB, s string) Schedule {
	t.Helper()
	sch, err := ParseSchedule(s)
	if err != nil {
		t.Fatalf("ParseSchedule(%q): %v", s, err)
	}
	return sch
}

func TestScheduleParse(t *testing.T) {
	valid := []struct{ in, canon string }{
		{"monthly:1", "monthly:1"},
		{"monthly:31", "monthly:31"},
		{"monthly:07", "monthly:7"},
		{"monthly:last", "monthly:last"},
		{"weekly:mon", "weekly:mon"},
		{"weekly:sun", "weekly:sun"},
		{"weekly:Monday", "weekly:mon"},
		{"weekly:SAT", "weekly:sat"},
		{"nth_weekday:2:tue", "nth_weekday:2:tue"},
		{"nth_weekday:4:friday", "nth_weekday:4:fri"},
		{"yearly:1-1", "yearly:1-1"},
		{"yearly:02-29", "yearly:2-29"},
		{"yearly:12-31", "yearly:12-31"},
		{"quarterly:1", "quarterly:1"},
		{"quarterly:31", "quarterly:31"},
	}
	for _, c := range valid {
		s, err := ParseSchedule(c.in)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", c.in, err)
			continue
		}
		if got := s.String(); got != c.canon {
			t.Errorf("ParseSchedule(%q).String() = %q, want %q", c.in, got, c.canon)
		}
		if back := schMust(t, s.String()); back != s {
			t.Errorf("%q: String() does not round-trip", c.in)
		}
	}

	invalid := []struct{ in, want string }{
		{"fortnightly:3", `reset_sch "fortnightly:3": unknown schedule kind "fortnightly" (want monthly, weekly, nth_weekday, yearly, quarterly)`},
		{"daily", `reset_sch "daily": unknown schedule kind "daily"`},
		{"Monthly:1", `unknown schedule kind "Monthly"`},
		{"", `reset_sch "": empty schedule`},
		{"monthly", `reset_sch "monthly": want monthly:N (N 1..31) or monthly:last`},
		{"monthly:", `want monthly:N`},
		{"monthly:0", `reset_sch "monthly:0": day 0 out of range (want 1..31 or last)`},
		{"monthly:32", `day 32 out of range`},
		{"monthly:-1", `invalid day "-1"`},
		{"monthly:+1", `invalid day "+1"`},
		{"monthly: 1", `invalid day " 1"`},
		{"monthly:first", `invalid day "first"`},
		{"monthly:1:2", `want monthly:N`},
		{"weekly", `want weekly:DAY`},
		{"weekly:xyz", `reset_sch "weekly:xyz": unknown weekday "xyz" (want mon, tue, wed, thu, fri, sat or sun)`},
		{"weekly:mon:tue", `want weekly:DAY`},
		{"nth_weekday:2", `want nth_weekday:N:DAY`},
		{"nth_weekday:0:tue", `occurrence 0 out of range (want 1..4)`},
		{"nth_weekday:5:tue", `occurrence 5 out of range (want 1..4)`},
		{"nth_weekday:last:tue", `invalid occurrence "last" (want 1..4)`},
		{"nth_weekday:2:tues", `unknown weekday "tues"`},
		{"yearly:2", `invalid date "2" (want M-D`},
		{"yearly:13-1", `month 13 out of range (want 1..12)`},
		{"yearly:2-30", `reset_sch "yearly:2-30": day 30 out of range for month 2 (want 1..29)`},
		{"yearly:4-31", `day 31 out of range for month 4 (want 1..30)`},
		{"yearly:1-0", `day 0 out of range for month 1 (want 1..31)`},
		{"yearly:1-x", `invalid day "x"`},
		{"quarterly:0", `day 0 out of range (want 1..31)`},
		{"quarterly:32", `day 32 out of range`},
		{"quarterly", `want quarterly:D`},
	}
	for _, c := range invalid {
		s, err := ParseSchedule(c.in)
		if err == nil {
			t.Errorf("ParseSchedule(%q) = %v, want error containing %q", c.in, s, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSchedule(%q) error = %q, want it to contain %q", c.in, err, c.want)
		}
		if s != (Schedule{}) {
			t.Errorf("ParseSchedule(%q) returned non-zero Schedule with error", c.in)
		}
	}
}

func TestScheduleNextPrev(t *testing.T) {
	cases := []struct {
		sch, t, prev, next string
	}{
		// monthly:1 — the product example.
		{"monthly:1", "2026-03-02T10:00:00Z", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
		{"monthly:1", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
		{"monthly:1", "2026-02-28T23:59:59.999Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"},
		{"monthly:1", "2026-12-15T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"monthly:15", "2026-01-10T00:00:00Z", "2025-12-15T00:00:00Z", "2026-01-15T00:00:00Z"},
		// monthly:31 — Jan 31 → Feb 28/29; leap 2028, non-leap 2100.
		{"monthly:31", "2026-01-31T00:00:00Z", "2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z"},
		{"monthly:31", "2026-02-10T00:00:00Z", "2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z"}, // Limitr: prev 2026-01-28
		{"monthly:31", "2028-01-31T12:00:00Z", "2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"monthly:31", "2028-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z"},
		{"monthly:31", "2100-02-10T00:00:00Z", "2100-01-31T00:00:00Z", "2100-02-28T00:00:00Z"},
		{"monthly:31", "2000-02-10T00:00:00Z", "2000-01-31T00:00:00Z", "2000-02-29T00:00:00Z"},
		// monthly:31 in April means April 30.
		{"monthly:31", "2026-04-15T00:00:00Z", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z"}, // Limitr: prev 2026-03-30
		{"monthly:31", "2026-04-30T12:00:00Z", "2026-04-30T00:00:00Z", "2026-05-31T00:00:00Z"},
		{"monthly:30", "2026-02-15T00:00:00Z", "2026-01-30T00:00:00Z", "2026-02-28T00:00:00Z"},
		{"monthly:30", "2026-03-01T00:00:00Z", "2026-02-28T00:00:00Z", "2026-03-30T00:00:00Z"},
		{"monthly:29", "2028-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2028-03-29T00:00:00Z"},
		// monthly:last.
		{"monthly:last", "2026-02-28T00:00:00Z", "2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"},
		{"monthly:last", "2026-02-27T23:59:59.999Z", "2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z"},
		{"monthly:last", "2024-02-28T12:00:00Z", "2024-01-31T00:00:00Z", "2024-02-29T00:00:00Z"},
		{"monthly:last", "2026-04-15T00:00:00Z", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z"}, // Limitr: prev 2026-03-30
		{"monthly:last", "2026-12-31T05:00:00Z", "2026-12-31T00:00:00Z", "2027-01-31T00:00:00Z"},
		{"monthly:last", "2100-03-01T00:00:00Z", "2100-02-28T00:00:00Z", "2100-03-31T00:00:00Z"},
		// weekly: 2026-03-02 and 2026-03-09 are Mondays.
		{"weekly:mon", "2026-03-02T10:00:00Z", "2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z"},
		{"weekly:mon", "2026-03-09T00:00:00Z", "2026-03-09T00:00:00Z", "2026-03-16T00:00:00Z"},
		{"weekly:mon", "2026-03-08T23:59:59.999Z", "2026-03-02T00:00:00Z", "2026-03-09T00:00:00Z"},
		{"weekly:sun", "2026-03-04T08:00:00Z", "2026-03-01T00:00:00Z", "2026-03-08T00:00:00Z"},
		{"weekly:thu", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1970-01-08T00:00:00Z"},
		{"weekly:wed", "1969-12-31T23:00:00Z", "1969-12-31T00:00:00Z", "1970-01-07T00:00:00Z"},
		{"weekly:fri", "2026-12-30T00:00:00Z", "2026-12-25T00:00:00Z", "2027-01-01T00:00:00Z"},
		// nth_weekday: second Tuesdays 2026-02-10, 2026-03-10, 2026-04-14.
		{"nth_weekday:2:tue", "2026-03-05T00:00:00Z", "2026-02-10T00:00:00Z", "2026-03-10T00:00:00Z"},
		{"nth_weekday:2:tue", "2026-03-10T00:00:00Z", "2026-03-10T00:00:00Z", "2026-04-14T00:00:00Z"},
		{"nth_weekday:2:tue", "2026-03-09T23:59:59.999Z", "2026-02-10T00:00:00Z", "2026-03-10T00:00:00Z"},
		{"nth_weekday:1:mon", "2026-06-01T00:00:00Z", "2026-06-01T00:00:00Z", "2026-07-06T00:00:00Z"},
		{"nth_weekday:4:fri", "2027-01-10T00:00:00Z", "2026-12-25T00:00:00Z", "2027-01-22T00:00:00Z"},
		// yearly.
		{"yearly:1-1", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"yearly:1-1", "2026-07-04T12:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"yearly:12-31", "2026-12-30T00:00:00Z", "2025-12-31T00:00:00Z", "2026-12-31T00:00:00Z"},
		// yearly:2-29 clamps to Feb 28 in non-leap years (as Limitr does).
		{"yearly:2-29", "2026-03-01T00:00:00Z", "2026-02-28T00:00:00Z", "2027-02-28T00:00:00Z"},
		{"yearly:2-29", "2027-06-01T00:00:00Z", "2027-02-28T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"yearly:2-29", "2028-02-28T12:00:00Z", "2027-02-28T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"yearly:2-29", "2028-02-29T00:00:00Z", "2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"},
		{"yearly:2-29", "2100-01-01T00:00:00Z", "2099-02-28T00:00:00Z", "2100-02-28T00:00:00Z"},
		{"yearly:2-29", "2100-02-28T00:00:00Z", "2100-02-28T00:00:00Z", "2101-02-28T00:00:00Z"},
		// quarterly: Jan/Apr/Jul/Oct, clamped to the month's end.
		{"quarterly:1", "2026-05-20T00:00:00Z", "2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z"},
		{"quarterly:1", "2026-12-31T23:59:59.999Z", "2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"quarterly:1", "2026-10-01T00:00:00Z", "2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"quarterly:15", "2026-01-10T00:00:00Z", "2025-10-15T00:00:00Z", "2026-01-15T00:00:00Z"},
		{"quarterly:15", "2026-03-31T00:00:00Z", "2026-01-15T00:00:00Z", "2026-04-15T00:00:00Z"},
		{"quarterly:31", "2026-04-10T00:00:00Z", "2026-01-31T00:00:00Z", "2026-04-30T00:00:00Z"},
		{"quarterly:31", "2026-05-01T00:00:00Z", "2026-04-30T00:00:00Z", "2026-07-31T00:00:00Z"},
	}
	for _, c := range cases {
		s := schMust(t, c.sch)
		ts := schAt(t, c.t)
		if got := schRFC(s.Prev(ts)); got != c.prev {
			t.Errorf("%s.Prev(%s) = %s, want %s", c.sch, c.t, got, c.prev)
		}
		if got := schRFC(s.Next(ts)); got != c.next {
			t.Errorf("%s.Next(%s) = %s, want %s", c.sch, c.t, got, c.next)
		}
	}
}

func TestScheduleZeroValue(t *testing.T) {
	var z Schedule
	if z.String() != "" {
		t.Errorf("zero Schedule String() = %q, want empty", z.String())
	}
	defer func() {
		if recover() == nil {
			t.Error("Next on the zero Schedule did not panic")
		}
	}()
	z.Next(0)
}

// TestPeriodProductFacts pins the behaviour the product documents.
func TestPeriodProductFacts(t *testing.T) {
	weekly := schMust(t, "weekly:mon")
	monthly := schMust(t, "monthly:1")
	start := schAt(t, "2026-03-02T10:00:00Z") // a Monday
	if got := schRFC(Period{Sch: &weekly}.NextReset(start)); got != "2026-03-09T00:00:00Z" {
		t.Errorf("weekly:mon period from 2026-03-02T10:00Z ends %s, want 2026-03-09T00:00:00Z", got)
	}
	if got := schRFC(Period{Sch: &monthly}.NextReset(start)); got != "2026-04-01T00:00:00Z" {
		t.Errorf("monthly:1 period from 2026-03-02T10:00Z ends %s, want 2026-04-01T00:00:00Z", got)
	}
}

func TestPeriodAdvanceSchedule(t *testing.T) {
	cases := []struct {
		sch, start, now string
		newStart        string
		periods         int64
		reset           bool
	}{
		{"monthly:1", "2026-01-15T10:00:00Z", "2026-01-31T23:59:59.999Z", "2026-01-15T10:00:00Z", 0, false},
		{"monthly:1", "2026-01-15T10:00:00Z", "2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z", 1, true},
		{"monthly:1", "2026-01-15T10:00:00Z", "2026-04-20T00:00:00Z", "2026-04-01T00:00:00Z", 3, true},
		{"monthly:1", "2026-01-01T00:00:00Z", "2028-01-01T00:00:00Z", "2028-01-01T00:00:00Z", 24, true},
		{"monthly:1", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z", 0, false},
		{"monthly:31", "2026-01-31T00:00:00Z", "2026-05-01T00:00:00Z", "2026-04-30T00:00:00Z", 3, true},
		{"monthly:last", "2027-12-31T00:00:00Z", "2028-03-01T00:00:00Z", "2028-02-29T00:00:00Z", 2, true},
		{"weekly:mon", "2026-03-02T10:00:00Z", "2026-03-08T23:59:59.999Z", "2026-03-02T10:00:00Z", 0, false},
		{"weekly:mon", "2026-03-02T10:00:00Z", "2026-03-09T00:00:00Z", "2026-03-09T00:00:00Z", 1, true},
		{"weekly:mon", "2026-03-02T10:00:00Z", "2026-03-30T09:00:00Z", "2026-03-30T00:00:00Z", 4, true},
		{"weekly:mon", "2026-03-02T10:00:00Z", "2027-03-01T00:00:00Z", "2027-03-01T00:00:00Z", 52, true},
		{"nth_weekday:2:tue", "2026-02-10T00:00:00Z", "2026-04-14T00:00:00Z", "2026-04-14T00:00:00Z", 2, true},
		{"nth_weekday:2:tue", "2026-02-10T00:00:00Z", "2026-04-13T00:00:00Z", "2026-03-10T00:00:00Z", 1, true},
		{"yearly:2-29", "2027-03-01T00:00:00Z", "2030-03-01T00:00:00Z", "2030-02-28T00:00:00Z", 3, true},
		{"yearly:2-29", "2027-03-01T00:00:00Z", "2028-02-28T23:00:00Z", "2027-03-01T00:00:00Z", 0, false},
		{"quarterly:1", "2025-11-20T00:00:00Z", "2026-07-01T00:00:00Z", "2026-07-01T00:00:00Z", 3, true},
		{"quarterly:31", "2026-01-31T00:00:00Z", "2027-01-31T00:00:00Z", "2027-01-31T00:00:00Z", 4, true},
		// now before start (clock skew): nothing happens.
		{"monthly:1", "2026-03-05T00:00:00Z", "2026-02-05T00:00:00Z", "2026-03-05T00:00:00Z", 0, false},
	}
	for _, c := range cases {
		s := schMust(t, c.sch)
		p := Period{Sch: &s}
		ns, n, r := p.Advance(schAt(t, c.start), schAt(t, c.now))
		if schRFC(ns) != c.newStart || n != c.periods || r != c.reset {
			t.Errorf("%s Advance(%s, %s) = (%s, %d, %v), want (%s, %d, %v)",
				c.sch, c.start, c.now, schRFC(ns), n, r, c.newStart, c.periods, c.reset)
		}
	}
}

func TestPeriodAdvanceInc(t *testing.T) {
	const day = int64(24 * time.Hour / time.Millisecond)
	cases := []struct {
		inc            int64
		start, now     string
		newStart       string
		periods        int64
		reset          bool
		nextResetStart string // NextReset(newStart)
	}{
		{7 * day, "2026-01-01T00:00:00Z", "2026-01-07T23:59:59.999Z", "2026-01-01T00:00:00Z", 0, false, "2026-01-08T00:00:00Z"},
		// The boundary instant starts the new period (Limitr waits until now-started > inc).
		{7 * day, "2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z", "2026-01-08T00:00:00Z", 1, true, "2026-01-15T00:00:00Z"},
		{7 * day, "2026-01-01T00:00:00Z", "2026-01-28T23:59:59.999Z", "2026-01-22T00:00:00Z", 3, true, "2026-01-29T00:00:00Z"},
		{7 * day, "2026-01-01T00:00:00Z", "2026-01-29T00:00:00Z", "2026-01-29T00:00:00Z", 4, true, "2026-02-05T00:00:00Z"},
		// The grid stays anchored at start (here 10:00), never snapping to now.
		{30 * day, "2026-01-01T10:00:00Z", "2026-06-15T08:30:00Z", "2026-05-31T10:00:00Z", 5, true, "2026-06-30T10:00:00Z"},
		{1000, "1970-01-01T00:00:00Z", "1970-01-01T00:00:02.5Z", "1970-01-01T00:00:02Z", 2, true, "1970-01-01T00:00:03Z"},
		// now before start: nothing happens.
		{day, "2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", 0, false, "2026-01-03T00:00:00Z"},
	}
	for _, c := range cases {
		p := Period{Inc: c.inc}
		ns, n, r := p.Advance(schAt(t, c.start), schAt(t, c.now))
		if schRFC(ns) != c.newStart || n != c.periods || r != c.reset {
			t.Errorf("Inc %d Advance(%s, %s) = (%s, %d, %v), want (%s, %d, %v)",
				c.inc, c.start, c.now, schRFC(ns), n, r, c.newStart, c.periods, c.reset)
		}
		if got := schRFC(p.NextReset(ns)); got != c.nextResetStart {
			t.Errorf("Inc %d NextReset(%s) = %s, want %s", c.inc, schRFC(ns), got, c.nextResetStart)
		}
	}
}

func TestPeriodNeverAndPrecedence(t *testing.T) {
	start, now := schAt(t, "2026-01-01T00:00:00Z"), schAt(t, "2030-01-01T00:00:00Z")
	for _, p := range []Period{{}, {Inc: -5}, {Sch: &Schedule{}}} {
		if p.Resets() {
			t.Errorf("%+v.Resets() = true, want false", p)
		}
		if ns, n, r := p.Advance(start, now); ns != start || n != 0 || r {
			t.Errorf("%+v.Advance = (%d, %d, %v), want (start, 0, false)", p, ns, n, r)
		}
		if got := p.NextReset(start); got != 0 {
			t.Errorf("%+v.NextReset = %d, want 0", p, got)
		}
	}
	// reset_sch wins over reset_inc, as in Limitr.
	s := schMust(t, "yearly:1-1")
	p := Period{Inc: 1000, Sch: &s}
	if !p.Resets() {
		t.Fatal("Resets() = false")
	}
	ns, n, r := p.Advance(start, now)
	if schRFC(ns) != "2030-01-01T00:00:00Z" || n != 4 || !r {
		t.Errorf("Advance = (%s, %d, %v), want (2030-01-01T00:00:00Z, 4, true)", schRFC(ns), n, r)
	}
	if got := schRFC(p.NextReset(start)); got != "2027-01-01T00:00:00Z" {
		t.Errorf("NextReset = %s, want 2027-01-01T00:00:00Z", got)
	}
}

func schPropertySchedules() []string {
	return []string{
		"monthly:1", "monthly:15", "monthly:28", "monthly:29", "monthly:30", "monthly:31", "monthly:last",
		"weekly:mon", "weekly:wed", "weekly:sun",
		"nth_weekday:1:mon", "nth_weekday:2:tue", "nth_weekday:4:sun",
		"yearly:1-1", "yearly:2-29", "yearly:12-31", "yearly:6-30",
		"quarterly:1", "quarterly:30", "quarterly:31",
	}
}

// schIsBoundaryDay is an independent, obviously-correct statement of each schedule.
func schIsBoundaryDay(t *testing.T, sch string, d time.Time) bool {
	y, m, day := d.Date()
	dim := schDaysIn(y, m)
	var n, n2 int
	var kind, rest string
	kind, rest, _ = strings.Cut(sch, ":")
	wd := func(name string) time.Weekday {
		w, ok := schParseWeekday(name)
		if !ok {
			t.Fatalf("bad weekday %q", name)
		}
		return w
	}
	num := func(s string) int {
		v, ok := schParseSmall(s)
		if !ok {
			t.Fatalf("bad number %q", s)
		}
		return v
	}
	switch kind {
	case "monthly":
		if rest == "last" {
			return day == dim
		}
		n = num(rest)
		return day == min(n, dim)
	case "weekly":
		return d.Weekday() == wd(rest)
	case "nth_weekday":
		a, b, _ := strings.Cut(rest, ":")
		return d.Weekday() == wd(b) && (day-1)/7 == num(a)-1
	case "yearly":
		a, b, _ := strings.Cut(rest, "-")
		n, n2 = num(a), num(b)
		return int(m) == n && day == min(n2, dim)
	case "quarterly":
		n = num(rest)
		return (m-1)%3 == 0 && day == min(n, dim)
	}
	t.Fatalf("unknown schedule %q", sch)
	return false
}

// TestScheduleProperties checks Prev/Next invariants on random instants over
// 2000–2100, and against a day-by-day reference for a subset.
func TestScheduleProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(20260302, 1))
	lo := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	hi := time.Date(2100, 12, 31, 0, 0, 0, 0, time.UTC).UnixMilli()
	const day = int64(24 * time.Hour / time.Millisecond)

	for _, name := range schPropertySchedules() {
		s := schMust(t, name)
		for i := range 2000 {
			ts := lo + rng.Int64N(hi-lo)
			if i%4 == 0 { // land exactly on midnights often
				ts -= ts % day
			}
			prev, next := s.Prev(ts), s.Next(ts)
			if !(prev <= ts && ts < next) {
				t.Fatalf("%s at %s: Prev %s, Next %s: want Prev <= t < Next", name, schRFC(ts), schRFC(prev), schRFC(next))
			}
			if prev%day != 0 || next%day != 0 {
				t.Fatalf("%s at %s: boundaries %s, %s not at 00:00 UTC", name, schRFC(ts), schRFC(prev), schRFC(next))
			}
			if got := s.Next(prev); got <= ts || got != next {
				t.Fatalf("%s at %s: Next(Prev(t)) = %s, want %s", name, schRFC(ts), schRFC(got), schRFC(next))
			}
			if got := s.Prev(next); got != next {
				t.Fatalf("%s at %s: Prev(Next(t)) = %s, want %s", name, schRFC(ts), schRFC(got), schRFC(next))
			}
			if got := s.Next(prev - 1); got != prev {
				t.Fatalf("%s at %s: Next(Prev(t)-1) = %s, want %s", name, schRFC(ts), schRFC(got), schRFC(prev))
			}
			if got := s.Prev(next - 1); got != prev {
				t.Fatalf("%s at %s: Prev(Next(t)-1) = %s, want %s", name, schRFC(ts), schRFC(got), schRFC(prev))
			}
			if i%10 != 0 {
				continue
			}
			// Reference: walk day by day.
			dayStart := time.UnixMilli(ts - ts%day).UTC()
			ref := dayStart
			for !schIsBoundaryDay(t, name, ref) {
				ref = ref.AddDate(0, 0, -1)
			}
			if ref.UnixMilli() != prev {
				t.Fatalf("%s at %s: Prev = %s, reference %s", name, schRFC(ts), schRFC(prev), schRFC(ref.UnixMilli()))
			}
			ref = dayStart.AddDate(0, 0, 1)
			for !schIsBoundaryDay(t, name, ref) {
				ref = ref.AddDate(0, 0, 1)
			}
			if ref.UnixMilli() != next {
				t.Fatalf("%s at %s: Next = %s, reference %s", name, schRFC(ts), schRFC(next), schRFC(ref.UnixMilli()))
			}
		}
	}
}

// TestPeriodAdvanceProperties checks Advance against stepping Next one boundary
// at a time (schedules) and against the grid definition (Inc).
func TestPeriodAdvanceProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	lo := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	hi := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	const day = int64(24 * time.Hour / time.Millisecond)

	for _, name := range schPropertySchedules() {
		s := schMust(t, name)
		p := Period{Sch: &s}
		for range 300 {
			start := lo + rng.Int64N(hi-lo)
			now := start + rng.Int64N(3*366*day)
			var want int64
			b := s.Next(start)
			for ; b <= now; b = s.Next(b) {
				want++
			}
			ns, n, r := p.Advance(start, now)
			if n != want || r != (want > 0) {
				t.Fatalf("%s Advance(%s, %s) = (%s, %d, %v), want %d periods", name, schRFC(start), schRFC(now), schRFC(ns), n, r, want)
			}
			if r && ns != s.Prev(now) || !r && ns != start {
				t.Fatalf("%s Advance(%s, %s): newStart %s", name, schRFC(start), schRFC(now), schRFC(ns))
			}
			if nr := p.NextReset(ns); nr != b {
				t.Fatalf("%s: NextReset(%s) = %s, want %s", name, schRFC(ns), schRFC(nr), schRFC(b))
			}
		}
	}

	for range 2000 {
		inc := 1 + rng.Int64N(90*day)
		p := Period{Inc: inc}
		start := lo + rng.Int64N(hi-lo)
		now := start + rng.Int64N(50*inc)
		ns, n, r := p.Advance(start, now)
		if !(ns <= now && now < ns+inc) || (ns-start)%inc != 0 || n != (ns-start)/inc || r != (n > 0) {
			t.Fatalf("Inc %d Advance(%d, %d) = (%d, %d, %v)", inc, start, now, ns, n, r)
		}
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range append(schPropertySchedules(), "", "monthly", "weekly:Monday", "yearly:02-29", "nth_weekday:5:tue", "x:y:z") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSchedule(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "reset_sch ") {
				t.Fatalf("error %q lacks the reset_sch prefix", err)
			}
			return
		}
		back, err := ParseSchedule(s.String())
		if err != nil || back != s {
			t.Fatalf("%q: String %q does not round-trip (%v)", in, s.String(), err)
		}
		ts := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC).UnixMilli()
		if !(s.Prev(ts) <= ts && ts < s.Next(ts)) {
			t.Fatalf("%q: Prev/Next do not bracket t", in)
		}
	})
}
