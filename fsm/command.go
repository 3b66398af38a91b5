package fsm

import (
	"github.com/capstanhq/capstan/engine"
)

// Command is one mutating call on one shard, as it travels through the raft log.
// Exactly one operation field is set. The leader stamps Timestamp; the FSM applies
// max(Timestamp, last applied time) so time never runs backwards.
type Command struct {
	// RequestID is the client's idempotency key (or one the router generated). A
	// retried command with the same id and the same parameters is answered with the
	// original result and not applied again; the same id with other parameters is an
	// error.
	RequestID string
	Timestamp int64 // ms, UTC, stamped by the leader

	Allow          *engine.AllowRequest
	Increment      *engine.AllowRequest
	Decrement      *engine.AllowRequest
	Reserve        *engine.ReserveRequest
	Settle         *SettleOp
	Release        *ReleaseOp
	CreateCustomer *engine.CreateCustomerRequest
	DeleteCustomer *CustomerOp
	SetPlan        *SetPlanOp
	SetRefs        *SetRefsOp
	SetMetadata    *SetMetadataOp
	SetAltID       *AltOp
	DeleteAltID    *AltOp
	AddCap         *engine.AddCapRequest
	ResetCap       *CapOp
	RemoveCap      *CapOp
	ApplyTopup     *TopupOp
	Grant          *engine.GrantRequest
	CreateOverride *engine.OverrideRequest
	RemoveOverride *OverrideOp
	SetPolicy      *PolicyOp
}

// SettleOp drops a hold and records actual usage.
type SettleOp struct {
	HoldID string
	engine.AllowRequest
}

// ReleaseOp drops a hold.
type ReleaseOp struct {
	Customer, Entitlement, HoldID string
}

// CustomerOp names a customer.
type CustomerOp struct{ Customer string }

// SetPlanOp moves a customer to a plan.
type SetPlanOp struct {
	Customer        string
	Plan            string
	OverwriteMeters bool
}

// SetRefsOp replaces a customer's refs.
type SetRefsOp struct {
	Customer string
	Refs     []string
}

// SetMetadataOp replaces a customer's metadata.
type SetMetadataOp struct {
	Customer string
	Metadata map[string]string
}

// AltOp maps (or unmaps) an alternative id.
type AltOp struct{ Customer, Alt string }

// CapOp names a customer's cap.
type CapOp struct{ Customer, CapID string }

// TopupOp applies a plan topup.
type TopupOp struct{ Customer, Topup string }

// OverrideOp names a customer's override.
type OverrideOp struct{ Customer, Entitlement string }

// PolicyOp replaces the shard's policy. Version is assigned by whoever proposes the
// update (the cluster's meta group) and must increase; every decision records the
// version it used.
type PolicyOp struct {
	Text    string
	Format  string
	Version uint64
}

// Result is what applying a command answered. It is kept in the idempotency table
// (and in snapshots) so a duplicate gets the very same answer.
type Result struct {
	Index         uint64 // raft log index the command applied at
	Timestamp     int64  // the time the FSM used (ms)
	PolicyVersion uint64
	Decision      *engine.Decision // allow, increment, decrement, reserve, settle
	Released      bool             // release, remove override
	Cap           *engine.Cap      // add cap
	Grant         *engine.Grant    // grant, apply topup
	Limit         *engine.Limit    // create override: the customer's new limit
	Events        []engine.Event   // for non-decision operations (decisions carry their own)
	Err           *Error
	Duplicate     bool // answered from the idempotency table
}

// Error is a refused command: nothing changed.
type Error struct {
	Code    ErrorCode
	Field   string
	Message string
}

func (e *Error) Error() string { return e.Message }

// ErrorCode classifies refusals for the API edge.
type ErrorCode uint8

// Error codes.
const (
	CodeInvalidArgument ErrorCode = iota + 1
	CodeNotFound
	CodeFailedPrecondition // e.g. a request id reused with other parameters
	CodeInternal
)
