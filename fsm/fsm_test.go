package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/shopspring/decimal"
	"google.golang.org/protobuf/proto"

	"github.com/capstanhq/capstan/engine"
	fsmv1 "github.com/capstanhq/capstan/internal/gen/capstan/fsm/v1"
	"github.com/capstanhq/capstan/snapshot"
)

func TestCommandRoundTrip(t *testing.T) {
	yes := true
	cmds := []*Command{
		{Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("12.5"), Unit: "GB", EventData: `{"a":1}`,
			NoEvents: true, Caps: []engine.CallCap{{Credit: "usd", Value: dec("0.25")}}, Overhead: decp("0.001"), Force: true,
			Segment: "sonnet", Basis: decp("1200")}},
		{Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Overhead: &decimal.Decimal{}}}, // zero decodes as the zero value
		{Increment: &engine.AllowRequest{Customer: "c1", Entitlement: "chat"}},
		{Decrement: &engine.AllowRequest{Customer: "c1", Entitlement: "chat"}},
		{Reserve: &engine.ReserveRequest{AllowRequest: engine.AllowRequest{Customer: "c", Entitlement: "e", Value: dec("3")}, Omitted: true, TTL: 5000, Quantile: dec("0.95")}},
		{Settle: &SettleOp{HoldID: "hold-1", AllowRequest: engine.AllowRequest{Customer: "c", Entitlement: "e", Value: dec("-2")}}},
		{Release: &ReleaseOp{Customer: "c", Entitlement: "e", HoldID: "h"}},
		{CreateCustomer: &engine.CreateCustomerRequest{ID: "c", Plan: "p", Type: "org", Label: "L", Refs: []string{"r"}, Alts: []string{"a"}, Metadata: map[string]string{"k": "v", "a": "b"}}},
		{CreateCustomer: &engine.CreateCustomerRequest{ID: "c", Metadata: map[string]string{}}},
		{CreateCustomer: &engine.CreateCustomerRequest{ID: "c"}},
		{DeleteCustomer: &CustomerOp{Customer: "c"}},
		{SetPlan: &SetPlanOp{Customer: "c", Plan: "p", OverwriteMeters: true}},
		{SetRefs: &SetRefsOp{Customer: "c", Refs: []string{"a", "b"}}},
		{SetMetadata: &SetMetadataOp{Customer: "c", Metadata: map[string]string{"x": "y"}}},
		{SetAltID: &AltOp{Customer: "c", Alt: "a"}},
		{DeleteAltID: &AltOp{Customer: "c", Alt: "a"}},
		{AddCap: &engine.AddCapRequest{Customer: "c", CapID: "x", Value: dec("10"), Credit: "usd", Exchangeable: &yes, OverageOnly: true,
			IgnoreGrants: true, ObserveOnly: true, OverheadCost: true, FollowDecrements: true, HardTrailing: true, Shared: true,
			SharedWith: []string{"d"}, Scope: []string{"chat"}, Resets: true, ResetInc: 1000, ResetSch: "weekly:mon", ExpiresOn: 99}},
		{AddCap: &engine.AddCapRequest{Customer: "c", Value: dec("1"), Scope: []string{}}},
		{ResetCap: &CapOp{Customer: "c", CapID: "x"}},
		{RemoveCap: &CapOp{Customer: "c", CapID: "x"}},
		{ApplyTopup: &TopupOp{Customer: "c", Topup: "t"}},
		{Grant: &engine.GrantRequest{Customer: "c", ID: "g", Credit: "tok", Value: dec("0.000000000000000001"), ExpiresOn: 5}},
		{CreateOverride: &engine.OverrideRequest{Customer: "c", Entitlement: "e", Expires: 7, Credit: "tok", Mode: "hard",
			Value: decp("100"), Increment: decp("2"), Resets: &yes, ResetInc: 10, ResetSch: "daily"}},
		{RemoveOverride: &OverrideOp{Customer: "c", Entitlement: "e"}},
		{SetPolicy: &PolicyOp{Text: "{}", Format: "json", Version: 3}},
	}
	// The richest sample of each request type sets every exported field, so a field
	// added to an engine request fails here until the log encoding carries it.
	for _, v := range []any{*cmds[0].Allow, *cmds[4].Reserve, *cmds[7].CreateCustomer, *cmds[16].AddCap, *cmds[21].Grant, *cmds[22].CreateOverride} {
		rv := reflect.ValueOf(v)
		for i := 0; i < rv.NumField(); i++ {
			f := rv.Type().Field(i)
			if f.IsExported() && !f.Anonymous && rv.Field(i).IsZero() {
				t.Errorf("%s.%s is not set in the round-trip sample: add it (and make sure the codec carries it)", rv.Type().Name(), f.Name)
			}
		}
	}
	for _, c := range cmds {
		c.RequestID, c.Timestamp = "r-"+c.OpName(), 12345
		t.Run(c.OpName(), func(t *testing.T) {
			data, err := EncodeCommand(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeCommand(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, c)
			}
			again, _ := EncodeCommand(got)
			if !bytes.Equal(again, data) {
				t.Fatal("re-encoding differs")
			}
		})
	}
}

func TestEncodeCommandRefuses(t *testing.T) {
	huge := decimal.New(1, 2_000_000_000)
	long := decimal.RequireFromString(strings.Repeat("9", 300))
	for name, c := range map[string]*Command{
		"no op":         {},
		"two ops":       {Allow: &engine.AllowRequest{}, Grant: &engine.GrantRequest{}},
		"huge exp":      {Allow: &engine.AllowRequest{Customer: "c", Value: huge}},
		"many digits":   {Grant: &engine.GrantRequest{Customer: "c", Value: long}},
		"huge cap":      {Allow: &engine.AllowRequest{Customer: "c", Caps: []engine.CallCap{{Credit: "x", Value: huge}}}},
		"too big cmd":   {SetPolicy: &PolicyOp{Text: strings.Repeat("x", MaxCommandSize), Version: 1}},
		"tiny overhead": {Allow: &engine.AllowRequest{Customer: "c", Overhead: func() *decimal.Decimal { d := decimal.New(1, -1000); return &d }()}},
	} {
		_, err := EncodeCommand(c)
		var fe *Error
		if !errors.As(err, &fe) || fe.Code != CodeInvalidArgument {
			t.Errorf("%s: got %v, want an InvalidArgument *Error", name, err)
		}
	}
}

func TestDecodeRefusesBadBytes(t *testing.T) {
	good, _ := EncodeCommand(&Command{Allow: &engine.AllowRequest{Customer: "c", Entitlement: "e", Value: dec("1")}})
	badDec := func(v string) []byte {
		b, _ := proto.Marshal(&fsmv1.Command{Op: &fsmv1.Command_Allow{Allow: &fsmv1.AllowOp{Customer: "c", Value: v}}})
		return append([]byte{EncodingV1}, b...)
	}
	for name, tc := range map[string]struct {
		data  []byte
		code  ErrorCode
		field string
	}{
		"empty":      {nil, CodeInvalidArgument, ""},
		"version":    {append([]byte{9}, good[1:]...), CodeFailedPrecondition, ""},
		"garbage":    {[]byte{EncodingV1, 0xff, 0xff, 0xff}, CodeInvalidArgument, ""},
		"truncated":  {good[:len(good)-2], CodeInvalidArgument, ""},
		"no op":      {[]byte{EncodingV1}, CodeInvalidArgument, ""},
		"exponent":   {badDec("1e2000000000"), CodeInvalidArgument, "value"},
		"float-ish":  {badDec("NaN"), CodeInvalidArgument, "value"},
		"two points": {badDec("1.2.3"), CodeInvalidArgument, "value"},
		"sign only":  {badDec("-"), CodeInvalidArgument, "value"},
		"long":       {badDec(strings.Repeat("1", 200)), CodeInvalidArgument, "value"},
		"space":      {badDec(" 1"), CodeInvalidArgument, "value"},
		"inner sign": {badDec("1-2"), CodeInvalidArgument, "value"},
		"hex":        {badDec("0x10"), CodeInvalidArgument, "value"},
	} {
		_, err := DecodeCommand(tc.data)
		var fe *Error
		if !errors.As(err, &fe) || fe.Code != tc.code || fe.Field != tc.field {
			t.Errorf("%s: got %#v, want code %d field %q", name, err, tc.code, tc.field)
		}
		// The FSM answers the same refusal and stays up.
		a := newApplier(t, Options{})
		if r := a.applyRaw(tc.data); r.Err == nil || r.Err.Code != tc.code {
			t.Errorf("%s: FSM answered %+v", name, r.Err)
		}
	}
}

func TestFingerprintIgnoresIDAndTime(t *testing.T) {
	c := &Command{RequestID: "a", Timestamp: 1, Allow: &engine.AllowRequest{Customer: "c", Entitlement: "e", Value: dec("1")}}
	d1, _ := EncodeCommand(c)
	c.RequestID, c.Timestamp = "b", 999999
	d2, _ := EncodeCommand(c)
	c.Allow.Value = dec("2")
	d3, _ := EncodeCommand(c)
	f1, _ := Fingerprint(d1)
	f2, _ := Fingerprint(d2)
	f3, _ := Fingerprint(d3)
	if f1 != f2 || f1 == f3 {
		t.Fatalf("fingerprints: %x %x %x", f1[:4], f2[:4], f3[:4])
	}
}

func TestApplyLifecycle(t *testing.T) {
	a := newApplier(t, Options{})
	// No policy yet.
	r := a.apply(t0, &Command{RequestID: "early", CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
	if r.Err == nil || r.Err.Code != CodeFailedPrecondition {
		t.Fatalf("before policy: %+v", r.Err)
	}
	a.ok(t0, setPolicy(1, testPolicy))
	a.ok(t0, &Command{RequestID: "create", CreateCustomer: &engine.CreateCustomerRequest{ID: "c1", Plan: "free"}})
	r = a.ok(t0+1, &Command{RequestID: "allow-1", Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("60")}})
	if !r.Decision.Allowed || r.PolicyVersion != 1 || r.Index != a.index || r.Timestamp != t0+1 {
		t.Fatalf("allow: %+v %+v", r, r.Decision)
	}
	r = a.ok(t0+2, &Command{RequestID: "allow-2", Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("60")}})
	if r.Decision.Allowed || r.Decision.Reason != engine.ReasonLimit {
		t.Fatalf("past the free limit: %+v", r.Decision)
	}

	// A bad policy is refused and changes nothing.
	before := a.f.StateHash()
	r = a.apply(t0+3, setPolicy(2, `{"policy": {"plans": {"x": {"entitlements": {"e": {"limit": {"credit": "nope"}}}}}}}`))
	if r.Err == nil || r.Err.Code != CodeInvalidArgument || r.Err.Field != "policy" || r.PolicyVersion != 1 {
		t.Fatalf("bad policy: %+v", r)
	}
	// The refusal is remembered under its request id, which is state too, so
	// compare the engine's view instead of the hash.
	if _, _, v := a.f.Policy(); v != 1 {
		t.Fatalf("version after bad policy: %d", v)
	}
	_ = before

	// Version 2 doubles the free limit: the same call is now allowed.
	r = a.ok(t0+4, setPolicy(3, testPolicy2))
	if r.PolicyVersion != 3 {
		t.Fatalf("policy result version %d", r.PolicyVersion)
	}
	r = a.ok(t0+5, &Command{RequestID: "allow-3", Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("60")}})
	if !r.Decision.Allowed || r.PolicyVersion != 3 {
		t.Fatalf("after policy v3: %+v %+v", r, r.Decision)
	}
	// Older and conflicting versions are refused; the same one again is harmless.
	if r := a.apply(t0+6, &Command{RequestID: "p-old", SetPolicy: &PolicyOp{Text: testPolicy, Format: "json", Version: 2}}); r.Err == nil || r.Err.Code != CodeFailedPrecondition {
		t.Fatalf("older version: %+v", r.Err)
	}
	if r := a.apply(t0+6, &Command{RequestID: "p-conflict", SetPolicy: &PolicyOp{Text: testPolicy, Format: "json", Version: 3}}); r.Err == nil || r.Err.Code != CodeFailedPrecondition {
		t.Fatalf("conflicting version: %+v", r.Err)
	}
	a.ok(t0+6, &Command{RequestID: "p-same", SetPolicy: &PolicyOp{Text: testPolicy2, Format: "json", Version: 3}})
	if r := a.apply(t0+6, &Command{RequestID: "p-zero", SetPolicy: &PolicyOp{Text: testPolicy2, Format: "json"}}); r.Err == nil || r.Err.Field != "version" {
		t.Fatalf("version 0: %+v", r.Err)
	}
}

func TestRefusalCodes(t *testing.T) {
	a := newApplier(t, Options{})
	a.ok(t0, setPolicy(1, testPolicy))
	a.ok(t0, &Command{RequestID: "c", CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
	for _, tc := range []struct {
		cmd   *Command
		code  ErrorCode
		field string
	}{
		{&Command{AddCap: &engine.AddCapRequest{Customer: "nobody", Value: dec("1")}}, CodeNotFound, ""},
		{&Command{AddCap: &engine.AddCapRequest{Customer: "c1", Value: dec("-1")}}, CodeInvalidArgument, "value"},
		{&Command{AddCap: &engine.AddCapRequest{Customer: "c1", Value: dec("1"), Credit: "nope"}}, CodeInvalidArgument, "credit"},
		{&Command{Grant: &engine.GrantRequest{Customer: "c1", Credit: "tok", Value: dec("0.0000000000000000001")}}, CodeInvalidArgument, "value"},
		{&Command{CreateCustomer: &engine.CreateCustomerRequest{ID: "has space"}}, CodeInvalidArgument, "id"},
		{&Command{ResetCap: &CapOp{Customer: "c1", CapID: "nope"}}, CodeNotFound, ""},
		{&Command{DeleteAltID: &AltOp{Customer: "c1", Alt: "nope"}}, CodeNotFound, ""},
		{&Command{SetPlan: &SetPlanOp{Customer: "c1", Plan: "nope"}}, CodeInvalidArgument, "plan"},
		{&Command{RequestID: strings.Repeat("x", MaxRequestIDLength+1), DeleteCustomer: &CustomerOp{Customer: "c1"}}, CodeInvalidArgument, "request_id"},
	} {
		before := a.f.Info().Customers
		r := a.apply(t0+1, tc.cmd)
		if r.Err == nil || r.Err.Code != tc.code || r.Err.Field != tc.field {
			t.Errorf("%s: got %+v, want code %d field %q", tc.cmd.OpName(), r.Err, tc.code, tc.field)
		}
		if a.f.Info().Customers != before {
			t.Errorf("%s: a refusal changed state", tc.cmd.OpName())
		}
	}
	// An unknown customer on allow is a denial, not an error.
	r := a.ok(t0+1, &Command{Allow: &engine.AllowRequest{Customer: "nobody", Entitlement: "chat", Value: dec("1")}})
	if r.Decision.Allowed || r.Decision.Reason != engine.ReasonUnknownCustomer {
		t.Fatalf("unknown customer: %+v", r.Decision)
	}
}

func TestTimeNeverGoesBackwards(t *testing.T) {
	a := newApplier(t, Options{})
	a.ok(t0, setPolicy(1, testPolicy))
	r := a.ok(t0+1000, &Command{CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
	if r.Timestamp != t0+1000 {
		t.Fatal(r.Timestamp)
	}
	// A new leader whose clock is behind stamps an older time.
	r = a.ok(t0+10, &Command{Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("1")}})
	if r.Timestamp != t0+1000 {
		t.Fatalf("time went backwards: %d", r.Timestamp)
	}
	if a.f.Info().Clock != t0+1000 {
		t.Fatal(a.f.Info().Clock)
	}
}

func TestDuplicates(t *testing.T) {
	a := newApplier(t, Options{})
	a.ok(t0, setPolicy(1, testPolicy))
	a.ok(t0, &Command{RequestID: "create", CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
	allow := func() *Command {
		return &Command{RequestID: "req-1", Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("10")}}
	}
	first := a.ok(t0+1, allow())
	// A retry (new leader stamp) answers the original result and meters nothing.
	again := a.ok(t0+500, allow())
	if !again.Duplicate || first.Duplicate {
		t.Fatalf("duplicate flags: first %v again %v", first.Duplicate, again.Duplicate)
	}
	again.Duplicate = false
	e1, _ := EncodeResult(first)
	e2, _ := EncodeResult(again)
	if !bytes.Equal(e1, e2) {
		t.Fatalf("duplicate answered differently:\n%+v\n%+v", first, again)
	}
	if got := meter(t, a.f, "c1", "chat"); !got.Equal(dec("10")) {
		t.Fatalf("meter after duplicate: %s", got)
	}
	// Same id, other parameters.
	other := allow()
	other.Allow.Value = dec("11")
	r := a.apply(t0+600, other)
	if r.Err == nil || r.Err.Code != CodeFailedPrecondition || r.Err.Message != "request id reused with different parameters" {
		t.Fatalf("reused id: %+v", r.Err)
	}
	// The original is still remembered after the refusal.
	if r, ok := a.f.LookupRequest("req-1"); !ok || r.Index != first.Index || !r.Duplicate {
		t.Fatalf("lookup: %v %+v", ok, r)
	}
	// Refusals are remembered too: a retried bad command gets the same refusal.
	bad := &Command{RequestID: "bad", Grant: &engine.GrantRequest{Customer: "c1", Credit: "tok", Value: dec("-1")}}
	r1 := a.apply(t0+700, bad)
	r2 := a.apply(t0+701, bad)
	if r1.Err == nil || !r2.Duplicate || r2.Index != r1.Index {
		t.Fatalf("refusal replay: %+v / %+v", r1, r2)
	}
}

func TestDedupeEviction(t *testing.T) {
	a := newApplier(t, Options{DedupeWindow: time.Hour, DedupeMaxEntries: 3})
	a.ok(t0, setPolicy(1, testPolicy))
	a.ok(t0, &Command{RequestID: "create", CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
	allow := func(id string) *Command {
		return &Command{RequestID: id, Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "api", Value: dec("1")}}
	}
	a.ok(t0+1, allow("a"))
	// Within the window: duplicate.
	if r := a.ok(t0+time.Hour.Milliseconds(), allow("a")); !r.Duplicate {
		t.Fatal("expected a duplicate inside the window")
	}
	// Past the window (command time, not wall time): forgotten, applied again.
	if r := a.ok(t0+2*time.Hour.Milliseconds(), allow("a")); r.Duplicate {
		t.Fatal("expected the id to be forgotten after the window")
	}
	if got := meter(t, a.f, "c1", "api"); !got.Equal(dec("2")) {
		t.Fatalf("meter %s", got)
	}
	// Count bound: the oldest id goes first.
	ts := t0 + 2*time.Hour.Milliseconds()
	for _, id := range []string{"b", "c", "d"} {
		a.ok(ts, allow(id))
	}
	if _, ok := a.f.LookupRequest("a"); ok {
		t.Fatal("a should have been evicted by the count bound")
	}
	for _, id := range []string{"b", "c", "d"} {
		if _, ok := a.f.LookupRequest(id); !ok {
			t.Fatalf("%s evicted too early", id)
		}
	}
	if n := a.f.Info().DedupeEntries; n != 3 {
		t.Fatalf("entries %d", n)
	}
}

func TestDedupeByteBound(t *testing.T) {
	a := newApplier(t, Options{DedupeMaxBytes: 2000})
	a.ok(t0, setPolicy(1, testPolicy))
	a.ok(t0, &Command{RequestID: "create", CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
	for i := range 50 {
		a.ok(t0+int64(i), &Command{RequestID: strings.Repeat("x", 100) + string(rune('A'+i%26)) + string(rune('a'+i/26)),
			Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("1")}})
	}
	a.f.mu.RLock()
	b := a.f.dedupe.bytes
	a.f.mu.RUnlock()
	if b > 2000 || a.f.Info().DedupeEntries == 0 {
		t.Fatalf("bytes %d entries %d", b, a.f.Info().DedupeEntries)
	}
}

func TestDeterministicReplicas(t *testing.T) {
	// Two FSMs fed the same entries (one entry at a time vs in batches) end equal.
	g := newCmdGen(7, 12)
	a := newApplier(t, Options{DedupeMaxEntries: 300})
	b := New(Options{DedupeMaxEntries: 300, Logger: testLogger()})
	var logs []*raft.Log
	cmds := []*Command{setPolicy(1, testPolicy)}
	for range 3000 {
		cmds = append(cmds, g.next())
	}
	refused := 0
	for i, c := range cmds {
		c.Timestamp = t0 + int64(i)*1000
		data, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if r := a.applyRaw(data); r.Err != nil {
			refused++
		}
		logs = append(logs, &raft.Log{Index: a.index, Term: 1, Type: raft.LogCommand, Data: data})
	}
	for len(logs) > 0 {
		n := min(len(logs), 1+len(logs)%64)
		b.ApplyBatch(logs[:n])
		logs = logs[n:]
	}
	if a.f.StateHash() != b.StateHash() {
		t.Fatal("replicas diverged")
	}
	if refused == 0 || refused == len(cmds) {
		t.Fatalf("stream should mix successes and refusals (refused %d of %d)", refused, len(cmds))
	}
	if a.f.Info().Customers == 0 {
		t.Fatal("no customers")
	}
	t.Logf("refused %d of %d; %d customers; dedupe %d", refused, len(cmds), a.f.Info().Customers, a.f.Info().DedupeEntries)
}

func TestSnapshotRestore(t *testing.T) {
	g := newCmdGen(11, 20)
	a := newApplier(t, Options{Shard: 3})
	a.ok(t0, setPolicy(1, testPolicy))
	for i := range 800 {
		a.apply(t0+int64(i)*10, g.next())
	}
	var buf bytes.Buffer
	if err := a.f.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	restored := New(Options{Shard: 3, Logger: testLogger()})
	if err := restored.Restore(nopCloser{bytes.NewReader(buf.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if restored.StateHash() != a.f.StateHash() {
		t.Fatal("restored state differs")
	}
	if got, want := restored.Info(), a.f.Info(); got != want {
		t.Fatalf("info %+v, want %+v", got, want)
	}
	// Both continue identically.
	b := &applier{t: t, f: restored, index: a.index}
	for i := range 200 {
		c := g.next()
		ts := t0 + 100_000 + int64(i)
		a.apply(ts, c)
		b.apply(ts, c)
	}
	if restored.StateHash() != a.f.StateHash() {
		t.Fatal("diverged after restore")
	}

	// Another shard's snapshot is refused; a damaged one leaves the state as it was.
	other := New(Options{Shard: 4, Logger: testLogger()})
	if err := other.Restore(nopCloser{bytes.NewReader(buf.Bytes())}); err == nil || !strings.Contains(err.Error(), "snapshot is of shard 3") {
		t.Fatalf("wrong shard: %v", err)
	}
	before := restored.StateHash()
	bad := bytes.Clone(buf.Bytes())
	bad[len(bad)/2] ^= 0x40
	if err := restored.Restore(nopCloser{bytes.NewReader(bad)}); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("corrupt: %v", err)
	}
	if err := restored.Restore(nopCloser{bytes.NewReader(buf.Bytes()[:len(buf.Bytes())-10])}); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	if restored.StateHash() != before {
		t.Fatal("a failed restore changed the state")
	}
}

func TestResultsAreCopies(t *testing.T) {
	a := newApplier(t, Options{})
	a.ok(t0, setPolicy(1, testPolicy))
	a.ok(t0, &Command{CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
	r := a.ok(t0, &Command{AddCap: &engine.AddCapRequest{Customer: "c1", CapID: "k", Value: dec("100")}})
	a.ok(t0, &Command{Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("5")}})
	if !r.Cap.MeterValue.IsZero() {
		t.Fatalf("the cap in an earlier result moved with live state: %s", r.Cap.MeterValue)
	}
	// And the result round-trips through its encoding.
	enc, _ := EncodeResult(r)
	back, err := DecodeResult(enc)
	if err != nil {
		t.Fatal(err)
	}
	enc2, _ := EncodeResult(back)
	if !bytes.Equal(enc, enc2) {
		t.Fatal("result round trip differs")
	}
}

func TestApplyBatchNonCommands(t *testing.T) {
	f := New(Options{Logger: testLogger()})
	data, _ := EncodeCommand(setPolicy(1, testPolicy))
	out := f.ApplyBatch([]*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("not a command")},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: data},
	})
	if len(out) != 2 || out[0] != nil {
		t.Fatalf("configuration entry answered %v", out)
	}
	if r := out[1].(*Result); r.Err != nil || r.PolicyVersion != 1 || r.Index != 2 {
		t.Fatalf("%+v", r)
	}
	if f.Info().AppliedIndex != 2 {
		t.Fatal(f.Info())
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// FuzzApplyBytes: whatever bytes reach the log, the FSM answers a Result and
// never panics (an internal error would mean a decoding bug the recover hid).
func FuzzApplyBytes(f *testing.F) {
	for _, c := range []*Command{
		setPolicy(1, testPolicy),
		{RequestID: "r", Allow: &engine.AllowRequest{Customer: "c1", Entitlement: "chat", Value: dec("1.5"), Caps: []engine.CallCap{{Credit: "tok", Value: dec("2")}}}},
		{CreateCustomer: &engine.CreateCustomerRequest{ID: "c1", Metadata: map[string]string{"a": "b"}}},
		{AddCap: &engine.AddCapRequest{Customer: "c1", Value: dec("3"), Scope: []string{}}},
		{CreateOverride: &engine.OverrideRequest{Customer: "c1", Entitlement: "chat", Value: decp("9")}},
	} {
		data, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a := newApplier(t, Options{})
		a.ok(t0, setPolicy(1, testPolicy))
		a.ok(t0, &Command{CreateCustomer: &engine.CreateCustomerRequest{ID: "c1"}})
		r := a.applyRaw(data)
		if r.Err != nil && r.Err.Code == CodeInternal {
			t.Fatalf("internal error: %v", r.Err)
		}
		if r.Err == nil {
			// Whatever applied must survive a snapshot round trip.
			var buf bytes.Buffer
			if err := a.f.WriteSnapshot(&buf); err != nil {
				t.Fatal(err)
			}
			g := New(Options{Logger: testLogger()})
			if err := g.Restore(nopCloser{bytes.NewReader(buf.Bytes())}); err != nil {
				t.Fatal(err)
			}
			if g.StateHash() != a.f.StateHash() {
				t.Fatal("snapshot round trip changed the state")
			}
		}
	})
}
