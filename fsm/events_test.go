package fsm

import (
	"testing"

	"github.com/capstanhq/capstan/engine"
)

func evs(types ...string) []engine.Event {
	out := make([]engine.Event, len(types))
	for i, t := range types {
		out[i] = engine.Event{Type: t, Customer: "c" + t[:1]}
	}
	return out
}

func TestEventLogCursorAndCompaction(t *testing.T) {
	f := New(Options{EventLogSize: 4})
	f.events.append(1, 10, "r1", 1, evs("meter-reset", "meter-changed"))
	f.events.append(2, 11, "r2", 1, nil)
	f.events.append(3, 12, "r3", 1, evs("meter-overage"))

	page := f.Events(Cursor{}, 10, "")
	if page.Compacted || len(page.Records) != 3 || page.Next != (Cursor{Index: 3, Seq: 0}) {
		t.Fatalf("first page %+v", page)
	}
	if r := page.Records[1]; r.Index != 1 || r.Seq != 1 || r.Event.Type != "meter-changed" || r.RequestID != "r1" {
		t.Fatalf("record %+v", r)
	}
	// Resuming mid-command returns only what follows.
	page = f.Events(Cursor{Index: 1, Seq: 0}, 10, "")
	if len(page.Records) != 2 || page.Records[0].Event.Type != "meter-changed" {
		t.Fatalf("resume %+v", page.Records)
	}
	// A page limit stops at max and the cursor continues from there.
	page = f.Events(Cursor{}, 1, "")
	if len(page.Records) != 1 || page.Next != (Cursor{Index: 1}) {
		t.Fatalf("limited %+v", page)
	}
	wait := page.Wait
	select {
	case <-wait:
		t.Fatal("wait closed before new events")
	default:
	}
	// Two more events overflow the 4-slot ring: index 1's events are evicted.
	f.events.append(4, 13, "r4", 1, evs("cap-threshold-crossed", "customer-set"))
	select {
	case <-wait:
	default:
		t.Fatal("wait not closed by new events")
	}
	if page = f.Events(Cursor{}, 10, ""); !page.Compacted {
		t.Fatalf("cursor before the ring should be compacted: %+v", page)
	}
	// Index 1 lost its first event; a consumer that already had it resumes intact.
	if page = f.Events(Cursor{Index: 1, Seq: 1}, 10, ""); page.Compacted || len(page.Records) != 3 {
		t.Fatalf("after (1,1): %+v", page)
	}
	page = f.Events(Cursor{Index: 2}, 10, "")
	if page.Compacted || len(page.Records) != 3 {
		t.Fatalf("after index 2: %+v", page)
	}
	// A customer filter keeps only that customer's events.
	if page = f.Events(Cursor{Index: 2}, 10, "cm"); len(page.Records) != 1 || page.Records[0].Event.Type != "meter-overage" {
		t.Fatalf("filtered %+v", page.Records)
	}
	// A restore forgets everything up to the snapshot's index.
	f.events.reset(9)
	if page = f.Events(Cursor{Index: 4, Seq: 1}, 10, ""); !page.Compacted {
		t.Fatal("a cursor older than a restored snapshot must be compacted")
	}
	if page = f.Events(Cursor{Index: 9}, 10, ""); page.Compacted || len(page.Records) != 0 {
		t.Fatalf("at the snapshot: %+v", page)
	}
}

// The event log records what applied commands produced, once: a retried request
// (answered from the idempotency table) adds nothing.
func TestEventsFromApplies(t *testing.T) {
	a := newApplier(t, Options{})
	a.ok(t0, setPolicy(1, testPolicy))
	a.ok(t0, &Command{RequestID: "c1", CreateCustomer: &engine.CreateCustomerRequest{ID: "u1"}})
	allow := func() *Command {
		return &Command{RequestID: "a1", Allow: &engine.AllowRequest{Customer: "u1", Entitlement: "chat", Value: dec("1500")}}
	}
	res := a.ok(t0+1, allow())
	if res.Duplicate {
		t.Fatal("first allow was a duplicate")
	}
	page := a.f.Events(Cursor{}, 100, "u1")
	var types []string
	for _, r := range page.Records {
		types = append(types, r.Event.Type)
	}
	if len(types) != 2 || types[0] != "customer-set" || types[1] != "meter-overage" {
		t.Fatalf("events %v", types)
	}
	over := page.Records[1]
	if over.RequestID != "a1" || over.Index != res.Index || over.PolicyVersion != 1 || !over.Event.Overage.Equal(dec("500")) {
		t.Fatalf("overage record %+v", over)
	}
	if dup := a.ok(t0+2, allow()); !dup.Duplicate {
		t.Fatal("retry not answered as a duplicate")
	}
	if again := a.f.Events(page.Next, 100, ""); len(again.Records) != 0 {
		t.Fatalf("a duplicate added events: %+v", again.Records)
	}
}
