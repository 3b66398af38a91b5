package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/shopspring/decimal"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	"github.com/capstanhq/capstan/rpc"
)

// eventRow is one row of `capstanctl events`.
type eventRow struct {
	index   uint64
	seq     uint32
	time    string
	cust    string
	typ     string
	details string
}

// eventRows parses the table events prints (header first).
func eventRows(t *testing.T, out string) []eventRow {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) == 0 || strings.Join(strings.Fields(lines[0]), " ") != "CURSOR TIME CUSTOMER TYPE DETAILS" {
		t.Fatalf("no events header:\n%s", out)
	}
	var rs []eventRow
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 5 {
			t.Fatalf("short events row %q in:\n%s", l, out)
		}
		i, s, ok := strings.Cut(f[0], ":")
		index, err1 := strconv.ParseUint(i, 10, 64)
		seq, err2 := strconv.ParseUint(s, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("bad cursor %q in:\n%s", f[0], out)
		}
		rs = append(rs, eventRow{index, uint32(seq), f[1], f[2], f[3], strings.Join(f[4:], " ")})
	}
	return rs
}

// uniqueID is prefix and a number no earlier call returned, so the tests can
// run again (-count) against the package's one server.
func uniqueID(prefix string) string {
	return fmt.Sprintf("%s_%d", prefix, idSeq.Add(1))
}

var idSeq atomic.Int64

func (r eventRow) cursor() string { return fmt.Sprintf("%d:%d", r.index, r.seq) }

func (r eventRow) less(o eventRow) bool {
	return r.index < o.index || (r.index == o.index && r.seq < o.seq)
}

func rowTypes(rs []eventRow) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.typ
	}
	return out
}

func rowCursors(rs []eventRow) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.cursor()
	}
	return out
}

func TestEventsUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"events"}, "capstanctl events: --customer or --shard is required; usage: capstanctl events --customer ID | --shard N"},
		{[]string{"events", "--customer", "c1", "--shard", "0"}, "capstanctl events: give --customer or --shard, not both"},
		{[]string{"events", "--shard", "0", "--routing-key", "k"}, "capstanctl events: --routing-key picks a customer's shard: give it with --customer"},
		{[]string{"events", "--shard", "x"}, `capstanctl events: invalid value "x" for flag -shard`},
		{[]string{"events", "--customer", "c1", "c2"}, `capstanctl events: unexpected argument "c2"`},
		{[]string{"events", "--customer", "c1", "-o", "yaml"}, `capstanctl events: -o must be table or json`},
	} {
		// No server listens there: usage errors are found before any call.
		code, out, errs := runCtl(t, append([]string{"--server", "http://127.0.0.1:1"}, tc.args...)...)
		if code != 2 || out != "" || !strings.HasPrefix(errs, tc.want) {
			t.Errorf("%q: exit %d, want 2\nstdout: %s\nstderr: %s\nwant prefix: %s", tc.args, code, out, errs, tc.want)
		}
	}
	for _, bad := range []string{"x", "5", "5:", ":0", "5:x", "-1:0", "5:-1", "5:0:1", "5:4294967296", "18446744073709551616:0"} {
		code, out, errs := runCtl(t, "--server", "http://127.0.0.1:1", "events", "--customer", "c1", "--after", bad)
		want := fmt.Sprintf("capstanctl events: invalid value %q for flag -after: want a cursor INDEX:SEQ", bad)
		if code != 2 || out != "" || !strings.HasPrefix(errs, want) {
			t.Errorf("--after %q: exit %d, want 2\nstderr: %s", bad, code, errs)
		}
	}

	code, out, _ := runCtl(t, "help")
	if code != 0 || !strings.Contains(out, "\nEvents:\n  events ") {
		t.Errorf("capstanctl help lacks events:\n%s", out)
	}
	code, out, errs := runCtl(t, "events", "--help")
	for _, want := range []string{"Usage: capstanctl events --customer ID | --shard N [--after INDEX:SEQ] [--type T]... [--follow]", "-after INDEX:SEQ", "-follow", "-type type", "out_of_range"} {
		if code != 0 || errs != "" || !strings.Contains(out, want) {
			t.Errorf("events --help lacks %q (exit %d):\n%s\n%s", want, code, out, errs)
		}
	}
}

// TestServerEvents lists a customer's events after three allows, then
// resumes after a cursor, filters by type, prints JSON lines and reads the
// customer's whole shard.
func TestServerEvents(t *testing.T) {
	s := testServer(t)
	cus := uniqueID("cus_ev")
	s.mustCtl(t, "customer", "create", cus, "--plan", "starter")
	for _, v := range []string{"6420", "6420", "6420"} {
		s.mustCtl(t, "allow", cus, "ai_chat", v)
	}

	rs := eventRows(t, s.mustCtl(t, "events", "--customer", cus))
	if got, want := rowTypes(rs), []string{"customer-set", "meter-changed", "meter-changed", "meter-overage"}; !slices.Equal(got, want) {
		t.Fatalf("event types %q, want %q", got, want)
	}
	for i, r := range rs {
		if r.cust != cus {
			t.Errorf("row %d customer %q", i, r.cust)
		}
		if _, err := time.Parse(time.RFC3339, r.time); err != nil {
			t.Errorf("row %d time %q: %v", i, r.time, err)
		}
		if i > 0 && !rs[i-1].less(r) {
			t.Errorf("cursors not increasing: %s then %s", rs[i-1].cursor(), r.cursor())
		}
	}
	for i, want := range map[int][]string{
		1: {"entitlement=ai_chat", "value=0->6420", "limit=16667", "remaining=10247"},
		2: {"value=6420->12840", "remaining=3827"},
		3: {"value=12840->19260", "remaining=-2593", "overage=2593"},
	} {
		for _, w := range want {
			if !slices.Contains(strings.Fields(rs[i].details), w) {
				t.Errorf("row %d (%s) details %q lack %q", i, rs[i].typ, rs[i].details, w)
			}
		}
	}

	// --after a cursor omits it and everything before it.
	after := eventRows(t, s.mustCtl(t, "events", "--customer", cus, "--after", rs[0].cursor()))
	if !slices.Equal(rowCursors(after), rowCursors(rs[1:])) {
		t.Fatalf("--after %s: %q, want %q", rs[0].cursor(), rowCursors(after), rowCursors(rs[1:]))
	}
	// After the last one there is nothing: the header alone, exit 0.
	if out := s.mustCtl(t, "events", "--customer", cus, "--after", rs[3].cursor()); len(eventRows(t, out)) != 0 {
		t.Fatalf("--after the last cursor:\n%s", out)
	}

	// --type keeps only the types given (repeatable, or comma-separated).
	over := eventRows(t, s.mustCtl(t, "events", "--customer", cus, "--type", "meter-overage"))
	if len(over) != 1 || over[0].cursor() != rs[3].cursor() {
		t.Fatalf("--type meter-overage: %v", over)
	}
	for _, args := range [][]string{{"--type", "meter-changed", "--type", "meter-overage"}, {"--type", "meter-changed,meter-overage"}} {
		got := eventRows(t, s.mustCtl(t, append([]string{"events", "--customer", cus}, args...)...))
		if !slices.Equal(rowCursors(got), rowCursors(rs[1:])) {
			t.Fatalf("%q: %q, want %q", args, rowCursors(got), rowCursors(rs[1:]))
		}
	}

	// -o json: one SubscribeResponse per line.
	out := s.mustCtl(t, "events", "--customer", cus, "-o", "json")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(rs) {
		t.Fatalf("-o json: %d lines, want %d:\n%s", len(lines), len(rs), out)
	}
	var shard float64
	for i, l := range lines {
		var m struct {
			Shard  float64
			Cursor struct {
				Index string
				Seq   float64
			}
			Time, RequestID string
			PolicyVersion   string
			Event           map[string]any
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("-o json line %d is not JSON: %v\n%s", i, err, l)
		}
		if got := m.Cursor.Index + ":" + strconv.FormatFloat(m.Cursor.Seq, 'f', -1, 64); got != rs[i].cursor() ||
			m.Event["type"] != rs[i].typ || m.Event["customer"] != cus || m.RequestID == "" || m.PolicyVersion != "1" || m.Time == "" {
			t.Fatalf("-o json line %d = %+v, want the table's row %+v", i, m, rs[i])
		}
		if i > 0 && m.Shard != shard {
			t.Fatalf("-o json: events of one customer on shards %v and %v", shard, m.Shard)
		}
		shard = m.Shard
	}
	if meter := decodeJSON(t, lines[3])["event"].(map[string]any)["meter"].(map[string]any); meter["old"] != "12840" || meter["value"] != "19260" {
		t.Fatalf("-o json meter-overage meter = %v", meter)
	}

	// --shard reads every customer's events of the shard, in the same order.
	all := eventRows(t, s.mustCtl(t, "events", "--shard", fmt.Sprint(shard)))
	var mine []eventRow
	for i, r := range all {
		if i > 0 && !all[i-1].less(r) {
			t.Fatalf("--shard: cursors not increasing: %s then %s", all[i-1].cursor(), r.cursor())
		}
		if r.cust == cus {
			mine = append(mine, r)
		}
	}
	if !slices.Equal(rowCursors(mine), rowCursors(rs)) {
		t.Fatalf("--shard %v has %s's events at %q, want %q", shard, cus, rowCursors(mine), rowCursors(rs))
	}

	// Refusals exit 1, missing credentials 2; the key goes with the stream.
	code, _, errs := s.ctl(t, "events", "--shard", "99")
	if code != 1 || !strings.HasPrefix(errs, fmt.Sprintf("capstanctl events: invalid_argument: shard: no shard 99 (the cluster has %d)", testShards)) {
		t.Fatalf("--shard 99: exit %d %s", code, errs)
	}
	code, _, errs = runCtl(t, "--server", s.url, "--api-key", testClientKey, "events", "--customer", cus)
	if code != 1 || !strings.HasPrefix(errs, "capstanctl events: permission_denied: ") {
		t.Fatalf("client key: exit %d %s", code, errs)
	}
	code, _, errs = runCtl(t, "--server", s.url, "--api-key", "", "events", "--customer", cus)
	if code != 2 || !strings.HasPrefix(errs, "capstanctl events: unauthenticated: missing API key") {
		t.Fatalf("no key: exit %d %s", code, errs)
	}

	// --follow with --timeout prints what is kept, waits, and ends with exit 0.
	code, out, errs = s.ctl(t, "events", "--customer", cus, "--after", rs[2].cursor(), "--follow", "--timeout", "1s")
	if f := eventRows(t, out); code != 0 || errs != "" || len(f) != 1 || f[0].cursor() != rs[3].cursor() {
		t.Fatalf("--follow --timeout 1s: exit %d\n%s\n%s", code, out, errs)
	}
}

// TestServerEventsFollow runs `capstanctl events --follow` as a process,
// meters a call while it waits, and interrupts it once the event arrived.
func TestServerEventsFollow(t *testing.T) {
	s := testServer(t)
	cus := uniqueID("cus_evf")
	s.mustCtl(t, "customer", "create", cus, "--plan", "starter")
	s.mustCtl(t, "allow", cus, "ai_chat", "100")
	if got := rowTypes(eventRows(t, s.mustCtl(t, "events", "--customer", cus))); !slices.Equal(got, []string{"customer-set", "meter-changed"}) {
		t.Fatalf("events before following: %q", got)
	}
	total := 100

	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			// Follow after the next-to-last event: the last one is kept, the
			// next one is metered while the stream waits.
			rs := eventRows(t, s.mustCtl(t, "events", "--customer", cus))
			rs = rs[len(rs)-2:]
			// The test binary is capstanctl when CAPSTANCTL_TEST_MAIN=1 (see TestMain).
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "--server", s.url, "--api-key", testAdminKey,
				"events", "--customer", cus, "--after", rs[0].cursor(), "--follow", "-o", format)
			cmd.Env = append(os.Environ(), "CAPSTANCTL_TEST_MAIN=1")
			stderr := &syncBuffer{}
			cmd.Stderr = stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 100)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			var got []string
			next := func(what string) string {
				t.Helper()
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("capstanctl events --follow ended before %s: %v\nstdout so far:\n%s\nstderr:\n%s",
							what, cmd.Wait(), strings.Join(got, "\n"), stderr.String())
					}
					got = append(got, l)
					return l
				case <-ctx.Done():
					t.Fatalf("no %s from capstanctl events --follow\nstdout so far:\n%s\nstderr:\n%s", what, strings.Join(got, "\n"), stderr.String())
				}
				return ""
			}
			if format == "table" {
				if h := next("header"); !strings.HasPrefix(h, "CURSOR") {
					t.Fatalf("header %q", h)
				}
			}
			// What was kept after the cursor comes first ...
			if r := followed(t, format, next("the kept event")); r.cursor() != rs[1].cursor() || r.typ != "meter-changed" {
				t.Fatalf("first followed event %+v, want the one at %s", r, rs[1].cursor())
			}
			// ... then an event metered while it waits.
			value := map[string]int{"table": 7, "json": 11}[format]
			want := []string{fmt.Sprintf("value=%d->%d", total, total+value)}
			if format == "json" {
				want = []string{fmt.Sprintf(`"diff":"%d"`, value), fmt.Sprintf(`"old":"%d"`, total), fmt.Sprintf(`"value":"%d"`, total+value)}
			}
			total += value
			s.mustCtl(t, "allow", cus, "ai_chat", fmt.Sprint(value))
			r := followed(t, format, next("the new event"))
			if r.typ != "meter-changed" || r.cust != cus || !rs[1].less(r) {
				t.Fatalf("new event %+v", r)
			}
			for _, w := range want {
				if !strings.Contains(r.details, w) {
					t.Fatalf("new event %+v, want details with %s", r, w)
				}
			}

			// Ctrl-C ends it cleanly: exit 0, nothing on stderr.
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			for range lines {
			}
			if err := cmd.Wait(); err != nil || stderr.String() != "" {
				t.Fatalf("after SIGINT: %v\nstderr: %s", err, stderr.String())
			}
		})
	}
}

// followed parses a line of events --follow: a table row, or a JSON line
// (details then hold the event's meter as JSON).
func followed(t *testing.T, format, line string) eventRow {
	t.Helper()
	if format == "table" {
		return eventRows(t, "CURSOR TIME CUSTOMER TYPE DETAILS\n"+line+"\n")[0]
	}
	var m struct {
		Cursor struct {
			Index string
			Seq   uint32
		}
		Time  string
		Event struct {
			Type, Customer string
			Meter          json.RawMessage
		}
	}
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("not a JSON line: %v\n%s", err, line)
	}
	index, err := strconv.ParseUint(m.Cursor.Index, 10, 64)
	if err != nil {
		t.Fatalf("cursor index %q: %v", m.Cursor.Index, err)
	}
	var meter map[string]string
	json.Unmarshal(m.Event.Meter, &meter)
	b, _ := json.Marshal(meter)
	return eventRow{index, m.Cursor.Seq, m.Time, m.Event.Customer, m.Event.Type, string(b)}
}

// compactedSource serves the event log of one real FSM as shard 0 through the
// real API handlers; its other Backend methods are never called.
type compactedSource struct {
	rpc.Backend
	f *fsm.FSM
}

func (c *compactedSource) Ready() error        { return nil }
func (c *compactedSource) ShardFor(string) int { return 0 }
func (c *compactedSource) Shards() int         { return 1 }
func (c *compactedSource) ShardEvents(shard int, after fsm.Cursor, max int, customer string) (fsm.EventsPage, error) {
	return c.f.Events(after, max, customer), nil
}

// TestEventsCompactedCursor: a cursor older than what the node keeps is
// refused with exit 1, and the message says which --after resumes. (A real
// server keeps 100000 events per shard, too many to wrap in a test; this one
// keeps 2.)
func TestEventsCompactedCursor(t *testing.T) {
	src := &compactedSource{f: fsm.New(fsm.Options{EventLogSize: 2})}
	var index uint64
	apply := func(cmd *fsm.Command) {
		t.Helper()
		cmd.Timestamp = 1772445600000
		data, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		index++
		if res := src.f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}).(*fsm.Result); res.Err != nil {
			t.Fatalf("%s: %v", cmd.OpName(), res.Err)
		}
	}
	apply(&fsm.Command{RequestID: "pol", SetPolicy: &fsm.PolicyOp{Format: "json", Version: 1, Text: `{"policy": {"credits": {"tok": {}},
		"plans": {"p": {"default": true, "entitlements": {"chat": {"limit": {"credit": "tok", "value": 100}}}}}}}`}})
	apply(&fsm.Command{RequestID: "c1", CreateCustomer: &engine.CreateCustomerRequest{ID: "u1"}}) // index 2
	for i := range 3 {                                                                            // indexes 3-5
		apply(&fsm.Command{RequestID: fmt.Sprint("a", i), Allow: &engine.AllowRequest{Customer: "u1", Entitlement: "chat", Value: decimal.NewFromInt(1)}})
	}
	mux, err := rpc.NewMux(rpc.Config{Backend: src, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()

	code, out, errs := runCtl(t, "--server", srv.URL, "events", "--shard", "0", "--after", "2:0")
	want := regexp.MustCompile(`^capstanctl events: out_of_range: events after index 2 seq 0 are no longer kept on this node; ` +
		`resynchronise from meters and caps, then resume after index (\d+) seq (\d+) \(that is --after (\d+):(\d+)\)\n$`)
	m := want.FindStringSubmatch(errs)
	if code != 1 || out != "" || m == nil || m[1] != m[3] || m[2] != m[4] {
		t.Fatalf("compacted cursor: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	resume := m[3] + ":" + m[4]
	rs := eventRows(t, func() string {
		code, out, errs := runCtl(t, "--server", srv.URL, "events", "--shard", "0", "--after", resume)
		if code != 0 {
			t.Fatalf("--after %s: exit %d\n%s\n%s", resume, code, out, errs)
		}
		return out
	}())
	if len(rs) == 0 || len(rs) > 2 || rs[len(rs)-1].index != 5 || rowTypes(rs)[0] != "meter-changed" {
		t.Fatalf("--after %s: %v", resume, rs)
	}
}
