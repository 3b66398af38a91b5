package engine

import (
	"fmt"
	"sort"
	"strings"

	"github.com/shopspring/decimal"
)

// Limit modes.
const (
	ModeHard    = "hard"
	ModeSoft    = "soft"
	ModeObserve = "observe"
)

// Pricing models.
const (
	PricingFlat      = "flat"
	PricingTiered    = "tiered"
	PricingVolume    = "volume"
	PricingStairstep = "stairstep"
)

// Grant strategies.
const (
	StrategyExpiresFirst  = "expires_first"
	StrategyCheapestFirst = "cheapest_first"
	StrategyValuableFirst = "valuable_first"
)

// Rune is the built-in base currency (1 rune = 1 USD unless the exchange says otherwise).
const Rune = "rune"

const (
	defaultHoldTTL      = int64(10 * 60 * 1000)
	defaultResetInc     = int64(30 * 24 * 60 * 60 * 1000)
	defaultEWMAAlpha    = "0.2"
	defaultMinSamples   = 5
	maxExchangeHops     = 16
	maxPolicyNameLength = 128
)

// Policy is a validated, immutable Limitr policy. Maps are only read through
// sorted-key helpers or by direct lookup, never ranged over in decision paths.
type Policy struct {
	Credits            map[string]*Credit
	Plans              map[string]*Plan
	PlanOrder          []string // document order; the default plan is the first with default: true
	Exchange           Exchange
	HoldTTL            int64 // ms
	EstimateMinSamples int
	// Estimates are policy-wide priors by "<entitlement>.<segment>", used until a
	// customer's own estimate has EstimateMinSamples observations.
	Estimates     map[string]*Estimate
	Notifications []*Notification
	// allEntitlements names every entitlement any plan defines, to tell
	// unknown_entitlement from not_entitled.
	allEntitlements map[string]bool
	defaultPlan     string
	runeRates       map[string]decimal.Decimal
	// Warnings are things the policy asks for that Capstan does not do (a Stof
	// function is never executed), each with its path. The policy still loads.
	Warnings []string
}

// Credit is a unit of something consumable.
type Credit struct {
	Name         string
	Unit         string
	Label        string
	Description  string
	Resets       bool
	OverheadCost decimal.Decimal // runes per unit
	PricingModel string
	Price        *Price
	Tiers        []PriceTier
	StofUnits    string // "float" = no unit conversion
	// OverheadExpr is a CEL expression computing the provider overhead in runes from
	// `units` and `context` (the call's event data); empty = units * overhead_cost.
	OverheadExpr string
	overhead     *costProgram
}

// Price is an amount in runes, with an optional external id (e.g. a Stripe price).
type Price struct {
	Amount decimal.Decimal
	ID     string
}

// PriceTier is one band of tiered, volume or stairstep pricing.
type PriceTier struct {
	UpTo  *decimal.Decimal // nil: the last, open band
	Price Price
}

// Priced reports whether the credit has a price (flat or tiers).
func (c *Credit) Priced() bool {
	return c.Price != nil || len(c.Tiers) > 0
}

// Exchange converts currencies and credits through runes.
type Exchange struct {
	GrantStrategy string
	Pairs         map[string]ExchangePair
}

// ExchangePair says one unit is Value units of Currency.
type ExchangePair struct {
	Value    decimal.Decimal
	Currency string
}

// Plan is a named set of entitlements and topups.
type Plan struct {
	Name             string
	Label            string
	Period           string
	Subscription     string
	TrialPeriod      int64
	Entitlements     map[string]*Entitlement
	EntitlementOrder []string
	Topups           map[string]*Topup
	TopupOrder       []string
	Hidden           bool
	Default          bool
}

// Entitlement is something a plan allows; without a limit it is a feature flag.
type Entitlement struct {
	Name        string
	Description string
	Limit       *Limit
	Scope       string
	Hidden      bool
}

// Limit says how much of a credit an entitlement allows.
type Limit struct {
	Credit       string
	Mode         string
	Value        decimal.Decimal // in the credit's units
	Increment    decimal.Decimal
	Minimum      *decimal.Decimal
	HardTrailing bool
	GrantsApply  bool
	Period       Period
	// OverrideExpiresOn (ms) is set on customer overrides only; 0 = never.
	OverrideExpiresOn int64
	Governor          *Governor
	EWMAAlpha         decimal.Decimal
}

// Governor is a token bucket below a hard limit.
type Governor struct {
	Capacity    decimal.Decimal
	RefillPerMs decimal.Decimal
}

// Topup is a purchasable (or included) credit package.
type Topup struct {
	Name            string
	Credit          string
	Value           decimal.Decimal
	Price           *Price
	Description     string
	Included        bool
	IncludedScopes  []string
	Period          Period
	ResetMode       string // hard | add | rollover
	RolloverMin     *decimal.Decimal
	RolloverMax     *decimal.Decimal
	RolloverPct     *decimal.Decimal
	MaxBalance      *decimal.Decimal
	ExpiresAfter    int64
	ResetCatchupCap int64
}

// Notification matches events with a CEL expression over `type` and `event`; a match
// re-emits the event under the notification's name.
type Notification struct {
	Name    string
	Matches string
	program *matchProgram
}

// DefaultPlan returns the default plan, or nil.
func (p *Policy) DefaultPlan() *Plan {
	if p.defaultPlan == "" {
		return nil
	}
	return p.Plans[p.defaultPlan]
}

// HasEntitlement reports whether any plan defines the entitlement.
func (p *Policy) HasEntitlement(name string) bool { return p.allEntitlements[name] }

// ValidationError lists every problem found in a policy, each with its path.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid policy: " + e.Problems[0]
	}
	return fmt.Sprintf("invalid policy (%d problems):\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// LoadPolicy parses a policy document (json, yaml, toml or stof; "" = detect) and
// validates it, filling Limitr's defaults.
func LoadPolicy(text, format string) (*Policy, error) {
	root, err := ParseDocument(text, format)
	if err != nil {
		return nil, err
	}
	return DecodePolicy(root)
}

// DecodePolicy turns a parsed document into a validated Policy. The policy object is
// root.policy, else the root itself when it has credits or plans.
func DecodePolicy(root *Object) (*Policy, error) {
	d := &decoder{}
	obj := root
	if v, ok := root.Get("policy"); ok {
		o, ok := v.(*Object)
		if !ok {
			return nil, &ValidationError{Problems: []string{"policy: must be an object"}}
		}
		obj = o
	} else if !looksLikePolicy(root) {
		// Limitr's api.get(): root.policy, else the first root field that is a policy
		// (`Limitr TestCapPolicy: {...}`).
		obj = nil
		for _, k := range root.Keys {
			if o, ok := root.Fields[k].(*Object); ok && looksLikePolicy(o) {
				obj = o
				break
			}
		}
		if obj == nil {
			return nil, &ValidationError{Problems: []string{"policy: document has no `policy` object (nor a root object with credits or plans)"}}
		}
	}
	p := d.policy(obj)
	if len(d.problems) > 0 {
		return nil, &ValidationError{Problems: d.problems}
	}
	p.computeRuneRates()
	p.Warnings = d.warnings
	return p, nil
}

func looksLikePolicy(o *Object) bool {
	_, credits := o.Get("credits")
	_, plans := o.Get("plans")
	return credits || plans
}

type decoder struct {
	problems []string
	warnings []string
}

func (d *decoder) errf(path, format string, args ...any) {
	d.problems = append(d.problems, path+": "+fmt.Sprintf(format, args...))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// known checks an object for unknown fields (a typo should not silently do nothing).
func (d *decoder) known(path string, o *Object, fields ...string) {
	for _, k := range o.Keys {
		found := false
		for _, f := range fields {
			if k == f {
				found = true
				break
			}
		}
		if !found {
			if fn, ok := o.Fields[k].(Func); ok {
				d.warnings = append(d.warnings, fmt.Sprintf("%s: Stof function %s() is not executed; Capstan uses the static fallback (write a CEL expression in overhead_expr or matches instead)", join(path, k), fn.Name))
				continue
			}
			d.errf(join(path, k), "unknown field")
		}
	}
}

func (d *decoder) str(path string, o *Object, key, def string) string {
	v, ok := o.Get(key)
	if !ok || v == nil {
		return def
	}
	s, ok := v.(string)
	if !ok {
		d.errf(join(path, key), "must be a string, got %s", kindOf(v))
		return def
	}
	return s
}

func (d *decoder) boolean(path string, o *Object, key string, def bool) bool {
	v, ok := o.Get(key)
	if !ok || v == nil {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		d.errf(join(path, key), "must be true or false, got %s", kindOf(v))
		return def
	}
	return b
}

// number reads a decimal field; strings may carry units, converted to `units`.
func (d *decoder) number(path string, o *Object, key, units string) (decimal.Decimal, bool) {
	v, ok := o.Get(key)
	if !ok || v == nil {
		return decimal.Zero, false
	}
	n, err := toNumber(v)
	if err != nil {
		d.errf(join(path, key), "%v", err)
		return decimal.Zero, false
	}
	val, err := ConvertUnits(n, units)
	if err != nil {
		d.errf(join(path, key), "%v", err)
		return decimal.Zero, false
	}
	return val, true
}

func (d *decoder) optNumber(path string, o *Object, key, units string) *decimal.Decimal {
	v, ok := d.number(path, o, key, units)
	if !ok {
		return nil
	}
	return &v
}

func (d *decoder) duration(path string, o *Object, key string) int64 {
	v, ok := o.Get(key)
	if !ok || v == nil {
		return 0
	}
	ms, err := DurationMillis(v)
	if err != nil {
		d.errf(join(path, key), "%v", err)
		return 0
	}
	if ms < 0 {
		d.errf(join(path, key), "must not be negative")
		return 0
	}
	return ms
}

func (d *decoder) object(path string, o *Object, key string) *Object {
	v, ok := o.Get(key)
	if !ok || v == nil {
		return nil
	}
	obj, ok := v.(*Object)
	if !ok {
		d.errf(join(path, key), "must be an object, got %s", kindOf(v))
		return nil
	}
	return obj
}

func (d *decoder) strList(path string, o *Object, key string) []string {
	v, ok := o.Get(key)
	if !ok || v == nil {
		return nil
	}
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		out := make([]string, 0, len(t))
		for i, e := range t {
			s, ok := e.(string)
			if !ok {
				d.errf(fmt.Sprintf("%s[%d]", join(path, key), i), "must be a string")
				continue
			}
			out = append(out, s)
		}
		return out
	default:
		d.errf(join(path, key), "must be a list of strings, got %s", kindOf(v))
		return nil
	}
}

func kindOf(v any) string {
	switch v.(type) {
	case *Object:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a bool"
	case Number:
		return "a number"
	case nil:
		return "null"
	case Func:
		return "a function"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// toNumber accepts a Number or a string with optional units ("2GB", "1_000").
func toNumber(v any) (Number, error) {
	switch t := v.(type) {
	case Number:
		return t, nil
	case string:
		n, err := ParseQuantity(t)
		if err != nil {
			return Number{}, err
		}
		return n, nil
	default:
		return Number{}, fmt.Errorf("must be a number, got %s", kindOf(v))
	}
}

func validName(s string) bool {
	if s == "" || len(s) > maxPolicyNameLength {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || r == ':' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

func (d *decoder) policy(o *Object) *Policy {
	p := &Policy{
		Credits:         map[string]*Credit{},
		Plans:           map[string]*Plan{},
		HoldTTL:         defaultHoldTTL,
		allEntitlements: map[string]bool{},
	}
	d.known("policy", o, "version", "credits", "plans", "exchange", "notifications", "customers",
		"alt_customer_ids", "capabilities", "estimates", "estimate_min_samples", "hold_ttl")
	if v, ok := o.Get("customers"); ok && v != nil {
		if c, ok := v.(*Object); !ok || len(c.Keys) > 0 {
			d.errf("policy.customers", "customer state is not loaded from the policy document; create customers through the API")
		}
	}
	if v, ok := o.Get("hold_ttl"); ok && v != nil {
		p.HoldTTL = d.duration("policy", o, "hold_ttl")
		if p.HoldTTL <= 0 {
			d.errf("policy.hold_ttl", "must be greater than zero")
		}
	}
	if est := d.object("policy", o, "estimates"); est != nil {
		p.Estimates = map[string]*Estimate{}
		for _, k := range est.Keys {
			ep := "policy.estimates." + k
			eo, ok := est.Fields[k].(*Object)
			if !ok {
				d.errf(ep, "must be an object")
				continue
			}
			d.known(ep, eo, "samples", "alpha", "per_basis", "value_mean", "value_var", "overhead_mean", "overhead_var", "source", "updated")
			es := &Estimate{PerBasis: d.boolean(ep, eo, "per_basis", false), Source: d.str(ep, eo, "source", "policy")}
			if v, ok := d.number(ep, eo, "samples", ""); ok {
				es.Samples = v.IntPart()
			}
			es.ValueMean, _ = d.number(ep, eo, "value_mean", "")
			es.ValueVar, _ = d.number(ep, eo, "value_var", "")
			es.OverheadMean, _ = d.number(ep, eo, "overhead_mean", "")
			es.OverheadVar, _ = d.number(ep, eo, "overhead_var", "")
			p.Estimates[k] = es
		}
	}
	p.EstimateMinSamples = defaultMinSamples
	if n, ok := d.number("policy", o, "estimate_min_samples", ""); ok {
		p.EstimateMinSamples = int(n.IntPart())
	}

	if credits := d.object("policy", o, "credits"); credits != nil {
		for _, name := range credits.Keys {
			path := "policy.credits." + name
			if !validName(name) {
				d.errf(path, "invalid credit name (letters, digits, _ - . : up to %d)", maxPolicyNameLength)
				continue
			}
			if name == Rune {
				d.errf(path, "%q is the built-in currency and cannot be redefined as a credit", Rune)
				continue
			}
			co, ok := credits.Fields[name].(*Object)
			if !ok {
				d.errf(path, "must be an object")
				continue
			}
			p.Credits[name] = d.credit(path, name, co)
		}
	}
	p.Exchange = d.exchange(o, p)

	if plans := d.object("policy", o, "plans"); plans != nil {
		for _, name := range plans.Keys {
			path := "policy.plans." + name
			if !validName(name) {
				d.errf(path, "invalid plan name")
				continue
			}
			po, ok := plans.Fields[name].(*Object)
			if !ok {
				d.errf(path, "must be an object")
				continue
			}
			pl := d.plan(path, name, po, p)
			p.Plans[name] = pl
			p.PlanOrder = append(p.PlanOrder, name)
			if pl.Default {
				if p.defaultPlan != "" {
					d.errf(path+".default", "plan %q is already the default plan", p.defaultPlan)
				} else {
					p.defaultPlan = name
				}
			}
			for _, e := range pl.EntitlementOrder {
				p.allEntitlements[e] = true
			}
		}
	}
	if notes := d.object("policy", o, "notifications"); notes != nil {
		for _, name := range notes.Keys {
			path := "policy.notifications." + name
			no, ok := notes.Fields[name].(*Object)
			if !ok {
				d.errf(path, "must be an object")
				continue
			}
			d.known(path, no, "matches", "description", "fire")
			if _, isFn := no.Fields["matches"].(Func); isFn {
				d.warnings = append(d.warnings, path+".matches: Stof function matches() is not executed; the notification is skipped (write `matches` as a CEL expression)")
				continue
			}
			n := &Notification{Name: name, Matches: d.str(path, no, "matches", "")}
			if n.Matches == "" {
				d.errf(path+".matches", "required: a CEL expression over `name` (the event name) and `event`")
				continue
			}
			prog, err := compileMatch(n.Matches)
			if err != nil {
				d.errf(path+".matches", "%v", err)
				continue
			}
			n.program = prog
			p.Notifications = append(p.Notifications, n)
		}
	}
	return p
}

func (d *decoder) credit(path, name string, o *Object) *Credit {
	d.known(path, o, "unit", "label", "description", "resets", "overhead_cost", "pricing_model", "price",
		"tiers", "stof_units", "overhead_expr", "rates", "id", "name")
	c := &Credit{
		Name:         name,
		Unit:         d.str(path, o, "unit", "credit"),
		Label:        d.str(path, o, "label", "Credit"),
		Description:  d.str(path, o, "description", ""),
		Resets:       d.boolean(path, o, "resets", false),
		PricingModel: d.str(path, o, "pricing_model", PricingFlat),
		StofUnits:    d.str(path, o, "stof_units", "float"),
		OverheadExpr: d.str(path, o, "overhead_expr", ""),
	}
	if c.StofUnits == "int" {
		// Limitr's 'int' keeps whole numbers with no unit conversion; amounts here are
		// exact decimals either way.
		c.StofUnits = "float"
	}
	if c.StofUnits != "float" {
		if _, err := ConvertUnits(Number{Value: decimal.NewFromInt(1), Unit: c.StofUnits}, c.StofUnits); err != nil {
			d.errf(path+".stof_units", "unknown unit %q", c.StofUnits)
		}
	}
	if v, ok := d.number(path, o, "overhead_cost", ""); ok {
		if v.IsNegative() {
			d.errf(path+".overhead_cost", "must be >= 0")
		}
		c.OverheadCost = v
	}
	if po := d.object(path, o, "price"); po != nil {
		pr := d.price(path+".price", po)
		c.Price = &pr
	}
	switch c.PricingModel {
	case PricingFlat:
		if _, ok := o.Get("tiers"); ok {
			if c.Price == nil {
				// Limitr infers nothing here; a flat credit with tiers is a mistake.
				d.errf(path+".tiers", "tiers need pricing_model tiered, volume or stairstep")
			}
		}
	case PricingTiered, PricingVolume, PricingStairstep:
		if c.Price != nil {
			d.errf(path+".price", "must be null for pricing_model %s (use tiers)", c.PricingModel)
		}
		c.Tiers = d.tiers(path, o)
		if len(c.Tiers) == 0 {
			d.errf(path+".tiers", "required for pricing_model %s", c.PricingModel)
		}
	default:
		d.errf(path+".pricing_model", "unknown pricing model %q (want flat, tiered, volume or stairstep)", c.PricingModel)
	}
	if c.OverheadExpr != "" {
		prog, err := compileCost(c.OverheadExpr)
		if err != nil {
			d.errf(path+".overhead_expr", "%v", err)
		} else {
			c.overhead = prog
		}
	}
	return c
}

func (d *decoder) price(path string, o *Object) Price {
	d.known(path, o, "amount", "id", "label")
	pr := Price{ID: d.str(path, o, "id", "")}
	v, ok := d.number(path, o, "amount", "")
	if !ok {
		if _, present := o.Get("amount"); !present {
			d.errf(path+".amount", "required")
		}
	} else if v.IsNegative() {
		d.errf(path+".amount", "must be >= 0")
	}
	pr.Amount = v
	return pr
}

func (d *decoder) tiers(path string, o *Object) []PriceTier {
	v, ok := o.Get("tiers")
	if !ok || v == nil {
		return nil
	}
	list, ok := v.([]any)
	if !ok {
		d.errf(path+".tiers", "must be a list")
		return nil
	}
	var out []PriceTier
	open := 0
	for i, e := range list {
		tp := fmt.Sprintf("%s.tiers[%d]", path, i)
		to, ok := e.(*Object)
		if !ok {
			d.errf(tp, "must be an object")
			continue
		}
		d.known(tp, to, "up_to", "price")
		t := PriceTier{UpTo: d.optNumber(tp, to, "up_to", "")}
		if t.UpTo == nil {
			open++
		} else if !t.UpTo.IsPositive() {
			d.errf(tp+".up_to", "must be > 0")
		}
		if po := d.object(tp, to, "price"); po != nil {
			t.Price = d.price(tp+".price", po)
		} else {
			d.errf(tp+".price", "required")
		}
		out = append(out, t)
	}
	if open > 1 {
		d.errf(path+".tiers", "only the last tier may omit up_to")
	}
	// Limitr sorts tiers by up_to with the open band last.
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].UpTo, out[j].UpTo
		if a == nil {
			return false
		}
		if b == nil {
			return true
		}
		return a.LessThan(*b)
	})
	for i := 1; i < len(out); i++ {
		if out[i].UpTo != nil && out[i-1].UpTo != nil && out[i].UpTo.Equal(*out[i-1].UpTo) {
			d.errf(path+".tiers", "two tiers end at the same up_to %s", out[i].UpTo)
		}
	}
	return out
}

func (d *decoder) exchange(o *Object, p *Policy) Exchange {
	ex := Exchange{GrantStrategy: StrategyExpiresFirst, Pairs: map[string]ExchangePair{
		"usd": {Value: decimal.NewFromInt(1), Currency: Rune},
	}}
	eo := d.object("policy", o, "exchange")
	if eo == nil {
		return ex
	}
	path := "policy.exchange"
	ex.GrantStrategy = d.str(path, eo, "grant_strategy", StrategyExpiresFirst)
	switch ex.GrantStrategy {
	case StrategyExpiresFirst, StrategyCheapestFirst, StrategyValuableFirst:
	default:
		d.errf(path+".grant_strategy", "unknown strategy %q (want expires_first, cheapest_first or valuable_first)", ex.GrantStrategy)
	}
	for _, name := range eo.Keys {
		if name == "grant_strategy" {
			continue
		}
		pp := path + "." + name
		po, ok := eo.Fields[name].(*Object)
		if !ok {
			d.errf(pp, "must be an exchange pair object {value, currency}")
			continue
		}
		if name == Rune {
			if len(po.Keys) > 0 {
				d.errf(pp, "rune is the base currency and takes no pair")
			}
			continue
		}
		d.known(pp, po, "value", "currency")
		v, ok := d.number(pp, po, "value", "")
		if !ok {
			d.errf(pp+".value", "required")
			continue
		}
		if !v.IsPositive() {
			d.errf(pp+".value", "must be > 0")
			continue
		}
		cur := d.str(pp, po, "currency", "")
		if cur == "" {
			d.errf(pp+".currency", "required")
			continue
		}
		ex.Pairs[name] = ExchangePair{Value: v, Currency: cur}
	}
	// Every pair must reach runes (directly, through pairs, or through a priced credit).
	names := make([]string, 0, len(ex.Pairs))
	for n := range ex.Pairs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := toRunesRate(p.Credits, ex, n); err != nil {
			d.errf(path+"."+n, "%v", err)
		}
	}
	return ex
}

func (d *decoder) plan(path, name string, o *Object, p *Policy) *Plan {
	d.known(path, o, "name", "label", "period", "subscription", "trial_period", "entitlements", "topups",
		"hidden", "default", "price", "description", "id")
	pl := &Plan{
		Name:         name,
		Label:        d.str(path, o, "label", ""),
		Period:       d.str(path, o, "period", "monthly"),
		Subscription: d.str(path, o, "subscription", "subscription"),
		TrialPeriod:  d.duration(path, o, "trial_period"),
		Hidden:       d.boolean(path, o, "hidden", false),
		Default:      d.boolean(path, o, "default", false),
		Entitlements: map[string]*Entitlement{},
		Topups:       map[string]*Topup{},
	}
	switch pl.Period {
	case "yearly", "monthly", "weekly", "daily":
	default:
		d.errf(path+".period", "unknown period %q (want yearly, monthly, weekly or daily)", pl.Period)
	}
	if ents := d.object(path, o, "entitlements"); ents != nil {
		for _, en := range ents.Keys {
			ep := path + ".entitlements." + en
			if !validName(en) {
				d.errf(ep, "invalid entitlement name")
				continue
			}
			eo, ok := ents.Fields[en].(*Object)
			if !ok {
				if ents.Fields[en] == nil || ents.Fields[en] == true {
					// `export_pdf: true` / null: a bare feature flag.
					pl.Entitlements[en] = &Entitlement{Name: en}
					pl.EntitlementOrder = append(pl.EntitlementOrder, en)
					continue
				}
				d.errf(ep, "must be an object")
				continue
			}
			d.known(ep, eo, "description", "limit", "scope", "hidden", "name")
			ent := &Entitlement{
				Name:        en,
				Description: d.str(ep, eo, "description", ""),
				Scope:       d.str(ep, eo, "scope", ""),
				Hidden:      d.boolean(ep, eo, "hidden", false),
			}
			if lo := d.object(ep, eo, "limit"); lo != nil {
				ent.Limit = d.limit(ep+".limit", lo, p, false)
			}
			pl.Entitlements[en] = ent
			pl.EntitlementOrder = append(pl.EntitlementOrder, en)
		}
	}
	if tops := d.object(path, o, "topups"); tops != nil {
		for _, tn := range tops.Keys {
			tp := path + ".topups." + tn
			to, ok := tops.Fields[tn].(*Object)
			if !ok {
				d.errf(tp, "must be an object")
				continue
			}
			pl.Topups[tn] = d.topup(tp, tn, to, p)
			pl.TopupOrder = append(pl.TopupOrder, tn)
		}
	}
	return pl
}

// LimitFields are the fields a limit (and a customer override) accepts.
var limitFields = []string{"credit", "mode", "value", "increment", "minimum", "hard_trailing", "grants_apply",
	"resets", "reset_inc", "reset_sch", "override_expires_on", "governor_enabled", "governor_capacity",
	"governor_refill_rate", "ewma_alpha"}

func (d *decoder) limit(path string, o *Object, p *Policy, override bool) *Limit {
	d.known(path, o, limitFields...)
	l := &Limit{
		Credit:       d.str(path, o, "credit", ""),
		Mode:         d.str(path, o, "mode", ModeHard),
		HardTrailing: d.boolean(path, o, "hard_trailing", false),
		GrantsApply:  d.boolean(path, o, "grants_apply", true),
		Increment:    decimal.NewFromInt(1),
		EWMAAlpha:    decimal.RequireFromString(defaultEWMAAlpha),
	}
	credit := p.Credits[l.Credit]
	units := ""
	if l.Credit == "" {
		d.errf(path+".credit", "required: a credit name")
	} else if credit == nil {
		d.errf(path+".credit", "unknown credit %q", l.Credit)
	} else {
		units = credit.StofUnits
	}
	switch l.Mode {
	case ModeHard, ModeSoft, ModeObserve:
	default:
		d.errf(path+".mode", "unknown mode %q (want hard, soft or observe)", l.Mode)
	}
	if v, ok := d.number(path, o, "value", units); ok {
		if v.IsNegative() {
			d.errf(path+".value", "must be >= 0")
		}
		l.Value = v
	}
	if v, ok := d.number(path, o, "increment", units); ok {
		l.Increment = v
	}
	l.Minimum = d.optNumber(path, o, "minimum", units)
	if l.HardTrailing && l.Mode != ModeHard {
		d.errf(path+".hard_trailing", "only applies to hard limits")
	}
	l.Period = d.period(path, o)
	if override {
		l.OverrideExpiresOn = d.duration(path, o, "override_expires_on")
	}
	if d.boolean(path, o, "governor_enabled", false) {
		g := &Governor{}
		if v, ok := d.number(path, o, "governor_capacity", units); ok && v.IsPositive() {
			g.Capacity = v
		} else {
			d.errf(path+".governor_capacity", "required (> 0) when governor_enabled")
		}
		if v, ok := d.number(path, o, "governor_refill_rate", ""); ok && v.IsPositive() {
			g.RefillPerMs = v
		} else {
			d.errf(path+".governor_refill_rate", "required (tokens per ms, > 0) when governor_enabled")
		}
		if l.Mode != ModeHard {
			d.errf(path+".governor_enabled", "a governor needs a hard limit")
		}
		l.Governor = g
	}
	if v, ok := d.number(path, o, "ewma_alpha", ""); ok {
		if v.LessThan(decimal.Zero) || v.GreaterThan(decimal.NewFromInt(1)) {
			d.errf(path+".ewma_alpha", "must be between 0 and 1")
		}
		l.EWMAAlpha = v
	}
	return l
}

// period reads resets / reset_inc / reset_sch. Deliberate difference from Limitr: a
// reset_inc or reset_sch implies resets; `resets: true` alone means every 30 days.
func (d *decoder) period(path string, o *Object) Period {
	resets := d.boolean(path, o, "resets", false)
	inc := d.duration(path, o, "reset_inc")
	sch := d.str(path, o, "reset_sch", "")
	if v, ok := o.Get("reset_inc"); ok && v != nil && inc == 0 && len(d.problems) == 0 {
		d.errf(path+".reset_inc", "must be greater than zero")
	}
	if inc > 0 && sch != "" {
		d.errf(path, "reset_inc and reset_sch are mutually exclusive")
		return Period{}
	}
	if sch != "" {
		s, err := ParseSchedule(sch)
		if err != nil {
			d.errf(path+".reset_sch", "%v", err)
			return Period{}
		}
		return Period{Sch: &s}
	}
	if inc > 0 {
		return Period{Inc: inc}
	}
	if resets {
		return Period{Inc: defaultResetInc}
	}
	return Period{}
}

func (d *decoder) topup(path, name string, o *Object, p *Policy) *Topup {
	d.known(path, o, "credit", "value", "price", "description", "included", "included_scopes", "resets",
		"reset_inc", "reset_sch", "reset_mode", "rollover_min", "rollover_max", "rollover_pct", "max_balance",
		"expires_after", "reset_catchup_cap", "label", "name")
	t := &Topup{
		Name:           name,
		Credit:         d.str(path, o, "credit", ""),
		Description:    d.str(path, o, "description", ""),
		Included:       d.boolean(path, o, "included", false),
		IncludedScopes: d.strList(path, o, "included_scopes"),
		ResetMode:      d.str(path, o, "reset_mode", "hard"),
		ExpiresAfter:   d.duration(path, o, "expires_after"),
	}
	units := ""
	if t.Credit == "" {
		d.errf(path+".credit", "required: a credit name")
	} else if c := p.Credits[t.Credit]; c == nil {
		if _, isPair := p.Exchange.Pairs[t.Credit]; !isPair && t.Credit != Rune {
			d.errf(path+".credit", "unknown credit %q", t.Credit)
		}
	} else {
		units = c.StofUnits
	}
	if v, ok := d.number(path, o, "value", units); ok {
		if v.IsNegative() {
			d.errf(path+".value", "must be >= 0")
		}
		t.Value = v
	}
	if po := d.object(path, o, "price"); po != nil {
		pr := d.price(path+".price", po)
		t.Price = &pr
	}
	switch t.ResetMode {
	case "hard", "add", "rollover":
	default:
		d.errf(path+".reset_mode", "unknown reset mode %q (want hard, add or rollover)", t.ResetMode)
	}
	t.RolloverMin = d.optNumber(path, o, "rollover_min", units)
	t.RolloverMax = d.optNumber(path, o, "rollover_max", units)
	t.RolloverPct = d.optNumber(path, o, "rollover_pct", "")
	if t.RolloverPct != nil && (t.RolloverPct.IsNegative() || t.RolloverPct.GreaterThan(decimal.NewFromInt(1))) {
		d.errf(path+".rollover_pct", "must be between 0 and 1")
	}
	t.MaxBalance = d.optNumber(path, o, "max_balance", units)
	if v, ok := d.number(path, o, "reset_catchup_cap", ""); ok {
		t.ResetCatchupCap = v.IntPart()
	}
	t.Period = d.period(path, o)
	return t
}
