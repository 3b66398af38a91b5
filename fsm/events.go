package fsm

import (
	"github.com/capstanhq/capstan/engine"
)

// DefaultEventLogSize bounds the events a shard keeps for consumers.
const DefaultEventLogSize = 100_000

// EventRecord is one event in a shard's event log. (Index, Seq) orders every event of
// a shard: Index is the raft log index of the command that produced it, Seq its
// position among that command's events. Every replica produces the same records, so a
// consumer can resume from any replica at the last (Index, Seq) it processed.
type EventRecord struct {
	Index         uint64
	Seq           uint32
	Time          int64 // the command's time (ms)
	RequestID     string
	PolicyVersion uint64
	Event         engine.Event
}

// Cursor is a position in a shard's event log: everything after (Index, Seq).
type Cursor struct {
	Index uint64
	Seq   uint32
}

func (c Cursor) before(r *EventRecord) bool {
	return r.Index > c.Index || (r.Index == c.Index && r.Seq > c.Seq)
}

// eventLog is a bounded ring of the newest events, with a channel that is closed
// whenever events are appended (so streams wait without polling).
//
// It is not part of snapshots: after a restore it starts at the snapshot's index,
// and a consumer whose cursor is older gets ErrEventsCompacted instead of a silent
// gap. Meters and caps are the source of truth to resynchronise from.
type eventLog struct {
	buf   []EventRecord
	head  int // index in buf of the oldest record
	n     int
	first uint64 // every event of a command at index >= first is retained
	wake  chan struct{}
}

func newEventLog(size int) *eventLog {
	if size <= 0 {
		size = DefaultEventLogSize
	}
	return &eventLog{buf: make([]EventRecord, size), wake: make(chan struct{})}
}

// append records a command's events. It runs inside Apply under the FSM lock.
func (l *eventLog) append(index uint64, now int64, requestID string, policyVersion uint64, events []engine.Event) {
	if len(events) == 0 {
		return
	}
	for i, ev := range events {
		if l.n == len(l.buf) {
			// Evict the oldest; its command's events are no longer complete.
			old := &l.buf[l.head]
			if old.Index+1 > l.first {
				l.first = old.Index + 1
			}
			*old = EventRecord{}
			l.head = (l.head + 1) % len(l.buf)
			l.n--
		}
		l.buf[(l.head+l.n)%len(l.buf)] = EventRecord{Index: index, Seq: uint32(i), Time: now,
			RequestID: requestID, PolicyVersion: policyVersion, Event: ev}
		l.n++
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// reset forgets every event: the log now starts after index (a snapshot restore).
func (l *eventLog) reset(index uint64) {
	for i := range l.buf {
		l.buf[i] = EventRecord{}
	}
	l.head, l.n, l.first = 0, 0, index+1
	close(l.wake)
	l.wake = make(chan struct{})
}

// EventsPage is one read of a shard's event log.
type EventsPage struct {
	Records []EventRecord
	Next    Cursor // pass back to continue after these records
	// Compacted is set when events after the cursor are no longer kept (the log
	// wrapped, or this replica restored a snapshot newer than the cursor).
	Compacted bool
	// First is the oldest position still complete.
	First Cursor
	// Wait is closed when newer events arrive.
	Wait <-chan struct{}
}

// Events reads up to max events after the cursor, optionally only those of one
// customer (the customer whose meter or cap moved, or the caller).
func (f *FSM) Events(after Cursor, max int, customer string) EventsPage {
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := f.events
	page := EventsPage{Next: after, Wait: l.wake, First: Cursor{Index: l.first}}
	if l.first > 0 {
		page.First = Cursor{Index: l.first - 1, Seq: ^uint32(0)}
	}
	if after.Index+1 < l.first {
		page.Compacted = true
		return page
	}
	if max <= 0 {
		max = 1000
	}
	for i := 0; i < l.n && len(page.Records) < max; i++ {
		r := &l.buf[(l.head+i)%len(l.buf)]
		if !after.before(r) {
			continue
		}
		page.Next = Cursor{Index: r.Index, Seq: r.Seq}
		if customer != "" && r.Event.Customer != customer && r.Event.Caller != customer {
			continue
		}
		page.Records = append(page.Records, *r)
	}
	if len(page.Records) < max && f.index > page.Next.Index && customer != "" {
		// Everything applied so far was scanned: a filtered reader may skip ahead.
		page.Next = Cursor{Index: f.index, Seq: ^uint32(0)}
	}
	return page
}

// resultEvents are the events a result carries.
func resultEvents(r *Result) []engine.Event {
	if r.Decision != nil {
		return r.Decision.Events
	}
	return r.Events
}
