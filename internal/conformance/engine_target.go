package conformance

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/capstanhq/capstan/engine"
	"github.com/shopspring/decimal"
)

// NewEngineTarget returns a target that drives engine.Engine in-process.
func NewEngineTarget() Target { return &engineTarget{} }

type engineTarget struct {
	e *engine.Engine
}

func (t *engineTarget) Reset(policy, format string) error {
	p, err := engine.LoadPolicy(policy, format)
	if err != nil {
		return err
	}
	t.e = engine.New(p)
	return nil
}

// Dump encodes every customer in id order; encoding/json is deterministic for
// structs and sorts map keys.
func (t *engineTarget) Dump() ([]byte, error) {
	if t.e == nil {
		return nil, errors.New("no policy loaded")
	}
	type entry struct {
		ID       string
		Customer *engine.Customer
	}
	ids := t.e.CustomerIDs()
	out := make([]entry, 0, len(ids))
	for _, id := range ids {
		out = append(out, entry{id, t.e.Customer(id)})
	}
	return json.MarshalIndent(out, "", " ")
}

func (t *engineTarget) Do(now int64, verb string, args map[string]any) (Result, error) {
	if t.e == nil {
		return nil, errors.New("no policy loaded")
	}
	a := argReader{args: args, now: now}
	r, err := t.do(now, verb, &a)
	if a.err != nil {
		return nil, a.err
	}
	return r, err
}

func (t *engineTarget) do(now int64, verb string, a *argReader) (Result, error) {
	e := t.e
	switch verb {
	case "create_customer":
		req := engine.CreateCustomerRequest{
			ID: a.str("id"), Plan: a.str("plan"), Type: a.str("type"), Label: a.str("label"),
			Refs: a.strs("refs"), Alts: a.strs("alts"), Metadata: a.strMap("metadata"),
		}
		if a.err != nil {
			return nil, nil
		}
		_, evs, err := e.CreateCustomer(now, req)
		return eventsResult(evs), err

	case "delete_customer":
		evs, err := e.DeleteCustomer(a.str("id"))
		return eventsResult(evs), err

	case "set_customer_plan":
		id, plan, ow := a.str("id"), a.str("plan"), a.boolean("overwrite_meters")
		if a.err != nil {
			return nil, nil
		}
		evs, err := e.SetCustomerPlan(now, id, plan, ow)
		return eventsResult(evs), err

	case "allow", "check", "increment", "decrement":
		req := a.allowRequest()
		if a.err != nil {
			return nil, nil
		}
		var d engine.Decision
		var err error
		switch verb {
		case "allow":
			d, err = e.Allow(now, req)
		case "check":
			d, err = e.Check(now, req)
		case "increment":
			d, err = e.Increment(now, req)
		default:
			d, err = e.Decrement(now, req)
		}
		if err != nil {
			return nil, err
		}
		return decisionResult(d), nil

	case "reserve":
		_, given := a.args["value"]
		req := engine.ReserveRequest{AllowRequest: a.allowRequest(), Omitted: !given, TTL: a.duration("ttl")}
		if q := a.optDec("quantile"); q != nil {
			req.Quantile = *q
		}
		if a.err != nil {
			return nil, nil
		}
		d, err := e.Reserve(now, req)
		if err != nil {
			return nil, err
		}
		r := decisionResult(d)
		r["hold"] = d.Allowed && d.HoldID != ""
		return r, nil

	case "settle":
		hold := a.str("hold")
		req := a.allowRequest()
		if a.err != nil {
			return nil, nil
		}
		d, err := e.Settle(now, hold, req)
		if err != nil {
			return nil, err
		}
		return decisionResult(d), nil

	case "release":
		ok, err := e.Release(now, a.str("customer"), a.str("entitlement"), a.str("hold"))
		if err != nil {
			return nil, err
		}
		return Result{"released": ok}, nil

	case "set_alt_id":
		evs, err := e.SetAltID(a.str("id"), a.str("alt"))
		if err != nil {
			return nil, err
		}
		return eventsResult(evs), nil

	case "delete_alt_id":
		evs, err := e.DeleteAltID(a.str("alt"))
		if err != nil {
			return nil, err
		}
		return eventsResult(evs), nil

	case "set_refs":
		evs, err := e.SetCustomerRefs(a.str("id"), a.strs("refs"))
		if err != nil {
			return nil, err
		}
		return eventsResult(evs), nil

	case "estimate":
		var q decimal.Decimal
		if p := a.optDec("quantile"); p != nil {
			q = *p
		}
		est, err := e.EstimateUsage(a.str("customer"), a.str("entitlement"), a.str("segment"), a.optDec("basis"), q)
		if err != nil {
			return nil, err
		}
		if est == nil {
			return Result{"value": nil, "overhead": nil, "samples": "0", "source": ""}, nil
		}
		return Result{"value": est.Value.String(), "overhead": est.Overhead.String(),
			"samples": fmt.Sprint(est.Samples), "source": est.Source}, nil

	case "margin":
		m, err := e.MarginBreakdown(now, a.str("customer"))
		if err != nil {
			return nil, err
		}
		return Result{"revenue": m.Revenue.String(), "cost": m.Cost.String(), "margin": decOrNil(m.MarginPct)}, nil

	case "held", "value", "remaining", "limit", "allowance", "resets", "rate":
		return usageResult(e.Read(now, a.str("customer"), a.str("entitlement"))), nil

	case "add_cap":
		req := engine.AddCapRequest{
			Customer: a.str("customer"), CapID: a.str("cap_id"), Value: a.dec("value"), Credit: a.str("credit"),
			Exchangeable: a.optBool("exchangeable"), OverageOnly: a.boolean("overage_only"),
			IgnoreGrants: a.boolean("ignore_grants"), ObserveOnly: a.boolean("observe_only"),
			OverheadCost: a.boolean("overhead_cost"), FollowDecrements: a.boolean("follow_decrements"),
			HardTrailing: a.boolean("hard_trailing"), Shared: a.boolean("shared"), SharedWith: a.strs("shared_with"),
			Scope: a.strs("scope"), Resets: a.boolean("resets"), ResetInc: a.duration("reset_inc"),
			ResetSch: a.str("reset_sch"), ExpiresOn: a.timestamp("expires_on"),
		}
		if a.err != nil {
			return nil, nil
		}
		cp, evs, err := e.AddCap(now, req)
		if err != nil {
			return nil, err
		}
		r := eventsResult(evs)
		r["cap_id"] = cp.ID
		return r, nil

	case "cap":
		v, err := e.GetCap(now, a.str("customer"), a.str("cap_id"))
		if err != nil {
			if errors.Is(err, engine.ErrNotFound) {
				if e.Customer(a.str("customer")) == nil {
					return Result{"reason": engine.ReasonUnknownCustomer}, nil
				}
				return Result{"reason": "unknown_cap"}, nil
			}
			return nil, err
		}
		return Result{
			"cap_id": v.ID, "value": v.Value.String(), "meter_value": v.MeterValue.String(),
			"remaining": v.Remaining.String(), "resets": timeOrNil(v.NextReset), "reason": "",
		}, nil

	case "reset_cap":
		evs, err := e.ResetCap(now, a.str("customer"), a.str("cap_id"))
		return eventsResult(evs), err

	case "remove_cap":
		evs, err := e.RemoveCap(a.str("customer"), a.str("cap_id"))
		return eventsResult(evs), err

	case "apply_topup":
		g, evs, err := e.ApplyTopup(now, a.str("customer"), a.str("topup"))
		if err != nil {
			return nil, err
		}
		r := eventsResult(evs)
		r["grant_id"] = g.ID
		return r, nil

	case "grant":
		req := engine.GrantRequest{
			Customer: a.str("customer"), ID: a.str("id"), Credit: a.str("credit"), Value: a.dec("value"),
			ExpiresOn: a.timestamp("expires_on"),
		}
		if a.err != nil {
			return nil, nil
		}
		g, evs, err := e.Grant(now, req)
		if err != nil {
			return nil, err
		}
		r := eventsResult(evs)
		r["grant_id"] = g.ID
		return r, nil

	case "credit_remaining":
		customer := a.str("customer")
		if e.Customer(customer) == nil {
			return Result{"reason": engine.ReasonUnknownCustomer, "value": nil}, nil
		}
		v, err := e.CreditRemaining(now, customer, a.str("credit"))
		if err != nil {
			return nil, err
		}
		return Result{"value": v.String(), "reason": ""}, nil

	case "create_override":
		req := engine.OverrideRequest{
			Customer: a.str("customer"), Entitlement: a.str("entitlement"), Credit: a.str("credit"),
			Mode: a.str("mode"), Value: a.optDec("value"), Increment: a.optDec("increment"),
			Resets: a.optBool("resets"), ResetInc: a.duration("reset_inc"), ResetSch: a.str("reset_sch"),
			Expires: a.timestamp("expires"),
		}
		if req.Expires == 0 {
			req.Expires = a.timestamp("expires_on")
		}
		if a.err != nil {
			return nil, nil
		}
		_, evs, err := e.CreateOverride(now, req)
		return eventsResult(evs), err

	case "remove_override":
		ok, evs, err := e.RemoveOverride(a.str("customer"), a.str("entitlement"))
		if err != nil {
			return nil, err
		}
		r := eventsResult(evs)
		r["removed"] = ok
		return r, nil
	}
	return nil, argErr("", "unknown verb %q", verb)
}

func timeOrNil(ms int64) any {
	if ms == 0 {
		return nil
	}
	return FormatTime(ms)
}

func decOrNil(d *decimal.Decimal) any {
	if d == nil {
		return nil
	}
	return d.String()
}

func eventsResult(evs []engine.Event) Result {
	r := Result{}
	names := make([]string, 0, len(evs))
	for _, ev := range evs {
		names = append(names, ev.Type)
	}
	r["events"] = names
	if ev := meterEvent(evs); ev != nil {
		r["event"] = eventFields(ev)
	}
	return r
}

func decisionResult(d engine.Decision) Result {
	r := eventsResult(d.Events)
	r["allowed"] = d.Allowed
	r["reason"] = d.Reason
	r["cap_id"] = d.CapID
	r["remaining"] = decOrNil(d.Remaining)
	r["resets"] = timeOrNil(d.ResetsAt)
	if d.HoldID != "" {
		r["hold_id"] = d.HoldID
	}
	return r
}

func usageResult(u engine.Usage) Result {
	if !u.Found {
		return Result{"reason": u.Reason, "value": nil, "remaining": nil, "limit": nil, "allowance": nil,
			"held": nil, "resets": nil}
	}
	return Result{
		"reason":               "",
		"value":                u.Value.String(),
		"remaining":            decOrNil(u.Remaining),
		"limit":                decOrNil(u.Limit),
		"allowance":            decOrNil(u.Allowance),
		"held":                 u.Held.String(),
		"resets":               timeOrNil(u.ResetsAt),
		"rate":                 u.Rate.String(),
		"projected_exhaustion": timeOrNil(u.ProjectedExhaustion),
		"overhead":             u.Overhead.String(),
	}
}

// meterEvent is the step's first meter event, else its first event.
func meterEvent(evs []engine.Event) *engine.Event {
	for i := range evs {
		switch evs[i].Type {
		case engine.EventMeterChanged, engine.EventMeterOverage, engine.EventMeterLimit, engine.EventMeterGoverned:
			return &evs[i]
		}
	}
	if len(evs) > 0 {
		return &evs[0]
	}
	return nil
}

func eventFields(ev *engine.Event) map[string]string {
	f := map[string]string{"type": ev.Type}
	str := func(k, v string) {
		if v != "" {
			f[k] = v
		}
	}
	dec := func(k string, d *decimal.Decimal) {
		if d != nil {
			f[k] = d.String()
		}
	}
	str("customer", ev.Customer)
	str("caller", ev.Caller)
	str("entitlement", ev.Entitlement)
	str("plan", ev.Plan)
	str("credit", ev.Credit)
	str("cap_id", ev.CapID)
	str("topup", ev.Topup)
	str("previous_plan", ev.PreviousPlan)
	str("new_plan", ev.NewPlan)
	str("event_data", ev.EventData)
	str("notification", ev.Notification)
	dec("remaining", ev.Remaining)
	dec("overage", ev.Overage)
	dec("grant_value_applied", ev.GrantValueApplied)
	dec("invalid_value", ev.InvalidValue)
	dec("price_diff", ev.PriceDiff)
	dec("overage_price", ev.OveragePrice)
	if m := ev.Meter; m != nil {
		f["old"] = m.Old.String()
		f["value"] = m.Value.String()
		f["limit"] = m.Limit.String()
		f["diff"] = m.Diff.String()
		f["overhead"] = m.Overhead.String()
		f["overhead_diff"] = m.OverheadDiff.String()
	}
	if c := ev.Cap; c != nil {
		f["cap_id"] = c.ID
		f["cap_credit"] = c.Credit
		f["cap_value"] = c.Value.String()
		f["meter_value"] = c.MeterValue.String()
		dec("requested", c.Requested)
	}
	if g := ev.Governor; g != nil {
		f["tokens"] = g.Tokens.String()
		f["capacity"] = g.Capacity.String()
		f["requested"] = g.Requested.String()
	}
	return f
}

// argReader converts step arguments; the first problem is kept in err (an
// *ArgError) and later reads return zero values.
type argReader struct {
	args map[string]any
	now  int64
	err  error
}

func (a *argReader) fail(arg, format string, args ...any) {
	if a.err == nil {
		a.err = argErr(arg, format, args...)
	}
}

func (a *argReader) str(k string) string {
	v, ok := a.args[k]
	if !ok || v == nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return string(x)
	case bool:
		return fmt.Sprint(x)
	}
	a.fail(k, "want a string, got %T", v)
	return ""
}

func (a *argReader) strs(k string) []string {
	v, ok := a.args[k]
	if !ok || v == nil {
		return nil
	}
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			switch s := e.(type) {
			case string:
				out = append(out, s)
			case json.Number:
				out = append(out, string(s))
			default:
				a.fail(k, "want a list of strings")
				return nil
			}
		}
		return out
	}
	a.fail(k, "want a list of strings, got %T", v)
	return nil
}

func (a *argReader) strMap(k string) map[string]string {
	v, ok := a.args[k]
	if !ok || v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		a.fail(k, "want a mapping, got %T", v)
		return nil
	}
	out := make(map[string]string, len(m))
	for mk, mv := range m {
		switch s := mv.(type) {
		case string:
			out[mk] = s
		case json.Number:
			out[mk] = string(s)
		case bool:
			out[mk] = fmt.Sprint(s)
		case nil:
			out[mk] = ""
		default:
			a.fail(k+"."+mk, "want a scalar, got %T", mv)
			return nil
		}
	}
	return out
}

func (a *argReader) optBool(k string) *bool {
	v, ok := a.args[k]
	if !ok || v == nil {
		return nil
	}
	b, ok := v.(bool)
	if !ok {
		a.fail(k, "want true or false, got %v", v)
		return nil
	}
	return &b
}

func (a *argReader) boolean(k string) bool {
	if b := a.optBool(k); b != nil {
		return *b
	}
	return false
}

func (a *argReader) optDec(k string) *decimal.Decimal {
	v, ok := a.args[k]
	if !ok || v == nil {
		return nil
	}
	var text string
	switch x := v.(type) {
	case string:
		text = x
	case json.Number:
		text = string(x)
	default:
		a.fail(k, "want a number, got %T", v)
		return nil
	}
	d, err := decimal.NewFromString(strings.TrimSpace(text))
	if err != nil {
		a.fail(k, "%q is not a decimal number", text)
		return nil
	}
	return &d
}

func (a *argReader) dec(k string) decimal.Decimal {
	if d := a.optDec(k); d != nil {
		return *d
	}
	return decimal.Zero
}

// duration reads a Limitr duration ("30days", "10min"; a bare number is ms).
func (a *argReader) duration(k string) int64 {
	v, ok := a.args[k]
	if !ok || v == nil {
		return 0
	}
	var text string
	switch x := v.(type) {
	case string:
		text = x
	case json.Number:
		text = string(x)
	default:
		a.fail(k, "want a duration like 1day or 10min, got %T", v)
		return 0
	}
	ms, err := engine.DurationMillis(text)
	if err != nil {
		a.fail(k, "%v", err)
		return 0
	}
	return ms
}

// timestamp reads an RFC 3339 timestamp, or a duration with a unit ("30days") from now.
func (a *argReader) timestamp(k string) int64 {
	v, ok := a.args[k]
	if !ok || v == nil {
		return 0
	}
	text, isStr := v.(string)
	if !isStr {
		a.fail(k, "want an RFC 3339 timestamp or a duration like 30days, got %v", v)
		return 0
	}
	if t, err := parseTime(text); err == nil {
		return t.UnixMilli()
	}
	q, err := engine.ParseQuantity(text)
	if err != nil || q.Unit == "" {
		a.fail(k, "want an RFC 3339 timestamp or a duration like 30days, got %q", text)
		return 0
	}
	ms, err := engine.DurationMillis(text)
	if err != nil {
		a.fail(k, "%v", err)
		return 0
	}
	return a.now + ms
}

// allowRequest reads allow/check/reserve/settle arguments.
func (a *argReader) allowRequest() engine.AllowRequest {
	req := engine.AllowRequest{
		Customer: a.str("customer"), Entitlement: a.str("entitlement"), Value: a.dec("value"),
		Unit: a.str("unit"), Overhead: a.optDec("overhead"), Force: a.boolean("force"),
		Segment: a.str("segment"), Basis: a.optDec("basis"),
	}
	switch ev := a.args["event"].(type) {
	case nil:
	case bool:
		req.NoEvents = !ev
	case string:
		if !json.Valid([]byte(ev)) {
			a.fail("event", "want an object (or false), got %q", ev)
		}
		req.EventData = ev
	case map[string]any:
		b, err := json.Marshal(ev)
		if err != nil {
			a.fail("event", "%v", err)
		}
		req.EventData = string(b)
	default:
		a.fail("event", "want an object (or false), got %T", ev)
	}
	if v, ok := a.args["caps"]; ok && v != nil {
		m, ok := v.(map[string]any)
		if !ok {
			a.fail("caps", "want a mapping of credit: value, got %T", v)
			return req
		}
		credits := make([]string, 0, len(m))
		for c := range m {
			credits = append(credits, c)
		}
		sort.Strings(credits)
		sub := argReader{args: m, now: a.now}
		for _, c := range credits {
			req.Caps = append(req.Caps, engine.CallCap{Credit: c, Value: sub.dec(c)})
		}
		if sub.err != nil {
			a.fail("caps", "%v", sub.err)
		}
	}
	return req
}
