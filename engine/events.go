package engine

import "github.com/shopspring/decimal"

// Event names, as Limitr's.
const (
	EventMeterChanged         = "meter-changed"
	EventMeterOverage         = "meter-overage"
	EventMeterLimit           = "meter-limit"
	EventMeterGoverned        = "meter-governed"
	EventMeterReset           = "meter-reset"
	EventCapLimit             = "cap-limit"
	EventCapThresholdCrossed  = "cap-threshold-crossed"
	EventCustomerCapAdded     = "customer-cap-added"
	EventCustomerCapReset     = "customer-cap-reset"
	EventCustomerCapRemoved   = "customer-cap-removed"
	EventCustomerSet          = "customer-set"
	EventCustomerRemoved      = "customer-removed"
	EventCustomerPlanChanged  = "customer-plan-changed"
	EventCustomerTopupGranted = "customer-topup-granted"
)

// Event is one state change a call produced, in order. Optional fields are nil or
// empty when the event type does not carry them.
type Event struct {
	Type        string
	Customer    string // whose meter or cap moved (the scope owner / cap holder)
	Caller      string // who made the call, when different from Customer
	Entitlement string
	Plan        string
	Credit      string
	Meter       *MeterSnapshot
	Remaining   *decimal.Decimal // limit - value (credit units)
	// Overage is units past the limit not covered by grants (meter-overage), or the
	// would-be overage of a denied call (meter-limit).
	Overage           *decimal.Decimal
	GrantValueApplied *decimal.Decimal // credit units covered by grants
	InvalidValue      *decimal.Decimal // meter-limit: the value the meter would have had
	PriceDiff         *decimal.Decimal // what the call's billable units are worth (runes)
	OveragePrice      *decimal.Decimal // what the uncovered overage bills (runes)
	CapID             string
	Cap               *CapSnapshot
	Governor          *GovernorSnapshot
	Topup             string
	PreviousPlan      string
	NewPlan           string
	EventData         string // the caller's event data (JSON), if any
	Notification      string // set when a policy notification re-emitted this event
}

// MeterSnapshot is the meter part of a meter event.
type MeterSnapshot struct {
	Old          decimal.Decimal
	Value        decimal.Decimal
	Limit        decimal.Decimal
	Diff         decimal.Decimal
	Overhead     decimal.Decimal
	OverheadDiff decimal.Decimal
	Invalid      *decimal.Decimal
}

// CapSnapshot is the cap part of a cap event.
type CapSnapshot struct {
	ID         string
	Credit     string
	Value      decimal.Decimal
	MeterValue decimal.Decimal
	Requested  *decimal.Decimal // cap-limit: what the call would have added
}

// GovernorSnapshot is the governor part of meter-governed.
type GovernorSnapshot struct {
	Tokens    decimal.Decimal
	Capacity  decimal.Decimal
	Requested decimal.Decimal
}

func decPtr(d decimal.Decimal) *decimal.Decimal { return &d }

func capSnapshot(c *Cap) *CapSnapshot {
	return &CapSnapshot{ID: c.ID, Credit: c.Credit, Value: c.Value, MeterValue: c.MeterValue}
}
