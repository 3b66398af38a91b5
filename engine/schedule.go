package engine

// Reset periods for meters, caps and grants: Limitr's reset_inc / reset_sch.
//
// What Limitr (dev-formata-io/limitr, src/spec/*.stof, and Stof's
// Time.start_of_period) does, for reference:
//
//   - A meter stores `started`. With reset_inc it resets when now-started > inc
//     and then steps `started += inc` until now-started <= inc, so the period
//     start stays on the grid started + k*inc (it never snaps to now). With
//     reset_sch it resets when started < start_of_period(now, sch) and sets
//     started = start_of_period(now, sch).
//   - Caps store `started` (reset_inc, same stepping) and `last_reset`
//     (reset_sch, null until the first calendar reset; the reset fires when
//     last_reset == null || last_reset < start_of_period(now)).
//   - Grants step `granted_on += reset_inc` per elapsed period and apply
//     reset_period (hard / add / rollover) once per period, but at most
//     reset_catchup_cap times (null: no cap); the clock still catches up fully.
//     Calendar (reset_sch) grants and caps reset once, however many periods
//     were missed.
//
// Capstan's Period.Advance reports how many periods elapsed and leaves the
// catch-up policy (reset_catchup_cap, one reset vs one per period) to the
// caller.
//
// Where Capstan deliberately differs from Limitr:
//
//   - Calendar schedules are exact calendar math in UTC. Limitr's monthly:N
//     clamps the day to the length of the *current* month and reuses that
//     clamped day for the previous month, so with monthly:31 (or monthly:last)
//     on 2026-04-15 Limitr's period started 2026-03-30; Capstan says
//     2026-03-31. Likewise monthly:31 on 2026-02-10: Limitr 2026-01-28,
//     Capstan 2026-01-31.
//   - Limitr's "next reset" for a schedule is start_of_period(now + 1 month)
//     (now + 7 days for weekly), which is wrong for yearly and quarterly
//     schedules (it can return the current period's start) and for clamped
//     monthly days. Capstan's Next is the first boundary strictly after t.
//   - Limitr's reset_inc boundary is exclusive (now - started > inc), so at
//     exactly started+inc the old period is still current; Capstan's periods
//     are half-open [start+k*Inc, start+(k+1)*Inc): the boundary instant
//     belongs to the new period, as it does for calendar schedules.
//   - Limitr parses leniently (out-of-range numbers are clamped: monthly:0 is
//     day 1, nth_weekday:9:mon is the 4th Monday, yearly:13-40 is Dec 31, and
//     extra trailing fields are mostly ignored); Capstan rejects them with an
//     error.
//   - A cap or grant in Limitr with reset_sch and last_reset == null resets on
//     first use; in Capstan the first period starts at the creation time and
//     the first reset is at the first boundary after it.
//
// Semantics shared with Limitr: boundaries are 00:00:00.000 UTC of the
// boundary day; a day past the end of a month means that month's last day
// (monthly:31 in April is April 30, quarterly:31 in April is April 30,
// yearly:2-29 is Feb 28 in non-leap years); nth_weekday takes N in 1..4
// (Limitr has no 5th or last occurrence); there is no daily schedule (use a
// reset_inc of 1 day); reset_sch takes precedence over reset_inc.

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

const (
	schDayMs  = int64(24 * time.Hour / time.Millisecond)
	schWeekMs = 7 * schDayMs
)

type scheduleKind uint8

const (
	schNone scheduleKind = iota // zero Schedule: not a valid schedule
	schMonthly
	schWeekly
	schNthWeekday
	schYearly
	schQuarterly
)

// Schedule is a parsed UTC calendar reset schedule (Limitr's reset_sch).
//
// Boundaries are at 00:00:00.000 UTC of the boundary day. A Schedule is a
// small comparable value; the zero Schedule is not a valid schedule (String
// returns "", Next and Prev panic, and a Period holding it never resets).
type Schedule struct {
	kind    scheduleKind
	day     uint8        // monthly, quarterly, yearly: day 1..31; 0 with schMonthly means "last"
	month   uint8        // yearly: 1..12
	nth     uint8        // nth_weekday: 1..4
	weekday time.Weekday // weekly, nth_weekday
}

const schKindList = "monthly, weekly, nth_weekday, yearly, quarterly"

// schWeekdayName is the short lower-case name ParseSchedule accepts and String gives.
func schWeekdayName(w time.Weekday) string {
	return [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}[w]
}

// ParseSchedule parses a reset_sch string:
//
//	monthly:N          day N (1..31) of every month; a month shorter than N resets on its last day
//	monthly:last       last day of every month
//	weekly:DAY         every DAY (mon, tue, wed, thu, fri, sat, sun)
//	nth_weekday:N:DAY  Nth (1..4) DAY of every month
//	yearly:M-D         month M (1..12), day D every year; yearly:2-29 is Feb 28 in non-leap years
//	quarterly:D        day D of Jan, Apr, Jul and Oct, clamped to the month's end
//
// Kinds are lower case; weekday names may also be spelled out and in any
// case ("Monday"), as Limitr accepts, and String gives the short form.
// Errors name the schedule and the problem.
func ParseSchedule(s string) (Schedule, error) {
	fail := func(format string, args ...any) (Schedule, error) {
		return Schedule{}, fmt.Errorf("reset_sch %q: %s", s, fmt.Sprintf(format, args...))
	}
	if s == "" {
		return fail("empty schedule (want one of %s)", schKindList)
	}
	parts := strings.Split(s, ":")
	kind, args := parts[0], parts[1:]
	switch kind {
	case "monthly":
		if len(args) != 1 || args[0] == "" {
			return fail("want monthly:N (N 1..31) or monthly:last")
		}
		if args[0] == "last" {
			return Schedule{kind: schMonthly}, nil
		}
		d, ok := schParseSmall(args[0])
		if !ok {
			return fail("invalid day %q (want 1..31 or last)", args[0])
		}
		if d < 1 || d > 31 {
			return fail("day %d out of range (want 1..31 or last)", d)
		}
		return Schedule{kind: schMonthly, day: uint8(d)}, nil

	case "weekly":
		if len(args) != 1 || args[0] == "" {
			return fail("want weekly:DAY (DAY mon..sun)")
		}
		wd, ok := schParseWeekday(args[0])
		if !ok {
			return fail("unknown weekday %q (want mon, tue, wed, thu, fri, sat or sun)", args[0])
		}
		return Schedule{kind: schWeekly, weekday: wd}, nil

	case "nth_weekday":
		if len(args) != 2 || args[0] == "" || args[1] == "" {
			return fail("want nth_weekday:N:DAY (N 1..4, DAY mon..sun)")
		}
		n, ok := schParseSmall(args[0])
		if !ok {
			return fail("invalid occurrence %q (want 1..4)", args[0])
		}
		if n < 1 || n > 4 {
			return fail("occurrence %d out of range (want 1..4)", n)
		}
		wd, ok := schParseWeekday(args[1])
		if !ok {
			return fail("unknown weekday %q (want mon, tue, wed, thu, fri, sat or sun)", args[1])
		}
		return Schedule{kind: schNthWeekday, nth: uint8(n), weekday: wd}, nil

	case "yearly":
		if len(args) != 1 || args[0] == "" {
			return fail("want yearly:M-D (e.g. yearly:1-1)")
		}
		ms, ds, found := strings.Cut(args[0], "-")
		if !found {
			return fail("invalid date %q (want M-D, e.g. 1-1)", args[0])
		}
		m, ok := schParseSmall(ms)
		if !ok {
			return fail("invalid month %q (want 1..12)", ms)
		}
		if m < 1 || m > 12 {
			return fail("month %d out of range (want 1..12)", m)
		}
		d, ok := schParseSmall(ds)
		if !ok {
			return fail("invalid day %q", ds)
		}
		if maxDay := schDaysIn(2000, time.Month(m)); d < 1 || d > maxDay { // 2000 is a leap year: Feb allows 29
			return fail("day %d out of range for month %d (want 1..%d)", d, m, maxDay)
		}
		return Schedule{kind: schYearly, month: uint8(m), day: uint8(d)}, nil

	case "quarterly":
		if len(args) != 1 || args[0] == "" {
			return fail("want quarterly:D (D 1..31)")
		}
		d, ok := schParseSmall(args[0])
		if !ok {
			return fail("invalid day %q (want 1..31)", args[0])
		}
		if d < 1 || d > 31 {
			return fail("day %d out of range (want 1..31)", d)
		}
		return Schedule{kind: schQuarterly, day: uint8(d)}, nil
	}
	return fail("unknown schedule kind %q (want %s)", kind, schKindList)
}

// schParseSmall parses 1 to 3 ASCII digits (no sign, no spaces).
func schParseSmall(s string) (int, bool) {
	if len(s) == 0 || len(s) > 3 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

func schParseWeekday(s string) (time.Weekday, bool) {
	l := strings.ToLower(s)
	for w := time.Sunday; w <= time.Saturday; w++ {
		if l == schWeekdayName(w) || l == strings.ToLower(w.String()) {
			return w, true
		}
	}
	return 0, false
}

// String returns the canonical form of s, which ParseSchedule accepts and
// maps back to s ("" for the zero Schedule).
func (s Schedule) String() string {
	switch s.kind {
	case schMonthly:
		if s.day == 0 {
			return "monthly:last"
		}
		return "monthly:" + strconv.Itoa(int(s.day))
	case schWeekly:
		return "weekly:" + schWeekdayName(s.weekday)
	case schNthWeekday:
		return "nth_weekday:" + strconv.Itoa(int(s.nth)) + ":" + schWeekdayName(s.weekday)
	case schYearly:
		return "yearly:" + strconv.Itoa(int(s.month)) + "-" + strconv.Itoa(int(s.day))
	case schQuarterly:
		return "quarterly:" + strconv.Itoa(int(s.day))
	}
	return ""
}

// valid reports whether s came from ParseSchedule (is not the zero Schedule).
func (s Schedule) valid() bool { return s.kind != schNone }

// Next returns the first boundary strictly after t (ms). It panics on the
// zero Schedule.
func (s Schedule) Next(t int64) int64 {
	if s.kind == schWeekly {
		return s.prevWeekly(t) + schWeekMs
	}
	p := s.index(t)
	if b := s.boundary(p); b > t {
		return b
	}
	return s.boundary(p + 1)
}

// Prev returns the last boundary at or before t (ms): the start of the
// period containing t. It panics on the zero Schedule.
func (s Schedule) Prev(t int64) int64 {
	if s.kind == schWeekly {
		return s.prevWeekly(t)
	}
	p := s.index(t)
	if b := s.boundary(p); b <= t {
		return b
	}
	return s.boundary(p - 1)
}

// count returns how many boundaries lie in (a, b].
func (s Schedule) count(a, b int64) int64 {
	first, last := s.Next(a), s.Prev(b)
	if first > last {
		return 0
	}
	if s.kind == schWeekly {
		return (last-first)/schWeekMs + 1
	}
	// Each period's boundary lies in its own anchor month/quarter/year, so the
	// period index of a boundary is the index it was built from.
	return s.index(last) - s.index(first) + 1
}

// prevWeekly is the last 00:00 UTC on s.weekday at or before t.
func (s Schedule) prevWeekly(t int64) int64 {
	day := schFloorDiv(t, schDayMs)
	wd := (day + 4) % 7 // 1970-01-01 was a Thursday
	if wd < 0 {
		wd += 7
	}
	back := (wd - int64(s.weekday) + 7) % 7
	return (day - back) * schDayMs
}

// index numbers the periods of a month-based schedule: the month (monthly,
// nth_weekday), quarter (quarterly) or year (yearly) containing t. Boundary p
// always falls inside period p's month, quarter or year.
func (s Schedule) index(t int64) int64 {
	y, m, _ := time.UnixMilli(t).UTC().Date()
	switch s.kind {
	case schMonthly, schNthWeekday:
		return int64(y)*12 + int64(m-1)
	case schQuarterly:
		return int64(y)*4 + int64(m-1)/3
	case schYearly:
		return int64(y)
	}
	panic("engine: Schedule used without ParseSchedule (zero Schedule)")
}

// boundary returns the reset instant of period p (see index).
func (s Schedule) boundary(p int64) int64 {
	var y int
	var m time.Month
	switch s.kind {
	case schMonthly, schNthWeekday:
		y, m = int(schFloorDiv(p, 12)), time.Month(p-schFloorDiv(p, 12)*12+1)
	case schQuarterly:
		y, m = int(schFloorDiv(p, 4)), time.Month((p-schFloorDiv(p, 4)*4)*3+1)
	case schYearly:
		y, m = int(p), time.Month(s.month)
	default:
		panic("engine: Schedule used without ParseSchedule (zero Schedule)")
	}
	var d int
	switch {
	case s.kind == schNthWeekday:
		first := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC).Weekday()
		d = 1 + (int(s.weekday)-int(first)+7)%7 + 7*(int(s.nth)-1) // nth <= 4: always in the month
	case s.day == 0: // monthly:last
		d = schDaysIn(y, m)
	default:
		d = min(int(s.day), schDaysIn(y, m))
	}
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).UnixMilli()
}

// schDaysIn returns the number of days in month m of year y.
func schDaysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func schFloorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// Period is how a meter/cap/grant resets: never, every Inc ms, or on a Schedule.
//
// Sch takes precedence over Inc when both are set (Limitr: "When set,
// reset_inc is ignored"). A Period with Inc <= 0 and no (or a zero) Sch never
// resets. Limitr's default of 30 days for `resets: true` without reset_inc or
// reset_sch is the caller's to apply (Inc = 30 days).
type Period struct {
	Inc int64     // >0: fixed length in ms
	Sch *Schedule // non-nil: calendar schedule
}

func (p Period) sch() (Schedule, bool) {
	if p.Sch != nil && p.Sch.valid() {
		return *p.Sch, true
	}
	return Schedule{}, false
}

// Resets reports whether p ever resets.
func (p Period) Resets() bool {
	_, ok := p.sch()
	return ok || p.Inc > 0
}

// Advance, given the start of the current period and now, says whether one or
// more boundaries passed and returns the start of the period containing now and
// how many periods elapsed (boundaries crossed, for rollover catch-up; the
// caller applies any reset_catchup_cap).
//
// For Inc, periods are the half-open intervals [start+k*Inc, start+(k+1)*Inc):
// like Limitr (started += inc per elapsed period), the new start snaps to the
// grid start+k*Inc, never to now. Unlike Limitr, a boundary instant belongs to
// the new period (Limitr resets only once now - started > inc).
//
// For Sch, a reset happens when Sch.Next(start) <= now, and the new start is
// Sch.Prev(now) (Limitr's start_of_period(now)); start itself need not be on a
// boundary (a meter created mid-period).
//
// When nothing passed (including now < start, or a Period that never resets)
// it returns start, 0, false.
func (p Period) Advance(start, now int64) (newStart int64, periods int64, reset bool) {
	if now < start {
		return start, 0, false
	}
	if s, ok := p.sch(); ok {
		if s.Next(start) > now {
			return start, 0, false
		}
		return s.Prev(now), s.count(start, now), true
	}
	if p.Inc <= 0 {
		return start, 0, false
	}
	k := (now - start) / p.Inc
	if k == 0 {
		return start, 0, false
	}
	return start + k*p.Inc, k, true
}

// NextReset returns when the period that started at start ends: start+Inc,
// or the first schedule boundary strictly after start (0 if it never resets).
// For an up-to-date answer pass the start returned by Advance.
func (p Period) NextReset(start int64) int64 {
	if s, ok := p.sch(); ok {
		return s.Next(start)
	}
	if p.Inc > 0 {
		return start + p.Inc
	}
	return 0
}
