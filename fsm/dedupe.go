package fsm

import (
	"time"

	"github.com/capstanhq/capstan/snapshot"
)

// Idempotency table defaults. They are part of the replicated state machine's
// behaviour: every replica of a shard must run with the same values, or replicas
// would disagree about which retries are duplicates.
const (
	DefaultDedupeWindow     = 24 * time.Hour
	DefaultDedupeMaxEntries = 100_000
	DefaultDedupeMaxBytes   = 64 << 20

	// entryOverhead approximates an entry's memory beyond its id and result
	// (struct, map slot, FIFO slot), so the byte bound tracks real memory.
	entryOverhead = 128
)

// dedupeEntry is one remembered command. Entries are immutable once added.
type dedupeEntry struct {
	id     string
	fp     [32]byte
	at     int64  // FSM time of the apply (ms)
	result []byte // encoded Result
}

func (e *dedupeEntry) size() int64 { return int64(len(e.id) + len(e.result) + entryOverhead) }

// dedupeTable remembers the results of recent request ids. Entries sit in a FIFO in
// apply order; since FSM time never goes backwards, the head is always the oldest,
// and eviction (by age, count and bytes) only ever pops the head. Everything is
// driven by command time inside Apply, so every replica evicts the same ids at the
// same log index.
type dedupeTable struct {
	window     int64 // ms
	maxEntries int
	maxBytes   int64

	byID  map[string]*dedupeEntry
	fifo  []*dedupeEntry // live entries are fifo[head:]
	head  int
	bytes int64
}

func newDedupeTable(window time.Duration, maxEntries int, maxBytes int64) *dedupeTable {
	return &dedupeTable{
		window: window.Milliseconds(), maxEntries: maxEntries, maxBytes: maxBytes,
		byID: map[string]*dedupeEntry{},
	}
}

func (t *dedupeTable) len() int { return len(t.fifo) - t.head }

func (t *dedupeTable) lookup(id string) *dedupeEntry { return t.byID[id] }

// add remembers e (whose id must not be present) and evicts past the bounds.
func (t *dedupeTable) add(e *dedupeEntry) {
	t.byID[e.id] = e
	t.fifo = append(t.fifo, e)
	t.bytes += e.size()
	t.evictOver()
}

// expire drops entries older than the window as of now.
func (t *dedupeTable) expire(now int64) {
	for t.len() > 0 && t.fifo[t.head].at < now-t.window {
		t.pop()
	}
}

func (t *dedupeTable) evictOver() {
	for t.len() > 0 && (t.len() > t.maxEntries || t.bytes > t.maxBytes) {
		t.pop()
	}
}

func (t *dedupeTable) pop() {
	e := t.fifo[t.head]
	t.fifo[t.head] = nil
	t.head++
	delete(t.byID, e.id)
	t.bytes -= e.size()
	// Compact once the dead prefix dominates, so the slice does not grow forever.
	if t.head >= 1024 && t.head*2 >= len(t.fifo) {
		live := make([]*dedupeEntry, t.len(), max(t.len()*2, 1024))
		copy(live, t.fifo[t.head:])
		t.fifo, t.head = live, 0
	}
}

// entries returns the live entries in apply order (a copy of the slice; the
// entries themselves are immutable and shared).
func (t *dedupeTable) entries() []*dedupeEntry {
	return append([]*dedupeEntry(nil), t.fifo[t.head:]...)
}

// restore rebuilds the table from snapshot records (already validated for order
// and uniqueness) and applies the current bounds.
func (t *dedupeTable) restore(es []snapshot.DedupeEntry) {
	t.byID = make(map[string]*dedupeEntry, len(es))
	t.fifo = make([]*dedupeEntry, 0, len(es))
	t.head, t.bytes = 0, 0
	for _, s := range es {
		e := &dedupeEntry{id: s.RequestID, fp: s.Fingerprint, at: s.AppliedAt, result: s.Result}
		t.byID[e.id] = e
		t.fifo = append(t.fifo, e)
		t.bytes += e.size()
	}
	t.evictOver()
}
