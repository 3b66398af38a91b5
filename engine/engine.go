package engine

import (
	"errors"
	"fmt"
	"sort"
)

// Engine holds a policy and the state of the customers decided under it. It is not
// safe for concurrent use: the replicated state machine serialises every call.
type Engine struct {
	policy    *Policy
	customers map[string]*Customer
	alts      map[string]string // alt id -> customer id
}

// New returns an engine with no customers.
func New(p *Policy) *Engine {
	return &Engine{policy: p, customers: map[string]*Customer{}, alts: map[string]string{}}
}

// Policy returns the engine's policy.
func (e *Engine) Policy() *Policy { return e.policy }

// SetPolicy replaces the policy; customer state is kept and read under the new one.
func (e *Engine) SetPolicy(p *Policy) { e.policy = p }

// InputError is bad input: the call was refused and nothing changed.
type InputError struct {
	Field  string
	Reason string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

func inputErr(field, format string, args ...any) error {
	return &InputError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ErrNotFound marks calls on customers, caps, holds or topups that do not exist.
var ErrNotFound = errors.New("not found")

func notFound(what, id string) error { return fmt.Errorf("%s %q: %w", what, id, ErrNotFound) }

// CustomerIDs returns every customer id in sorted order.
func (e *Engine) CustomerIDs() []string {
	ids := make([]string, 0, len(e.customers))
	for id := range e.customers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Customer resolves an id or alt id. The result must not be modified by callers.
func (e *Engine) Customer(id string) *Customer {
	if c, ok := e.customers[id]; ok {
		return c
	}
	if real, ok := e.alts[id]; ok {
		return e.customers[real]
	}
	return nil
}

// Len is the number of customers.
func (e *Engine) Len() int { return len(e.customers) }

// planFor resolves a customer's plan: its own, else the first ref (breadth first)
// with one, else the default plan.
func (e *Engine) planFor(c *Customer) *Plan {
	if p := e.ownOrInheritedPlan(c); p != nil {
		return p
	}
	return e.policy.DefaultPlan()
}

// ownOrInheritedPlan is planFor without the default plan.
func (e *Engine) ownOrInheritedPlan(c *Customer) *Plan {
	if c.Plan != "" {
		if p := e.policy.Plans[c.Plan]; p != nil {
			return p
		}
	}
	seen := map[string]bool{c.ID: true}
	queue := append([]string(nil), c.Refs...)
	for len(queue) > 0 && len(seen) < 64 {
		id := queue[0]
		queue = queue[1:]
		r := e.Customer(id)
		if r == nil || seen[r.ID] {
			continue
		}
		seen[r.ID] = true
		if r.Plan != "" {
			if p := e.policy.Plans[r.Plan]; p != nil {
				return p
			}
		}
		queue = append(queue, r.Refs...)
	}
	return nil
}

// refsBFS visits the customers reachable through refs, nearest first, each once.
func (e *Engine) refsBFS(c *Customer, visit func(*Customer) bool) {
	seen := map[string]bool{c.ID: true}
	queue := append([]string(nil), c.Refs...)
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		r := e.Customer(id)
		if r == nil || seen[r.ID] {
			continue
		}
		seen[r.ID] = true
		if !visit(r) {
			return
		}
		queue = append(queue, r.Refs...)
	}
}

// CreateCustomerRequest creates (or updates) a customer.
type CreateCustomerRequest struct {
	ID       string
	Plan     string
	Type     string
	Label    string
	Refs     []string
	Alts     []string
	Metadata map[string]string
}

// CreateCustomer creates a customer with meters for its plan's limited entitlements
// and grants for included topups. An existing id is updated instead (type, label,
// plan, refs, metadata), as in Limitr. Fails when no plan resolves.
func (e *Engine) CreateCustomer(now int64, req CreateCustomerRequest) (*Customer, []Event, error) {
	if err := validID("id", req.ID); err != nil {
		return nil, nil, err
	}
	if req.Type == "" {
		req.Type = "user"
	}
	if req.Label == "" {
		req.Label = "User"
	}
	for i, r := range req.Refs {
		if err := validID(fmt.Sprintf("refs[%d]", i), r); err != nil {
			return nil, nil, err
		}
	}
	for i, a := range req.Alts {
		if err := validID(fmt.Sprintf("alts[%d]", i), a); err != nil {
			return nil, nil, err
		}
		if owner, ok := e.alts[a]; ok && owner != req.ID {
			return nil, nil, inputErr(fmt.Sprintf("alts[%d]", i), "alt id %q already belongs to customer %q", a, owner)
		}
		if _, ok := e.customers[a]; ok && a != req.ID {
			return nil, nil, inputErr(fmt.Sprintf("alts[%d]", i), "alt id %q is another customer's id", a)
		}
	}
	plan := e.policy.Plans[req.Plan]
	if req.Plan != "" && plan == nil {
		return nil, nil, inputErr("plan", "unknown plan %q", req.Plan)
	}
	planName := req.Plan
	if plan == nil {
		// Inherit through refs (the plan field stays empty), else the default plan.
		for _, r := range req.Refs {
			if rc := e.Customer(r); rc != nil {
				if plan = e.ownOrInheritedPlan(rc); plan != nil {
					break
				}
			}
		}
		if plan == nil {
			plan = e.policy.DefaultPlan()
			if plan == nil {
				return nil, nil, inputErr("plan", "no plan given, none inherited through refs and the policy has no default plan")
			}
			planName = plan.Name
		}
	}
	if existing := e.Customer(req.ID); existing != nil {
		existing.Type = req.Type
		existing.Label = req.Label
		existing.Plan = planName
		existing.Refs = append([]string(nil), req.Refs...)
		if req.Metadata != nil {
			existing.Metadata = copyMeta(req.Metadata)
		}
		for _, a := range req.Alts {
			e.setAlt(existing, a)
		}
		return existing, []Event{{Type: EventCustomerSet, Customer: existing.ID}}, nil
	}
	c := &Customer{
		ID:       req.ID,
		Plan:     planName,
		Type:     req.Type,
		Label:    req.Label,
		Refs:     append([]string(nil), req.Refs...),
		Metadata: copyMeta(req.Metadata),
		Meters:   map[string]*Meter{},
		Created:  now,
	}
	for _, name := range plan.EntitlementOrder {
		if ent := plan.Entitlements[name]; ent.Limit != nil {
			c.Meters[name] = &Meter{Credit: ent.Limit.Credit, Started: now}
		}
	}
	e.customers[c.ID] = c
	for _, a := range req.Alts {
		e.setAlt(c, a)
	}
	e.ensureIncludedTopups(now, c, plan)
	return c, []Event{{Type: EventCustomerSet, Customer: c.ID}}, nil
}

func copyMeta(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (e *Engine) setAlt(c *Customer, alt string) {
	for _, a := range c.AltIDs {
		if a == alt {
			e.alts[alt] = c.ID
			return
		}
	}
	c.AltIDs = append(c.AltIDs, alt)
	e.alts[alt] = c.ID
}

// SetAltID maps an alternative id to a customer.
func (e *Engine) SetAltID(id, alt string) ([]Event, error) {
	c := e.Customer(id)
	if c == nil {
		return nil, notFound("customer", id)
	}
	if err := validID("alt", alt); err != nil {
		return nil, err
	}
	if owner, ok := e.alts[alt]; ok && owner != c.ID {
		return nil, inputErr("alt", "alt id %q already belongs to customer %q", alt, owner)
	}
	if _, ok := e.customers[alt]; ok {
		return nil, inputErr("alt", "alt id %q is a customer id", alt)
	}
	e.setAlt(c, alt)
	return []Event{{Type: EventCustomerSet, Customer: c.ID}}, nil
}

// DeleteAltID removes an alternative id.
func (e *Engine) DeleteAltID(alt string) ([]Event, error) {
	owner, ok := e.alts[alt]
	if !ok {
		return nil, notFound("alt id", alt)
	}
	delete(e.alts, alt)
	c := e.customers[owner]
	if c == nil {
		return nil, nil
	}
	out := c.AltIDs[:0]
	for _, a := range c.AltIDs {
		if a != alt {
			out = append(out, a)
		}
	}
	c.AltIDs = out
	return []Event{{Type: EventCustomerSet, Customer: c.ID}}, nil
}

// DeleteCustomer removes a customer and its alt ids.
func (e *Engine) DeleteCustomer(id string) ([]Event, error) {
	c := e.Customer(id)
	if c == nil {
		return nil, notFound("customer", id)
	}
	for _, a := range c.AltIDs {
		delete(e.alts, a)
	}
	delete(e.customers, c.ID)
	return []Event{{Type: EventCustomerRemoved, Customer: c.ID}}, nil
}

// SetCustomerRefs replaces a customer's refs.
func (e *Engine) SetCustomerRefs(id string, refs []string) ([]Event, error) {
	c := e.Customer(id)
	if c == nil {
		return nil, notFound("customer", id)
	}
	for i, r := range refs {
		if err := validID(fmt.Sprintf("refs[%d]", i), r); err != nil {
			return nil, err
		}
	}
	c.Refs = append([]string(nil), refs...)
	return []Event{{Type: EventCustomerSet, Customer: c.ID}}, nil
}

// SetCustomerMetadata replaces a customer's metadata.
func (e *Engine) SetCustomerMetadata(id string, md map[string]string) ([]Event, error) {
	c := e.Customer(id)
	if c == nil {
		return nil, notFound("customer", id)
	}
	c.Metadata = copyMeta(md)
	return []Event{{Type: EventCustomerSet, Customer: c.ID}}, nil
}

// SetCustomerPlan moves a customer to another plan. Meters are kept unless
// overwriteMeters; meters for new limited entitlements start in sync with the
// customer's existing period (Limitr's behaviour).
func (e *Engine) SetCustomerPlan(now int64, id, planName string, overwriteMeters bool) ([]Event, error) {
	c := e.Customer(id)
	if c == nil {
		return nil, notFound("customer", id)
	}
	plan := e.policy.Plans[planName]
	if plan == nil {
		return nil, inputErr("plan", "unknown plan %q", planName)
	}
	prev := e.planFor(c)
	if prev == plan && c.Plan == planName {
		return nil, nil
	}
	start := now
	if !overwriteMeters && prev != nil {
		for _, name := range sortedKeys(c.Meters) {
			if _, ok := prev.Entitlements[name]; ok && c.Meters[name].Started < start {
				start = c.Meters[name].Started
			}
		}
	}
	c.Plan = planName
	if c.Meters == nil {
		c.Meters = map[string]*Meter{}
	}
	for _, name := range plan.EntitlementOrder {
		ent := plan.Entitlements[name]
		if ent.Limit == nil {
			continue
		}
		if overwriteMeters || c.Meters[name] == nil {
			c.Meters[name] = &Meter{Credit: ent.Limit.Credit, Started: start}
		}
	}
	prevName := "default"
	if prev != nil {
		prevName = prev.Name
	}
	e.ensureIncludedTopups(now, c, plan)
	return []Event{
		{Type: EventCustomerSet, Customer: c.ID},
		{Type: EventCustomerPlanChanged, Customer: c.ID, PreviousPlan: prevName, NewPlan: planName},
	}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// MaxIDLength bounds every id the engine stores.
const MaxIDLength = 256

// validID accepts printable ASCII without spaces, 1..256 bytes.
func validID(field, id string) error {
	if id == "" {
		return inputErr(field, "required")
	}
	if len(id) > MaxIDLength {
		return inputErr(field, "longer than %d bytes", MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return inputErr(field, "invalid character %q at byte %d (printable ASCII without spaces)", id[i], i)
		}
	}
	return nil
}
