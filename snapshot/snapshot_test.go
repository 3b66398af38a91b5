package snapshot

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/shopspring/decimal"

	"github.com/capstanhq/capstan/engine"
)

const testPolicy = `{"policy": {
 "credits": {"tok": {"price": {"amount": 0.0003}, "overhead_cost": 1.5e-7}},
 "plans": {"pro": {"default": true, "entitlements": {
   "chat": {"limit": {"credit": "tok", "mode": "soft", "value": 1000, "reset_sch": "monthly:1"}}},
   "topups": {"promo": {"credit": "tok", "value": 1000000}}}}}}`

const t0 = int64(1772445600000)

// testEngine builds n customers with meters, a grant, a cap and metadata; seed
// varies values and which extras each customer gets.
func testEngine(tb testing.TB, n int, seed uint64) *engine.Engine {
	tb.Helper()
	p, err := engine.LoadPolicy(testPolicy, "json")
	if err != nil {
		tb.Fatal(err)
	}
	e := engine.New(p)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range n {
		id := fmt.Sprintf("cus_%06d", i)
		md := map[string]string{"tier": fmt.Sprint(rng.IntN(4))}
		if _, _, err := e.CreateCustomer(t0, engine.CreateCustomerRequest{ID: id, Metadata: md, Alts: []string{"alt_" + id}}); err != nil {
			tb.Fatal(err)
		}
		if rng.IntN(2) == 0 {
			if _, _, err := e.ApplyTopup(t0, id, "promo"); err != nil {
				tb.Fatal(err)
			}
		}
		if rng.IntN(2) == 0 {
			if _, _, err := e.AddCap(t0, engine.AddCapRequest{Customer: id, Value: decimal.New(int64(rng.IntN(1e6)), -2), OverageOnly: true, ResetSch: "weekly:mon"}); err != nil {
				tb.Fatal(err)
			}
		}
		for range rng.IntN(4) {
			if _, err := e.Allow(t0+int64(rng.IntN(1000)), engine.AllowRequest{Customer: id, Entitlement: "chat", Value: decimal.New(int64(rng.IntN(800)), -1)}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return e
}

func testDedupe(n int, seed uint64) []DedupeEntry {
	rng := rand.New(rand.NewPCG(seed, 2))
	out := make([]DedupeEntry, n)
	at := t0
	for i := range out {
		at += int64(rng.IntN(100))
		out[i] = DedupeEntry{RequestID: fmt.Sprintf("req-%d-%d", seed, i), AppliedAt: at, Result: []byte(fmt.Sprintf("result %d", rng.Int()))}
		out[i].Fingerprint = sha256.Sum256([]byte(out[i].RequestID))
	}
	return out
}

// write streams an engine and dedupe entries as the FSM does.
func write(tb testing.TB, w io.Writer, e *engine.Engine, dd []DedupeEntry, h Header) [32]byte {
	tb.Helper()
	ids := e.CustomerIDs()
	h.Customers, h.Dedupe = uint64(len(ids)), uint64(len(dd))
	sw, err := NewWriter(w, h)
	if err != nil {
		tb.Fatal(err)
	}
	for _, id := range ids {
		enc, err := e.EncodeCustomer(id)
		if err != nil {
			tb.Fatal(err)
		}
		if err := sw.Customer(id, enc); err != nil {
			tb.Fatal(err)
		}
	}
	for _, d := range dd {
		if err := sw.DedupeEntry(d); err != nil {
			tb.Fatal(err)
		}
	}
	if err := sw.Close(); err != nil {
		tb.Fatal(err)
	}
	return sw.Sum()
}

func header() Header {
	return Header{Shard: 7, Index: 1234, Term: 5, PolicyVersion: 3, PolicyFormat: "json", PolicyText: testPolicy, Clock: t0 + 99}
}

func build(tb testing.TB, customers, dedupe int, seed uint64) []byte {
	var buf bytes.Buffer
	write(tb, &buf, testEngine(tb, customers, seed), testDedupe(dedupe, seed), header())
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	e := testEngine(t, 300, 1)
	dd := testDedupe(50, 1)
	var buf bytes.Buffer
	sum := write(t, &buf, e, dd, header())
	if got := sha256.Sum256(buf.Bytes()[:buf.Len()-32]); got != sum || !bytes.Equal(buf.Bytes()[buf.Len()-32:], sum[:]) {
		t.Fatal("trailer is not the SHA-256 of the body")
	}
	st, err := Restore(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	want := header()
	want.Customers, want.Dedupe = 300, 50
	if st.Header != want {
		t.Fatalf("header %+v, want %+v", st.Header, want)
	}
	if len(st.Dedupe) != 50 || st.Dedupe[7].RequestID != dd[7].RequestID || !bytes.Equal(st.Dedupe[7].Result, dd[7].Result) || st.Dedupe[7].Fingerprint != dd[7].Fingerprint {
		t.Fatal("dedupe entries differ")
	}
	// The restored engine encodes to the same bytes, and resolves alt ids.
	var again bytes.Buffer
	write(t, &again, st.Engine, st.Dedupe, header())
	if !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Fatal("re-encoded snapshot differs")
	}
	if c := st.Engine.Customer("alt_cus_000042"); c == nil || c.ID != "cus_000042" {
		t.Fatal("alt ids not restored")
	}
}

func TestEmpty(t *testing.T) {
	var buf bytes.Buffer
	sw, err := NewWriter(&buf, Header{Shard: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := Restore(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Engine.Len() != 0 || len(st.Dedupe) != 0 || st.Header.Shard != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestWriterRefuses(t *testing.T) {
	sw, _ := NewWriter(io.Discard, Header{Customers: 2, Dedupe: 1})
	if err := sw.Customer("b", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := sw.Customer("a", []byte("{}")); err == nil || !strings.Contains(err.Error(), "ids must ascend") {
		t.Fatalf("order: %v", err)
	}
	sw, _ = NewWriter(io.Discard, Header{Customers: 1})
	if err := sw.Close(); err == nil || !strings.Contains(err.Error(), "0 customers written, header announced 1") {
		t.Fatalf("count: %v", err)
	}
	sw, _ = NewWriter(io.Discard, Header{Customers: 1, Dedupe: 1})
	if err := sw.DedupeEntry(DedupeEntry{RequestID: "x"}); err == nil {
		t.Fatal("dedupe before customers accepted")
	}
}

func TestCorruptionIsNamed(t *testing.T) {
	good := build(t, 20, 5, 3)
	// Offsets of interest, found by reading the stream.
	r, err := NewReader(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	firstCustomer := r.off
	flip := func(off int) []byte { b := bytes.Clone(good); b[off] ^= 0x01; return b }
	outOfOrder := func() []byte {
		e := testEngine(t, 0, 3)
		for _, id := range []string{"a", "b"} {
			if _, _, err := e.CreateCustomer(t0, engine.CreateCustomerRequest{ID: id}); err != nil {
				t.Fatal(err)
			}
		}
		ea, _ := e.EncodeCustomer("a")
		eb, _ := e.EncodeCustomer("b")
		var buf bytes.Buffer
		sw, _ := NewWriter(&buf, Header{Customers: 2, PolicyVersion: 1, PolicyFormat: "json", PolicyText: testPolicy})
		_ = sw.Customer("b", eb)
		sw.lastID = ""
		_ = sw.Customer("a", ea)
		_ = sw.Close()
		return buf.Bytes()
	}()
	wrongID := func() []byte {
		e := testEngine(t, 1, 3)
		enc, _ := e.EncodeCustomer("cus_000000")
		var buf bytes.Buffer
		sw, _ := NewWriter(&buf, Header{Customers: 1, PolicyVersion: 1, PolicyFormat: "json", PolicyText: testPolicy})
		_ = sw.Customer("cus_999999", enc)
		_ = sw.Close()
		return buf.Bytes()
	}()
	for _, tc := range []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrCorrupt, "truncated in header (reading magic)"},
		{"bad magic", append([]byte("NOTASNAP"), good[8:]...), ErrCorrupt, "bad magic"},
		{"version", func() []byte { b := bytes.Clone(good); b[8] = 9; return b }(), ErrVersion, "format version 9"},
		{"truncated header", good[:20], ErrCorrupt, "truncated in header"},
		{"truncated customer", good[:firstCustomer+30], ErrCorrupt, "truncated in customer 1 of 20"},
		{"truncated trailer", good[:len(good)-5], ErrCorrupt, "truncated in the checksum trailer"},
		{"no end marker", good[:len(good)-33], ErrCorrupt, "end marker"},
		{"checksum", flip(len(good) - 1), ErrCorrupt, "checksum mismatch"},
		{"flipped byte in a customer", flip(int(firstCustomer) + 40), ErrCorrupt, "customer|checksum mismatch"},
		{"flipped length of a customer", flip(int(firstCustomer) + 11), ErrCorrupt, "customer|checksum mismatch"},
		{"trailing bytes", append(bytes.Clone(good), 0), ErrCorrupt, "unexpected bytes after the checksum trailer"},
		{"out of order", outOfOrder, ErrCorrupt, `customer id "a" after "b": ids must ascend`},
		{"record of another id", wrongID, ErrCorrupt, "encodes another id"},
	} {
		_, err := Restore(bytes.NewReader(tc.data))
		matched := false
		for _, m := range strings.Split(tc.msg, "|") {
			matched = matched || (err != nil && strings.Contains(err.Error(), m))
		}
		if !errors.Is(err, tc.want) || !matched {
			t.Errorf("%s: got %v, want %v containing %q", tc.name, err, tc.want, tc.msg)
		}
	}
}

func TestHugeLengthIsRefusedBeforeAllocating(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString(Magic)
	buf.Write([]byte{1, 0, 0, 0})
	buf.Write([]byte{0, 0, 0, 0, 0, 0, 0})          // shard..dedupe
	buf.Write([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}) // policy format length ~4G
	_, err := Restore(&buf)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "policy format length") {
		t.Fatal(err)
	}
}

// FuzzSnapshot: a random state round-trips byte for byte, and any change to its
// bytes (a flipped byte, a cut, appended bytes) or a wholly arbitrary input is an
// ErrCorrupt/ErrVersion error, never a panic or a silently different state.
func FuzzSnapshot(f *testing.F) {
	f.Add(uint64(1), uint8(5), uint32(0), byte(0), uint32(0), []byte(nil))
	f.Add(uint64(2), uint8(0), uint32(30), byte(1), uint32(0), []byte(nil))
	f.Add(uint64(3), uint8(9), uint32(0), byte(0), uint32(100), []byte(nil))
	f.Add(uint64(4), uint8(3), uint32(0), byte(0), uint32(0), []byte("x"))
	f.Add(uint64(5), uint8(0), uint32(0), byte(0), uint32(0), []byte("CAPSNAP\x00\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, seed uint64, n uint8, pos uint32, xor byte, cut uint32, extra []byte) {
		customers := int(n % 16)
		var buf bytes.Buffer
		write(t, &buf, testEngine(t, customers, seed), testDedupe(int(n%7), seed), header())
		valid := buf.Bytes()

		st, err := Restore(bytes.NewReader(valid))
		if err != nil {
			t.Fatalf("valid snapshot refused: %v", err)
		}
		var again bytes.Buffer
		write(t, &again, st.Engine, st.Dedupe, st.Header)
		if !bytes.Equal(again.Bytes(), valid) {
			t.Fatal("round trip differs")
		}

		var data []byte
		if pos == 0 && xor == 0 && cut == 0 && len(extra) > 0 {
			data = extra // arbitrary input
		} else {
			data = bytes.Clone(valid)
			if xor != 0 {
				data[int(pos)%len(data)] ^= xor
			}
			if cut != 0 {
				data = data[:len(data)-int(cut)%len(data)]
			}
			data = append(data, extra...)
		}
		_, err = Restore(bytes.NewReader(data))
		if bytes.Equal(data, valid) {
			if err != nil {
				t.Fatalf("unchanged bytes refused: %v", err)
			}
			return
		}
		if err == nil {
			t.Fatal("damaged snapshot accepted")
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
			t.Fatalf("error does not wrap ErrCorrupt/ErrVersion: %v", err)
		}
	})
}

// bench100k is built once: 100k customers take a few seconds to create.
var bench100k struct {
	e    *engine.Engine
	snap []byte
}

func setup100k(b *testing.B) {
	if bench100k.e != nil {
		return
	}
	b.Helper()
	bench100k.e = testEngine(b, 100_000, 42)
	var buf bytes.Buffer
	write(b, &buf, bench100k.e, testDedupe(10_000, 42), header())
	bench100k.snap = buf.Bytes()
}

// BenchmarkSnapshotWrite100k: encode 100k customers (engine.EncodeCustomer, what
// the FSM's capture does under its lock) and stream them, with 10k dedupe entries.
func BenchmarkSnapshotWrite100k(b *testing.B) {
	setup100k(b)
	dd := testDedupe(10_000, 42)
	b.SetBytes(int64(len(bench100k.snap)))
	b.ReportAllocs()
	for b.Loop() {
		write(b, io.Discard, bench100k.e, dd, header())
	}
}

// BenchmarkSnapshotRestore100k: read, verify and restore into a fresh engine.
func BenchmarkSnapshotRestore100k(b *testing.B) {
	setup100k(b)
	b.SetBytes(int64(len(bench100k.snap)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := Restore(bytes.NewReader(bench100k.snap))
		if err != nil || st.Engine.Len() != 100_000 {
			b.Fatal(err)
		}
	}
}
