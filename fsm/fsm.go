package fsm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/snapshot"
)

// MaxRequestIDLength bounds idempotency keys.
const MaxRequestIDLength = 256

// ErrNoPolicy: the shard has not applied a policy yet, so it cannot decide or read.
var ErrNoPolicy = errors.New("shard has no policy yet")

// Options configures an FSM. The dedupe settings must be the same on every replica
// of a shard (see DefaultDedupeWindow).
type Options struct {
	// Shard is the shard id; it is written into snapshots, and a snapshot of
	// another shard is refused on restore.
	Shard int
	// DedupeWindow: request ids are remembered for this long in FSM (leader-stamped)
	// time. Default DefaultDedupeWindow.
	DedupeWindow time.Duration
	// DedupeMaxEntries and DedupeMaxBytes bound the table; past them the oldest ids
	// are forgotten early. Defaults DefaultDedupeMaxEntries, DefaultDedupeMaxBytes.
	DedupeMaxEntries int
	DedupeMaxBytes   int64
	// Logger receives apply failures (panics converted to CodeInternal) and
	// snapshot/restore summaries. Default slog.Default().
	Logger *slog.Logger
	// EventLogSize bounds the events kept for streaming consumers. Default
	// DefaultEventLogSize.
	EventLogSize int
}

// FSM is one shard's replicated state machine over one engine.Engine. It implements
// raft.FSM and raft.BatchingFSM. Apply is deterministic: it reads no wall clock,
// draws no randomness, iterates no map and starts no goroutine; its only inputs are
// the log entries' bytes, indexes and terms.
type FSM struct {
	opts   Options
	logger *slog.Logger

	// mu guards everything below. Apply and Restore take it exclusively, readers
	// (Read, StateHash, Snapshot's capture) share it.
	mu           sync.RWMutex
	eng          *engine.Engine
	policyText   string
	policyFormat string
	// policyVersion is written under mu (Apply, Restore) and atomic so that
	// PolicyVersion can be read on the request path without taking mu.
	policyVersion atomic.Uint64
	clock         int64 // ms; max of every command time applied
	index, term   uint64
	dedupe        *dedupeTable
	events        *eventLog // newest events, for streaming consumers (not in snapshots)
	gen           uint64    // bumped on every change; keys the state hash cache

	hashMu   sync.Mutex
	hashGen  uint64
	hashVal  [32]byte
	hashSeen bool
}

// New returns an empty FSM for one shard: no policy (version 0), no customers.
// The first policy arrives through the log as a SetPolicy command, so every
// replica starts from the same state.
func New(opts Options) *FSM {
	if opts.DedupeWindow <= 0 {
		opts.DedupeWindow = DefaultDedupeWindow
	}
	if opts.DedupeMaxEntries <= 0 {
		opts.DedupeMaxEntries = DefaultDedupeMaxEntries
	}
	if opts.DedupeMaxBytes <= 0 {
		opts.DedupeMaxBytes = DefaultDedupeMaxBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &FSM{
		opts:   opts,
		logger: opts.Logger.With("shard", opts.Shard),
		eng:    engine.New(nil),
		dedupe: newDedupeTable(opts.DedupeWindow, opts.DedupeMaxEntries, opts.DedupeMaxBytes),
		events: newEventLog(opts.EventLogSize),
	}
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// Apply applies one log entry; the response is a *Result (nil for entries that are
// not commands).
func (f *FSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	return f.applyLog(l)
}

// ApplyBatch applies committed entries in order under one lock acquisition.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	for i, l := range logs {
		out[i] = f.applyLog(l)
	}
	return out
}

func (f *FSM) applyLog(l *raft.Log) (out any) {
	// Last resort: execute recovers engine panics itself; this catches a bug in
	// the decoding path so that one bad entry cannot crash-loop every replica.
	defer func() {
		if p := recover(); p != nil {
			f.logger.Error("panic applying log entry", "index", l.Index, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			out = f.refusal(l.Index, f.clock, codeError(CodeInternal, "", "internal error applying log entry %d", l.Index))
		}
	}()
	if l.Index > f.index {
		f.index, f.term = l.Index, l.Term
	}
	if l.Type != raft.LogCommand {
		return nil // configuration changes concern raft, not the engine
	}
	return f.applyCommand(l.Index, l.Data)
}

// applyCommand is decode → dedupe → apply → remember. l.AppendedAt is never read.
func (f *FSM) applyCommand(index uint64, data []byte) *Result {
	p, perr := decodeCommandPB(data)
	if perr != nil {
		f.logger.Warn("undecodable log entry refused", "index", index, "err", perr.Message)
		return f.refusal(index, f.clock, perr)
	}
	now := max(p.TimestampMs, f.clock)
	f.clock = now
	f.dedupe.expire(now)

	id := p.RequestId
	if len(id) > MaxRequestIDLength {
		return f.refusal(index, now, invalid("request_id", "longer than %d bytes", MaxRequestIDLength))
	}
	fp, ferr := Fingerprint(data)
	if ferr != nil {
		return f.refusal(index, now, ferr.(*Error))
	}
	if id != "" {
		if prev := f.dedupe.lookup(id); prev != nil {
			if prev.fp != fp {
				return f.refusal(index, now, codeError(CodeFailedPrecondition, "request_id", "request id reused with different parameters"))
			}
			r, err := DecodeResult(prev.result)
			if err != nil {
				// Only a bug can get here: the table holds our own encodings.
				f.logger.Error("stored result does not decode", "request_id", id, "err", err)
				return f.refusal(index, now, codeError(CodeInternal, "", "stored result of request %q is unreadable", id))
			}
			r.Duplicate = true
			return r
		}
	}

	var res *Result
	if cmd, err := commandFromPB(p); err != nil {
		res = &Result{Err: asError(err)}
	} else {
		res = f.execute(index, now, cmd)
	}
	res.Index, res.Timestamp, res.PolicyVersion = index, now, f.policyVersion.Load()
	f.events.append(index, now, id, f.policyVersion.Load(), resultEvents(res))

	if id != "" {
		enc, err := EncodeResult(res)
		if err != nil {
			f.logger.Error("result does not encode; request id not remembered", "request_id", id, "err", err)
			return res
		}
		f.dedupe.add(&dedupeEntry{id: id, fp: fp, at: now, result: enc})
	}
	return res
}

// refusal is a result that changes nothing and is not remembered.
func (f *FSM) refusal(index uint64, now int64, e *Error) *Result {
	return &Result{Index: index, Timestamp: now, PolicyVersion: f.policyVersion.Load(), Err: e}
}

// execute runs one decoded command against the engine. A panic (an engine bug) is
// logged with its stack and answered as CodeInternal; since every replica runs the
// same code on the same input, they all fail the same way.
func (f *FSM) execute(index uint64, now int64, cmd *Command) (res *Result) {
	defer func() {
		if p := recover(); p != nil {
			f.logger.Error("panic applying command", "index", index, "op", cmd.OpName(),
				"request_id", cmd.RequestID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res = &Result{Err: codeError(CodeInternal, "", "internal error applying %s", cmd.OpName())}
		}
	}()
	if cmd.SetPolicy != nil {
		return f.setPolicy(cmd.SetPolicy)
	}
	if f.policyVersion.Load() == 0 {
		return &Result{Err: codeError(CodeFailedPrecondition, "", "%v", ErrNoPolicy)}
	}
	return run(f.eng, now, cmd)
}

func (f *FSM) setPolicy(op *PolicyOp) *Result {
	switch {
	case op.Version == 0:
		return &Result{Err: invalid("version", "policy version must be > 0")}
	case op.Version < f.policyVersion.Load():
		return &Result{Err: codeError(CodeFailedPrecondition, "version",
			"policy version %d is older than the shard's version %d", op.Version, f.policyVersion.Load())}
	case op.Version == f.policyVersion.Load():
		if op.Text == f.policyText && op.Format == f.policyFormat {
			return &Result{} // already in force: replaying an update is harmless
		}
		return &Result{Err: codeError(CodeFailedPrecondition, "version",
			"policy version %d is already in force with a different document", op.Version)}
	}
	if len(op.Text) > snapshot.MaxPolicyText || len(op.Format) > snapshot.MaxPolicyFormat {
		return &Result{Err: invalid("policy", "policy document larger than %d bytes", snapshot.MaxPolicyText)}
	}
	p, err := engine.LoadPolicy(op.Text, op.Format)
	if err != nil {
		return &Result{Err: invalid("policy", "%v", err)}
	}
	f.eng.SetPolicy(p)
	f.policyText, f.policyFormat = op.Text, op.Format
	f.policyVersion.Store(op.Version)
	return &Result{}
}

// run dispatches one operation. Refusals come back as Result.Err.
func run(e *engine.Engine, now int64, c *Command) *Result {
	res := &Result{}
	var err error
	decision := func(d engine.Decision, derr error) {
		if err = derr; err == nil {
			res.Decision = &d
		}
	}
	switch {
	case c.Allow != nil:
		decision(e.Allow(now, *c.Allow))
	case c.Increment != nil:
		decision(e.Increment(now, *c.Increment))
	case c.Decrement != nil:
		decision(e.Decrement(now, *c.Decrement))
	case c.Reserve != nil:
		decision(e.Reserve(now, *c.Reserve))
	case c.Settle != nil:
		decision(e.Settle(now, c.Settle.HoldID, c.Settle.AllowRequest))
	case c.Release != nil:
		res.Released, err = e.Release(now, c.Release.Customer, c.Release.Entitlement, c.Release.HoldID)
	case c.CreateCustomer != nil:
		_, res.Events, err = e.CreateCustomer(now, *c.CreateCustomer)
	case c.DeleteCustomer != nil:
		res.Events, err = e.DeleteCustomer(c.DeleteCustomer.Customer)
	case c.SetPlan != nil:
		res.Events, err = e.SetCustomerPlan(now, c.SetPlan.Customer, c.SetPlan.Plan, c.SetPlan.OverwriteMeters)
	case c.SetRefs != nil:
		res.Events, err = e.SetCustomerRefs(c.SetRefs.Customer, c.SetRefs.Refs)
	case c.SetMetadata != nil:
		res.Events, err = e.SetCustomerMetadata(c.SetMetadata.Customer, c.SetMetadata.Metadata)
	case c.SetAltID != nil:
		res.Events, err = e.SetAltID(c.SetAltID.Customer, c.SetAltID.Alt)
	case c.DeleteAltID != nil:
		if owner := e.Customer(c.DeleteAltID.Alt); c.DeleteAltID.Customer != "" &&
			(owner == nil || owner.ID != c.DeleteAltID.Customer || owner.ID == c.DeleteAltID.Alt) {
			err = fmt.Errorf("alt id %q of customer %q: %w", c.DeleteAltID.Alt, c.DeleteAltID.Customer, engine.ErrNotFound)
			break
		}
		res.Events, err = e.DeleteAltID(c.DeleteAltID.Alt)
	case c.AddCap != nil:
		var cp *engine.Cap
		if cp, res.Events, err = e.AddCap(now, *c.AddCap); err == nil {
			res.Cap = cloneCap(cp)
		}
	case c.ResetCap != nil:
		res.Events, err = e.ResetCap(now, c.ResetCap.Customer, c.ResetCap.CapID)
	case c.RemoveCap != nil:
		res.Events, err = e.RemoveCap(c.RemoveCap.Customer, c.RemoveCap.CapID)
	case c.ApplyTopup != nil:
		var g *engine.Grant
		if g, res.Events, err = e.ApplyTopup(now, c.ApplyTopup.Customer, c.ApplyTopup.Topup); err == nil {
			res.Grant = cloneGrant(g)
		}
	case c.Grant != nil:
		var g *engine.Grant
		if g, res.Events, err = e.Grant(now, *c.Grant); err == nil {
			res.Grant = cloneGrant(g)
		}
	case c.CreateOverride != nil:
		var l *engine.Limit
		if l, res.Events, err = e.CreateOverride(now, *c.CreateOverride); err == nil {
			res.Limit = cloneLimit(l)
		}
	case c.RemoveOverride != nil:
		res.Released, res.Events, err = e.RemoveOverride(c.RemoveOverride.Customer, c.RemoveOverride.Entitlement)
	default:
		err = invalid("", "command has no operation")
	}
	if err != nil {
		return &Result{Err: asError(err)}
	}
	return res
}

// asError maps an engine refusal onto a coded Error.
func asError(err error) *Error {
	var fe *Error
	var ie *engine.InputError
	var ve *engine.ValidationError
	var pe *engine.ParseError
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.As(err, &ie):
		return &Error{Code: CodeInvalidArgument, Field: ie.Field, Message: ie.Error()}
	case errors.Is(err, engine.ErrNotFound):
		return &Error{Code: CodeNotFound, Message: err.Error()}
	case errors.As(err, &ve), errors.As(err, &pe):
		return &Error{Code: CodeInvalidArgument, Field: "policy", Message: err.Error()}
	default:
		return &Error{Code: CodeInternal, Message: err.Error()}
	}
}

// The engine returns pointers into live state for caps, grants and limits; a
// Result outlives the apply (and is read on other goroutines), so it gets copies.

func cloneCap(c *engine.Cap) *engine.Cap {
	if c == nil {
		return nil
	}
	cp := *c
	cp.SharedWith = append([]string(nil), c.SharedWith...)
	if c.Scope != nil {
		cp.Scope = append([]string{}, c.Scope...)
	}
	return &cp
}

func cloneGrant(g *engine.Grant) *engine.Grant {
	if g == nil {
		return nil
	}
	cp := *g
	cp.RolloverMin, cp.RolloverMax = cloneDec(g.RolloverMin), cloneDec(g.RolloverMax)
	cp.RolloverPct, cp.MaxBalance = cloneDec(g.RolloverPct), cloneDec(g.MaxBalance)
	return &cp
}

func cloneLimit(l *engine.Limit) *engine.Limit {
	if l == nil {
		return nil
	}
	cp := *l
	cp.Minimum = cloneDec(l.Minimum)
	if l.Governor != nil {
		g := *l.Governor
		cp.Governor = &g
	}
	return &cp
}

func cloneDec[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// --- reads ---

// Read runs fn under the read lock with the engine and the FSM's clock (the
// latest command time applied). fn must not modify the engine or keep references
// into it after returning. ErrNoPolicy before the first policy was applied.
func (f *FSM) Read(fn func(e *engine.Engine, clock int64) error) error {
	_, _, err := f.ReadAt(fn)
	return err
}

// ReadAt is Read that also reports the state fn saw: the applied index and the
// policy version, both fixed for as long as fn runs (commands apply under the
// write lock), so an answer never mixes two policy versions.
func (f *FSM) ReadAt(fn func(e *engine.Engine, clock int64) error) (index, policyVersion uint64, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	index, policyVersion = f.index, f.policyVersion.Load()
	if policyVersion == 0 {
		return index, 0, ErrNoPolicy
	}
	return index, policyVersion, fn(f.eng, f.clock)
}

// Policy returns the policy in force and its version (0: none yet).
func (f *FSM) Policy() (text, format string, version uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.policyText, f.policyFormat, f.policyVersion.Load()
}

// Info is a consistent summary of the FSM.
type Info struct {
	Shard         int
	AppliedIndex  uint64 // last log entry applied (or restored from a snapshot)
	AppliedTerm   uint64
	PolicyVersion uint64
	Clock         int64
	Customers     int
	DedupeEntries int
}

// Info returns a summary under the read lock.
// PolicyVersion is the version of the policy applied last (0: none yet),
// read without the FSM's lock (cheap on the request path).
func (f *FSM) PolicyVersion() uint64 { return f.policyVersion.Load() }

func (f *FSM) Info() Info {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return Info{
		Shard: f.opts.Shard, AppliedIndex: f.index, AppliedTerm: f.term, PolicyVersion: f.policyVersion.Load(),
		Clock: f.clock, Customers: f.eng.Len(), DedupeEntries: f.dedupe.len(),
	}
}

// LookupRequest returns the remembered result of a request id (with Duplicate
// set), e.g. to resolve operations whose outcome the caller never learned.
func (f *FSM) LookupRequest(id string) (*Result, bool) {
	f.mu.RLock()
	e := f.dedupe.lookup(id)
	f.mu.RUnlock()
	if e == nil {
		return nil, false
	}
	r, err := DecodeResult(e.result)
	if err != nil {
		return nil, false
	}
	r.Duplicate = true
	return r, true
}

// StateHash is SHA-256 over the shard's canonical state: the snapshot body (see
// package snapshot) with shard, index and term zeroed, i.e. policy version and
// document, clock, every customer's canonical encoding in id order and the dedupe
// table in apply order. Replicas at the same applied index have equal hashes. It
// costs an encoding of the whole shard under the read lock, which holds up Apply
// as long (cached until the next change).
func (f *FSM) StateHash() [32]byte {
	h, _ := f.StateHashAt()
	return h
}

// StateHashAt is StateHash with the applied index the hash describes.
func (f *FSM) StateHashAt() (hash [32]byte, index uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.hashMu.Lock()
	defer f.hashMu.Unlock()
	if f.hashSeen && f.hashGen == f.gen {
		return f.hashVal, f.index
	}
	c, err := f.captureLocked(false)
	var w *snapshot.Writer
	if err == nil {
		w, err = snapshot.NewWriter(io.Discard, c.hdr)
	}
	if err == nil {
		err = c.writeBody(w)
	}
	if err != nil {
		// Live customers always encode and the policy size is bounded on apply, so
		// only a bug gets here; answer a zero hash rather than crash an operator call.
		f.logger.Error("state hash failed", "err", err)
		return [32]byte{}, f.index
	}
	f.hashVal, f.hashGen, f.hashSeen = w.Sum(), f.gen, true
	return f.hashVal, f.index
}
