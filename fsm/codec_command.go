package fsm

import (
	"fmt"

	"github.com/capstanhq/capstan/engine"
	fsmv1 "github.com/capstanhq/capstan/internal/gen/capstan/fsm/v1"
)

// OpName names the operation set in cmd ("allow", "set_policy", ...), "" when none
// is set and "multiple" when more than one is.
func (c *Command) OpName() string {
	name := ""
	n := 0
	for _, op := range c.ops() {
		if op.set {
			name = op.name
			n++
		}
	}
	switch n {
	case 0:
		return ""
	case 1:
		return name
	default:
		return "multiple"
	}
}

type opSlot struct {
	name string
	set  bool
}

func (c *Command) ops() [21]opSlot {
	return [21]opSlot{
		{"allow", c.Allow != nil},
		{"increment", c.Increment != nil},
		{"decrement", c.Decrement != nil},
		{"reserve", c.Reserve != nil},
		{"settle", c.Settle != nil},
		{"release", c.Release != nil},
		{"create_customer", c.CreateCustomer != nil},
		{"delete_customer", c.DeleteCustomer != nil},
		{"set_plan", c.SetPlan != nil},
		{"set_refs", c.SetRefs != nil},
		{"set_metadata", c.SetMetadata != nil},
		{"set_alt_id", c.SetAltID != nil},
		{"delete_alt_id", c.DeleteAltID != nil},
		{"add_cap", c.AddCap != nil},
		{"reset_cap", c.ResetCap != nil},
		{"remove_cap", c.RemoveCap != nil},
		{"apply_topup", c.ApplyTopup != nil},
		{"grant", c.Grant != nil},
		{"create_override", c.CreateOverride != nil},
		{"remove_override", c.RemoveOverride != nil},
		{"set_policy", c.SetPolicy != nil},
	}
}

// Customer returns the customer id a command is about ("" for set_policy and for
// delete_alt_id, which names only the alt id). The router shards on it.
func (c *Command) Customer() string {
	switch {
	case c.Allow != nil:
		return c.Allow.Customer
	case c.Increment != nil:
		return c.Increment.Customer
	case c.Decrement != nil:
		return c.Decrement.Customer
	case c.Reserve != nil:
		return c.Reserve.Customer
	case c.Settle != nil:
		return c.Settle.Customer
	case c.Release != nil:
		return c.Release.Customer
	case c.CreateCustomer != nil:
		return c.CreateCustomer.ID
	case c.DeleteCustomer != nil:
		return c.DeleteCustomer.Customer
	case c.SetPlan != nil:
		return c.SetPlan.Customer
	case c.SetRefs != nil:
		return c.SetRefs.Customer
	case c.SetMetadata != nil:
		return c.SetMetadata.Customer
	case c.SetAltID != nil:
		return c.SetAltID.Customer
	case c.DeleteAltID != nil:
		return c.DeleteAltID.Customer
	case c.AddCap != nil:
		return c.AddCap.Customer
	case c.ResetCap != nil:
		return c.ResetCap.Customer
	case c.RemoveCap != nil:
		return c.RemoveCap.Customer
	case c.ApplyTopup != nil:
		return c.ApplyTopup.Customer
	case c.Grant != nil:
		return c.Grant.Customer
	case c.CreateOverride != nil:
		return c.CreateOverride.Customer
	case c.RemoveOverride != nil:
		return c.RemoveOverride.Customer
	}
	return ""
}

func commandToPB(c *Command) (*fsmv1.Command, error) {
	if c == nil {
		return nil, invalid("", "nil command")
	}
	switch name := c.OpName(); name {
	case "":
		return nil, invalid("", "command has no operation")
	case "multiple":
		return nil, invalid("", "command has more than one operation")
	}
	p := &fsmv1.Command{RequestId: c.RequestID, TimestampMs: c.Timestamp}
	var err error
	switch {
	case c.Allow != nil:
		var a *fsmv1.AllowOp
		a, err = allowToPB(c.Allow)
		p.Op = &fsmv1.Command_Allow{Allow: a}
	case c.Increment != nil:
		var a *fsmv1.AllowOp
		a, err = allowToPB(c.Increment)
		p.Op = &fsmv1.Command_Increment{Increment: a}
	case c.Decrement != nil:
		var a *fsmv1.AllowOp
		a, err = allowToPB(c.Decrement)
		p.Op = &fsmv1.Command_Decrement{Decrement: a}
	case c.Reserve != nil:
		var a *fsmv1.AllowOp
		a, err = allowToPB(&c.Reserve.AllowRequest)
		rop := &fsmv1.ReserveOp{Allow: a, Omitted: c.Reserve.Omitted, TtlMs: c.Reserve.TTL}
		if !c.Reserve.Quantile.IsZero() {
			q, err := decText("quantile", c.Reserve.Quantile)
			if err != nil {
				return nil, err
			}
			rop.Quantile = q
		}
		p.Op = &fsmv1.Command_Reserve{Reserve: rop}
	case c.Settle != nil:
		var a *fsmv1.AllowOp
		a, err = allowToPB(&c.Settle.AllowRequest)
		p.Op = &fsmv1.Command_Settle{Settle: &fsmv1.SettleOp{HoldId: c.Settle.HoldID, Allow: a}}
	case c.Release != nil:
		r := c.Release
		p.Op = &fsmv1.Command_Release{Release: &fsmv1.ReleaseOp{Customer: r.Customer, Entitlement: r.Entitlement, HoldId: r.HoldID}}
	case c.CreateCustomer != nil:
		r := c.CreateCustomer
		p.Op = &fsmv1.Command_CreateCustomer{CreateCustomer: &fsmv1.CreateCustomerOp{
			Id: r.ID, Plan: r.Plan, Type: r.Type, Label: r.Label,
			Refs: r.Refs, Alts: r.Alts, Metadata: r.Metadata, MetadataSet: r.Metadata != nil,
		}}
	case c.DeleteCustomer != nil:
		p.Op = &fsmv1.Command_DeleteCustomer{DeleteCustomer: &fsmv1.CustomerOp{Customer: c.DeleteCustomer.Customer}}
	case c.SetPlan != nil:
		r := c.SetPlan
		p.Op = &fsmv1.Command_SetPlan{SetPlan: &fsmv1.SetPlanOp{Customer: r.Customer, Plan: r.Plan, OverwriteMeters: r.OverwriteMeters}}
	case c.SetRefs != nil:
		p.Op = &fsmv1.Command_SetRefs{SetRefs: &fsmv1.SetRefsOp{Customer: c.SetRefs.Customer, Refs: c.SetRefs.Refs}}
	case c.SetMetadata != nil:
		p.Op = &fsmv1.Command_SetMetadata{SetMetadata: &fsmv1.SetMetadataOp{Customer: c.SetMetadata.Customer, Metadata: c.SetMetadata.Metadata}}
	case c.SetAltID != nil:
		p.Op = &fsmv1.Command_SetAltId{SetAltId: &fsmv1.AltOp{Customer: c.SetAltID.Customer, Alt: c.SetAltID.Alt}}
	case c.DeleteAltID != nil:
		p.Op = &fsmv1.Command_DeleteAltId{DeleteAltId: &fsmv1.AltOp{Customer: c.DeleteAltID.Customer, Alt: c.DeleteAltID.Alt}}
	case c.AddCap != nil:
		var a *fsmv1.AddCapOp
		a, err = addCapToPB(c.AddCap)
		p.Op = &fsmv1.Command_AddCap{AddCap: a}
	case c.ResetCap != nil:
		p.Op = &fsmv1.Command_ResetCap{ResetCap: &fsmv1.CapOp{Customer: c.ResetCap.Customer, CapId: c.ResetCap.CapID}}
	case c.RemoveCap != nil:
		p.Op = &fsmv1.Command_RemoveCap{RemoveCap: &fsmv1.CapOp{Customer: c.RemoveCap.Customer, CapId: c.RemoveCap.CapID}}
	case c.ApplyTopup != nil:
		p.Op = &fsmv1.Command_ApplyTopup{ApplyTopup: &fsmv1.TopupOp{Customer: c.ApplyTopup.Customer, Topup: c.ApplyTopup.Topup}}
	case c.Grant != nil:
		r := c.Grant
		var v string
		v, err = decText("value", r.Value)
		p.Op = &fsmv1.Command_Grant{Grant: &fsmv1.GrantOp{Customer: r.Customer, Id: r.ID, Credit: r.Credit, Value: v, ExpiresOnMs: r.ExpiresOn}}
	case c.CreateOverride != nil:
		var o *fsmv1.OverrideOp
		o, err = overrideToPB(c.CreateOverride)
		p.Op = &fsmv1.Command_CreateOverride{CreateOverride: o}
	case c.RemoveOverride != nil:
		p.Op = &fsmv1.Command_RemoveOverride{RemoveOverride: &fsmv1.OverrideRefOp{Customer: c.RemoveOverride.Customer, Entitlement: c.RemoveOverride.Entitlement}}
	case c.SetPolicy != nil:
		r := c.SetPolicy
		p.Op = &fsmv1.Command_SetPolicy{SetPolicy: &fsmv1.PolicyOp{Text: r.Text, Format: r.Format, Version: r.Version}}
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

func allowToPB(r *engine.AllowRequest) (*fsmv1.AllowOp, error) {
	v, err := decText("value", r.Value)
	if err != nil {
		return nil, err
	}
	a := &fsmv1.AllowOp{
		Customer: r.Customer, Entitlement: r.Entitlement, Value: v, Unit: r.Unit,
		EventData: r.EventData, NoEvents: r.NoEvents, Force: r.Force, Segment: r.Segment,
	}
	if r.Basis != nil {
		b, err := decText("basis", *r.Basis)
		if err != nil {
			return nil, err
		}
		a.Basis = &b
	}
	if len(r.Caps) > 0 {
		a.Caps = make([]*fsmv1.CallCap, len(r.Caps))
		for i, cc := range r.Caps {
			cv, err := decText(fmt.Sprintf("caps[%d].value", i), cc.Value)
			if err != nil {
				return nil, err
			}
			a.Caps[i] = &fsmv1.CallCap{Credit: cc.Credit, Value: cv}
		}
	}
	if r.Overhead != nil {
		o, err := decText("overhead", *r.Overhead)
		if err != nil {
			return nil, err
		}
		a.Overhead = &o
	}
	return a, nil
}

func addCapToPB(r *engine.AddCapRequest) (*fsmv1.AddCapOp, error) {
	v, err := decText("value", r.Value)
	if err != nil {
		return nil, err
	}
	return &fsmv1.AddCapOp{
		Customer: r.Customer, CapId: r.CapID, Value: v, Credit: r.Credit, Exchangeable: r.Exchangeable,
		OverageOnly: r.OverageOnly, IgnoreGrants: r.IgnoreGrants, ObserveOnly: r.ObserveOnly,
		OverheadCost: r.OverheadCost, FollowDecrements: r.FollowDecrements, HardTrailing: r.HardTrailing,
		Shared: r.Shared, SharedWith: r.SharedWith, Scope: r.Scope, ScopeSet: r.Scope != nil,
		Resets: r.Resets, ResetIncMs: r.ResetInc, ResetSch: r.ResetSch, ExpiresOnMs: r.ExpiresOn,
	}, nil
}

func overrideToPB(r *engine.OverrideRequest) (*fsmv1.OverrideOp, error) {
	o := &fsmv1.OverrideOp{
		Customer: r.Customer, Entitlement: r.Entitlement, ExpiresMs: r.Expires, Credit: r.Credit,
		Mode: r.Mode, Resets: r.Resets, ResetIncMs: r.ResetInc, ResetSch: r.ResetSch,
	}
	if r.Value != nil {
		v, err := decText("value", *r.Value)
		if err != nil {
			return nil, err
		}
		o.Value = &v
	}
	if r.Increment != nil {
		v, err := decText("increment", *r.Increment)
		if err != nil {
			return nil, err
		}
		o.Increment = &v
	}
	return o, nil
}

func commandFromPB(p *fsmv1.Command) (*Command, error) {
	c := &Command{RequestID: p.RequestId, Timestamp: p.TimestampMs}
	var err error
	switch op := p.Op.(type) {
	case nil:
		return nil, invalid("", "command has no operation")
	case *fsmv1.Command_Allow:
		c.Allow, err = allowFromPB(op.Allow)
	case *fsmv1.Command_Increment:
		c.Increment, err = allowFromPB(op.Increment)
	case *fsmv1.Command_Decrement:
		c.Decrement, err = allowFromPB(op.Decrement)
	case *fsmv1.Command_Reserve:
		r := &engine.ReserveRequest{Omitted: op.Reserve.GetOmitted(), TTL: op.Reserve.GetTtlMs()}
		if q := op.Reserve.GetQuantile(); q != "" {
			if r.Quantile, err = parseDec("quantile", q, maxDecimalText); err != nil {
				return nil, err
			}
		}
		var a *engine.AllowRequest
		if a, err = allowFromPB(op.Reserve.GetAllow()); err == nil {
			r.AllowRequest = *a
		}
		c.Reserve = r
	case *fsmv1.Command_Settle:
		s := &SettleOp{HoldID: op.Settle.GetHoldId()}
		var a *engine.AllowRequest
		if a, err = allowFromPB(op.Settle.GetAllow()); err == nil {
			s.AllowRequest = *a
		}
		c.Settle = s
	case *fsmv1.Command_Release:
		r := op.Release
		c.Release = &ReleaseOp{Customer: r.GetCustomer(), Entitlement: r.GetEntitlement(), HoldID: r.GetHoldId()}
	case *fsmv1.Command_CreateCustomer:
		r := op.CreateCustomer
		cc := &engine.CreateCustomerRequest{
			ID: r.GetId(), Plan: r.GetPlan(), Type: r.GetType(), Label: r.GetLabel(),
			Refs: r.GetRefs(), Alts: r.GetAlts(), Metadata: r.GetMetadata(),
		}
		if r.GetMetadataSet() && cc.Metadata == nil {
			cc.Metadata = map[string]string{}
		}
		c.CreateCustomer = cc
	case *fsmv1.Command_DeleteCustomer:
		c.DeleteCustomer = &CustomerOp{Customer: op.DeleteCustomer.GetCustomer()}
	case *fsmv1.Command_SetPlan:
		r := op.SetPlan
		c.SetPlan = &SetPlanOp{Customer: r.GetCustomer(), Plan: r.GetPlan(), OverwriteMeters: r.GetOverwriteMeters()}
	case *fsmv1.Command_SetRefs:
		c.SetRefs = &SetRefsOp{Customer: op.SetRefs.GetCustomer(), Refs: op.SetRefs.GetRefs()}
	case *fsmv1.Command_SetMetadata:
		c.SetMetadata = &SetMetadataOp{Customer: op.SetMetadata.GetCustomer(), Metadata: op.SetMetadata.GetMetadata()}
	case *fsmv1.Command_SetAltId:
		c.SetAltID = &AltOp{Customer: op.SetAltId.GetCustomer(), Alt: op.SetAltId.GetAlt()}
	case *fsmv1.Command_DeleteAltId:
		c.DeleteAltID = &AltOp{Customer: op.DeleteAltId.GetCustomer(), Alt: op.DeleteAltId.GetAlt()}
	case *fsmv1.Command_AddCap:
		c.AddCap, err = addCapFromPB(op.AddCap)
	case *fsmv1.Command_ResetCap:
		c.ResetCap = &CapOp{Customer: op.ResetCap.GetCustomer(), CapID: op.ResetCap.GetCapId()}
	case *fsmv1.Command_RemoveCap:
		c.RemoveCap = &CapOp{Customer: op.RemoveCap.GetCustomer(), CapID: op.RemoveCap.GetCapId()}
	case *fsmv1.Command_ApplyTopup:
		c.ApplyTopup = &TopupOp{Customer: op.ApplyTopup.GetCustomer(), Topup: op.ApplyTopup.GetTopup()}
	case *fsmv1.Command_Grant:
		r := op.Grant
		g := &engine.GrantRequest{Customer: r.GetCustomer(), ID: r.GetId(), Credit: r.GetCredit(), ExpiresOn: r.GetExpiresOnMs()}
		g.Value, err = parseDec("value", r.GetValue(), maxDecimalText)
		c.Grant = g
	case *fsmv1.Command_CreateOverride:
		c.CreateOverride, err = overrideFromPB(op.CreateOverride)
	case *fsmv1.Command_RemoveOverride:
		c.RemoveOverride = &OverrideOp{Customer: op.RemoveOverride.GetCustomer(), Entitlement: op.RemoveOverride.GetEntitlement()}
	case *fsmv1.Command_SetPolicy:
		r := op.SetPolicy
		c.SetPolicy = &PolicyOp{Text: r.GetText(), Format: r.GetFormat(), Version: r.GetVersion()}
	default:
		return nil, invalid("", "unknown operation %T", op)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func allowFromPB(a *fsmv1.AllowOp) (*engine.AllowRequest, error) {
	if a == nil {
		return &engine.AllowRequest{}, nil
	}
	v, err := parseDec("value", a.Value, maxDecimalText)
	if err != nil {
		return nil, err
	}
	r := &engine.AllowRequest{
		Customer: a.Customer, Entitlement: a.Entitlement, Value: v, Unit: a.Unit,
		EventData: a.EventData, NoEvents: a.NoEvents, Force: a.Force, Segment: a.Segment,
	}
	if r.Basis, err = parseDecPtr("basis", a.Basis, maxDecimalText); err != nil {
		return nil, err
	}
	if len(a.Caps) > 0 {
		r.Caps = make([]engine.CallCap, len(a.Caps))
		for i, cc := range a.Caps {
			cv, err := parseDec(fmt.Sprintf("caps[%d].value", i), cc.GetValue(), maxDecimalText)
			if err != nil {
				return nil, err
			}
			r.Caps[i] = engine.CallCap{Credit: cc.GetCredit(), Value: cv}
		}
	}
	if r.Overhead, err = parseDecPtr("overhead", a.Overhead, maxDecimalText); err != nil {
		return nil, err
	}
	return r, nil
}

func addCapFromPB(a *fsmv1.AddCapOp) (*engine.AddCapRequest, error) {
	v, err := parseDec("value", a.GetValue(), maxDecimalText)
	if err != nil {
		return nil, err
	}
	r := &engine.AddCapRequest{
		Customer: a.Customer, CapID: a.CapId, Value: v, Credit: a.Credit, Exchangeable: a.Exchangeable,
		OverageOnly: a.OverageOnly, IgnoreGrants: a.IgnoreGrants, ObserveOnly: a.ObserveOnly,
		OverheadCost: a.OverheadCost, FollowDecrements: a.FollowDecrements, HardTrailing: a.HardTrailing,
		Shared: a.Shared, SharedWith: a.SharedWith, Scope: a.Scope,
		Resets: a.Resets, ResetInc: a.ResetIncMs, ResetSch: a.ResetSch, ExpiresOn: a.ExpiresOnMs,
	}
	if a.ScopeSet && r.Scope == nil {
		r.Scope = []string{}
	}
	return r, nil
}

func overrideFromPB(o *fsmv1.OverrideOp) (*engine.OverrideRequest, error) {
	r := &engine.OverrideRequest{
		Customer: o.Customer, Entitlement: o.Entitlement, Expires: o.ExpiresMs, Credit: o.Credit,
		Mode: o.Mode, Resets: o.Resets, ResetInc: o.ResetIncMs, ResetSch: o.ResetSch,
	}
	var err error
	if r.Value, err = parseDecPtr("value", o.Value, maxDecimalText); err != nil {
		return nil, err
	}
	if r.Increment, err = parseDecPtr("increment", o.Increment, maxDecimalText); err != nil {
		return nil, err
	}
	return r, nil
}
