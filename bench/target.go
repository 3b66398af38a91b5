package bench

import (
	"context"
	"errors"
	"time"
)

// Outcome is what one request came back with.
type Outcome uint8

const (
	Allowed Outcome = iota
	Denied
	Failed // an error or a timeout: the decision is unknown
)

// Target is a system under test. Start brings it up (processes, listeners), Setup
// creates the fixture's customers and caps in it, Client returns one worker's
// connection to a client region's endpoint, and Close stops everything Start began.
type Target interface {
	// Name is the short name reports use ("in-process", "single-node", ...).
	Name() string
	// Describe says what exactly is measured (replication, durability, transport).
	Describe() string
	// Regions are the client regions with an endpoint; Op.Region indexes them.
	Regions() []string
	Start(ctx context.Context) error
	Setup(ctx context.Context, f *Fixture) error
	// Supports reports whether the target implements a request kind.
	Supports(k OpKind) bool
	// Client returns worker w's client for region r. Clients are used by one
	// goroutine at a time.
	Client(w int, region int) (Client, error)
	Close() error
}

// Client sends one scheduled request and returns its outcome; err says why it failed
// (err != nil exactly when the outcome is Failed).
type Client interface {
	Do(ctx context.Context, op *Op) (Outcome, error)
}

// Profiler is a target that can profile itself while it is measured.
type Profiler interface {
	CPUProfile(ctx context.Context, d time.Duration) ([]byte, error)
}

// CPUReporter is a target running in processes of its own: ServerCPU is their CPU
// time so far, so a run can report how much of the machine the target used.
type CPUReporter interface {
	ServerCPU() time.Duration
}

// ErrNotAvailable marks a target that cannot run here (a binary or a server mode
// that does not exist yet); reports show it as "not available" with the reason.
var ErrNotAvailable = errors.New("not available")

// NullTarget answers every request at once without doing anything: a run against it
// measures the generator alone (its CPU per request and the latency floor it adds).
type NullTarget struct{}

func (NullTarget) Name() string { return "null" }
func (NullTarget) Describe() string {
	return "no-op target: the generator's own cost and latency floor"
}
func (NullTarget) Regions() []string                        { return []string{"local"} }
func (NullTarget) Start(context.Context) error              { return nil }
func (NullTarget) Setup(context.Context, *Fixture) error    { return nil }
func (NullTarget) Supports(OpKind) bool                     { return true }
func (NullTarget) Client(int, int) (Client, error)          { return nullClient{}, nil }
func (NullTarget) Close() error                             { return nil }
func (nullClient) Do(context.Context, *Op) (Outcome, error) { return Allowed, nil }

type nullClient struct{}
