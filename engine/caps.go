package engine

import (
	"fmt"

	"github.com/shopspring/decimal"
)

// AddCapRequest is Limitr's add_customer_cap.
type AddCapRequest struct {
	Customer         string
	CapID            string // generated (cap-N) when empty
	Value            decimal.Decimal
	Credit           string // default rune
	Exchangeable     *bool  // default: true for rune and currencies, false for a named credit
	OverageOnly      bool
	IgnoreGrants     bool
	ObserveOnly      bool
	OverheadCost     bool
	FollowDecrements bool
	HardTrailing     bool
	Shared           bool
	SharedWith       []string
	Scope            []string
	Resets           bool
	ResetInc         int64 // ms
	ResetSch         string
	ExpiresOn        int64 // ms; 0 = never
}

// MaxCapsPerCustomer bounds standing caps per customer.
const MaxCapsPerCustomer = 64

// AddCap adds a standing cap. Refused (and nothing changes) when the id exists, the
// credit is unknown, or a field is invalid.
func (e *Engine) AddCap(now int64, req AddCapRequest) (*Cap, []Event, error) {
	c := e.Customer(req.Customer)
	if c == nil {
		return nil, nil, notFound("customer", req.Customer)
	}
	if req.Credit == "" {
		req.Credit = Rune
	}
	if !e.policy.knownCurrency(req.Credit) {
		return nil, nil, inputErr("credit", "unknown credit or currency %q", req.Credit)
	}
	if err := CheckAmount("value", req.Value); err != nil {
		return nil, nil, err
	}
	if req.Value.IsNegative() {
		return nil, nil, inputErr("value", "must be >= 0")
	}
	if req.CapID != "" {
		if err := validID("cap_id", req.CapID); err != nil {
			return nil, nil, err
		}
		for _, cp := range c.Caps {
			if cp.ID == req.CapID {
				return nil, nil, inputErr("cap_id", "customer %q already has a cap %q (reset or remove it first)", c.ID, req.CapID)
			}
		}
	}
	if len(c.Caps) >= MaxCapsPerCustomer {
		return nil, nil, inputErr("cap_id", "customer %q has the maximum of %d caps", c.ID, MaxCapsPerCustomer)
	}
	per, err := periodFrom("", req.Resets, req.ResetInc, req.ResetSch)
	if err != nil {
		return nil, nil, err
	}
	if req.ExpiresOn < 0 {
		return nil, nil, inputErr("expires_on", "must not be negative")
	}
	for i, s := range req.Scope {
		if err := validID(fmt.Sprintf("scope[%d]", i), s); err != nil {
			return nil, nil, err
		}
	}
	exch := req.Credit == Rune || e.isCurrency(req.Credit)
	if req.Exchangeable != nil {
		exch = *req.Exchangeable
	}
	id := req.CapID
	if id == "" {
		for {
			id = c.nextID("cap")
			if c.cap(id) == nil {
				break
			}
		}
	}
	cp := &Cap{
		ID: id, Credit: req.Credit, Value: req.Value, Exchangeable: exch,
		OverageOnly: req.OverageOnly, IgnoreGrants: req.IgnoreGrants, ObserveOnly: req.ObserveOnly,
		OverheadCost: req.OverheadCost, FollowDecrements: req.FollowDecrements, HardTrailing: req.HardTrailing,
		Shared: req.Shared, SharedWith: append([]string(nil), req.SharedWith...),
		Period: per, Created: now, Started: now, ExpiresOn: req.ExpiresOn,
	}
	if req.Scope != nil {
		cp.Scope = append([]string{}, req.Scope...)
	}
	if per.Sch != nil {
		// A calendar cap's period starts at the schedule's last boundary.
		cp.Started = per.Sch.Prev(now)
	}
	c.Caps = append(c.Caps, cp)
	return cp, []Event{
		{Type: EventCustomerCapAdded, Customer: c.ID, CapID: cp.ID, Cap: capSnapshot(cp)},
		{Type: EventCustomerSet, Customer: c.ID},
	}, nil
}

// periodFrom validates resets / reset_inc / reset_sch from a request.
func periodFrom(prefix string, resets bool, inc int64, sch string) (Period, error) {
	if inc < 0 {
		return Period{}, inputErr(prefix+"reset_inc", "must be greater than zero")
	}
	if inc > 0 && sch != "" {
		return Period{}, inputErr(prefix+"reset_sch", "reset_inc and reset_sch are mutually exclusive")
	}
	if sch != "" {
		s, err := ParseSchedule(sch)
		if err != nil {
			return Period{}, inputErr(prefix+"reset_sch", "%v", err)
		}
		return Period{Sch: &s}, nil
	}
	if inc > 0 {
		return Period{Inc: inc}, nil
	}
	if resets {
		return Period{Inc: defaultResetInc}, nil
	}
	return Period{}, nil
}

func (c *Customer) cap(id string) *Cap {
	for _, cp := range c.Caps {
		if cp.ID == id {
			return cp
		}
	}
	return nil
}

// CapView is a cap as of a moment: pending resets applied, nothing changed.
type CapView struct {
	Cap
	NextReset int64
	Remaining decimal.Decimal
}

// GetCap reads a cap as of now (0 after a pending reset). Expired caps are gone.
func (e *Engine) GetCap(now int64, customer, id string) (*CapView, error) {
	c := e.Customer(customer)
	if c == nil {
		return nil, notFound("customer", customer)
	}
	cp := c.cap(id)
	if cp == nil {
		return nil, notFound("cap", id)
	}
	cur, expired := cp.current(now)
	if expired {
		return nil, notFound("cap", id)
	}
	v := &CapView{Cap: *cp}
	v.MeterValue = cur
	start, _, _ := cp.Period.Advance(cp.Started, now)
	v.Started = start
	v.NextReset = cp.Period.NextReset(start)
	v.Remaining = maxDec(decimal.Zero, cp.Value.Sub(cur))
	return v, nil
}

// ListCaps reads every unexpired cap of a customer, in insertion order.
func (e *Engine) ListCaps(now int64, customer string) ([]*CapView, error) {
	c := e.Customer(customer)
	if c == nil {
		return nil, notFound("customer", customer)
	}
	var out []*CapView
	for _, cp := range c.Caps {
		if v, err := e.GetCap(now, c.ID, cp.ID); err == nil {
			out = append(out, v)
		}
	}
	return out, nil
}

// ResetCap zeroes a cap's meter value and restarts its clock.
func (e *Engine) ResetCap(now int64, customer, id string) ([]Event, error) {
	c := e.Customer(customer)
	if c == nil {
		return nil, notFound("customer", customer)
	}
	cp := c.cap(id)
	if cp == nil {
		return nil, notFound("cap", id)
	}
	cp.MeterValue = decimal.Zero
	cp.Started = now
	if cp.Period.Sch != nil {
		cp.Started = cp.Period.Sch.Prev(now)
	}
	return []Event{
		{Type: EventCustomerCapReset, Customer: c.ID, CapID: id, Cap: capSnapshot(cp)},
		{Type: EventCustomerSet, Customer: c.ID},
	}, nil
}

// RemoveCap deletes a cap.
func (e *Engine) RemoveCap(customer, id string) ([]Event, error) {
	c := e.Customer(customer)
	if c == nil {
		return nil, notFound("customer", customer)
	}
	for i, cp := range c.Caps {
		if cp.ID == id {
			c.Caps = append(c.Caps[:i], c.Caps[i+1:]...)
			return []Event{
				{Type: EventCustomerCapRemoved, Customer: c.ID, CapID: id},
				{Type: EventCustomerSet, Customer: c.ID},
			}, nil
		}
	}
	return nil, notFound("cap", id)
}
