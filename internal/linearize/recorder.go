package linearize

import (
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// History is a recorded (or hand-written) set of operations and the cap of
// every customer they touch. Inputs are Input and outputs are Output.
type History struct {
	Caps map[string]int64
	Ops  []porcupine.Operation
}

// Recorder collects a History from concurrent clients. Timestamps are
// nanoseconds since the Recorder was created, read from Go's monotonic clock.
type Recorder struct {
	start time.Time
	caps  map[string]int64

	mu       sync.Mutex
	ops      []porcupine.Operation
	done     []bool
	unknowns map[string]int
}

// NewRecorder returns a Recorder for customers with the given caps. The map
// is copied.
func NewRecorder(caps map[string]int64) *Recorder {
	return &Recorder{
		start:    time.Now(),
		caps:     maps.Clone(caps),
		unknowns: make(map[string]int),
	}
}

func (r *Recorder) now() int64 { return time.Since(r.start).Nanoseconds() }

// Call records the invocation of in by client (a small zero-based id, one
// per concurrent worker: porcupine's visualisation draws a row per client)
// and returns the function to call exactly once with what came back. Call it
// immediately before sending the request, and call the returned function
// immediately after the response (or the give-up) so the recorded interval
// contains the real one. An operation whose function is never called is
// treated as unknown.
func (r *Recorder) Call(client int, in Input) func(Output) {
	call := r.now()
	r.mu.Lock()
	i := len(r.ops)
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: Unknown()})
	r.done = append(r.done, false)
	r.mu.Unlock()
	return func(out Output) {
		ret := r.now()
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.done[i] {
			panic(fmt.Sprintf("linearize: operation %d (%s) returned twice", i, describe(in, out)))
		}
		r.done[i] = true
		r.ops[i].Output = out
		r.ops[i].Return = ret
		if !out.Known {
			r.unknowns[in.Customer]++
		}
	}
}

// Unknowns is the number of completed operations on customer whose outcome
// is unknown. Workloads use it to keep unknowns per customer in the tens.
func (r *Recorder) Unknowns(customer string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unknowns[customer]
}

// History returns a copy of everything recorded so far. Operations still in
// flight are included with an unknown outcome.
func (r *Recorder) History() History {
	end := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := make([]porcupine.Operation, len(r.ops))
	copy(ops, r.ops)
	for i := range ops {
		if !r.done[i] {
			ops[i].Return = end
		}
	}
	return History{Caps: maps.Clone(r.caps), Ops: ops}
}

// Resolution is what the system's dedupe table says about a request id.
type Resolution struct {
	// Applied is false when the request never reached the state machine.
	Applied bool
	// Allowed is the decision the state machine recorded, if Applied.
	Allowed bool
}

// Resolve settles allows whose outcome is unknown by asking lookup about
// their RequestID; lookup returns ok=false when it cannot tell. An allow that
// was never applied is removed; one that was applied gets its decision but
// keeps an open return time, because it may have been applied long after the
// client gave up.
//
// "Never applied" is only true once nothing can still apply the id (the run
// is over, retries have stopped, proposals have drained) and the id cannot
// have been evicted from the table; lookup must answer ok=false otherwise.
func (h History) Resolve(lookup func(requestID string) (res Resolution, ok bool)) History {
	ops := make([]porcupine.Operation, 0, len(h.Ops))
	for _, op := range h.Ops {
		in, out := op.Input.(Input), op.Output.(Output)
		if in.Kind == KindAllow && !out.Known && in.RequestID != "" {
			if res, ok := lookup(in.RequestID); ok {
				if !res.Applied {
					continue
				}
				op.Output = Output{Known: true, Allowed: res.Allowed}
				op.Return = OpenReturn
			}
		}
		ops = append(ops, op)
	}
	return History{Caps: maps.Clone(h.Caps), Ops: ops}
}
