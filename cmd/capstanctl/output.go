package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// jsonOut is -o json: the response message as protojson, every field present
// (zero values included), so scripts see the same keys on every answer.
var jsonOut = protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}

func (g *globals) json() bool { return g.output == "json" }

// printJSON writes m as protojson.
func (g *globals) printJSON(m proto.Message) error {
	b, err := jsonOut.Marshal(m)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("encoding the answer: %w", err)}
	}
	b = append(b, '\n')
	_, err = g.stdout.Write(b)
	return err
}

// jsonLine is -o json for a stream: one message per line, as jsonOut
// otherwise.
var jsonLine = protojson.MarshalOptions{EmitUnpopulated: true}

// printJSONLine writes m as protojson on one line.
func (g *globals) printJSONLine(m proto.Message) error {
	b, err := jsonLine.Marshal(m)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("encoding the answer: %w", err)}
	}
	b = append(b, '\n')
	_, err = g.stdout.Write(b)
	return err
}

// table is a tabwriter with a header row.
type table struct{ w *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{w: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		if c == "" {
			cols[i] = "-"
		}
	}
	fmt.Fprintln(t.w, strings.Join(cols, "\t"))
}

func (t *table) flush() { t.w.Flush() }

// lineTable is a table for a stream: each row is written as it comes, so
// columns are padded to the widest value seen so far (at least the width
// given for the column) rather than aligned across the whole output. The
// header is written with the first row, or by done when there was none.
type lineTable struct {
	w      io.Writer
	header []string
	widths []int
	rows   int
}

func newLineTable(w io.Writer, header []string, minWidths ...int) *lineTable {
	t := &lineTable{w: w, header: header, widths: make([]int, len(header))}
	for i, h := range header {
		t.widths[i] = len(h)
		if i < len(minWidths) && minWidths[i] > t.widths[i] {
			t.widths[i] = minWidths[i]
		}
	}
	return t
}

func (t *lineTable) row(cols ...string) {
	if t.rows == 0 {
		t.write(t.header)
	}
	t.rows++
	for i, c := range cols {
		if c == "" {
			cols[i] = "-"
		}
	}
	t.write(cols)
}

func (t *lineTable) write(cols []string) {
	var b strings.Builder
	for i, c := range cols {
		if i == len(cols)-1 {
			b.WriteString(c)
			break
		}
		if i < len(t.widths) && len(c) > t.widths[i] {
			t.widths[i] = len(c)
		}
		b.WriteString(c)
		if i < len(t.widths) {
			b.WriteString(strings.Repeat(" ", t.widths[i]-len(c)))
		}
		b.WriteString("  ")
	}
	b.WriteByte('\n')
	io.WriteString(t.w, b.String())
}

// done writes the header of a table that got no rows.
func (t *lineTable) done() {
	if t.rows == 0 {
		t.write(t.header)
	}
}

// fields prints name/value pairs, one per line, names in capitals.
func fields(w io.Writer, pairs ...string) {
	t := newTable(w)
	for i := 0; i+1 < len(pairs); i += 2 {
		t.row(pairs[i], pairs[i+1])
	}
	t.flush()
}

// when renders an instant in UTC; unset is never.
func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "never"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// orUnlimited renders an amount where empty means unlimited.
func orUnlimited(s string) string {
	if s == "" {
		return "unlimited"
	}
	return s
}

func list(s []string) string { return strings.Join(s, ",") }

func eventTypes(evs []*capstanv1.Event) string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return strings.Join(out, ",")
}

// replayed notes an idempotent replay on stderr, so stdout stays the answer.
func (g *globals) replayed(dup bool) {
	if dup {
		fmt.Fprintln(g.stderr, "note: replay of an earlier call with the same --idempotency-key; nothing changed again")
	}
}
