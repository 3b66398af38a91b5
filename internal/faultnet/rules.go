package faultnet

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrPartitioned is returned by dials, reads and writes on a partitioned
// link. It arrives wrapped (in a *net.OpError for reads and writes); test it
// with errors.Is.
var ErrPartitioned = errors.New("faultnet: link partitioned")

// Any matches every node and region in a rule.
const Any = "*"

// Endpoint names one end of a link. Node and region names share one
// namespace in Rules, so keep them distinct ("n1", "us-east").
type Endpoint struct {
	Node   string
	Region string
}

func (e Endpoint) String() string {
	if e.Region == "" {
		return e.Node
	}
	return e.Node + "@" + e.Region
}

// Resolver maps a dialled address to the endpoint listening there; ok is
// false for addresses that are not nodes, whose connections pass through
// untouched.
type Resolver func(addr string) (e Endpoint, ok bool)

// StaticResolver resolves from a copy of m.
func StaticResolver(m map[string]Endpoint) Resolver {
	m = maps.Clone(m)
	return func(addr string) (Endpoint, bool) {
		e, ok := m[addr]
		return e, ok
	}
}

type link struct{ from, to string }

// Rules holds the faults between names. The zero value is not usable; call
// NewRules. All methods are safe for concurrent use.
type Rules struct {
	mu      sync.RWMutex
	latency map[link]time.Duration // one way: writes from `from` to `to`
	drops   map[link]bool          // stored in both directions
	conns   map[*Conn]struct{}     // labelled live connections

	// version changes with every rule change so connections can cache
	// their delay.
	version atomic.Uint64
}

// NewRules returns Rules with no faults.
func NewRules() *Rules {
	return &Rules{
		latency: make(map[link]time.Duration),
		drops:   make(map[link]bool),
		conns:   make(map[*Conn]struct{}),
	}
}

// SetLatency adds d to every write from a to b (0 removes the rule).
func (r *Rules) SetLatency(from, to string, d time.Duration) {
	r.update(func() { r.setLatency(link{from, to}, d) })
}

// Partition cuts a from b in both directions (TCP cannot carry a one-way
// cut): dials fail and live connections between them break.
func (r *Rules) Partition(a, b string) {
	r.update(func() { r.drops[link{a, b}], r.drops[link{b, a}] = true, true })
}

// Heal removes the partition between a and b. Connections broken by it stay
// broken; new dials succeed.
func (r *Rules) Heal(a, b string) {
	r.update(func() { delete(r.drops, link{a, b}); delete(r.drops, link{b, a}) })
}

// HealAll removes every partition and keeps latencies.
func (r *Rules) HealAll() {
	r.update(func() { clear(r.drops) })
}

// Set replaces all rules with spec (see Update for the syntax). On error the
// rules are unchanged.
func (r *Rules) Set(spec string) error {
	entries, err := parseSpec(spec)
	if err != nil {
		return err
	}
	r.update(func() {
		clear(r.latency)
		clear(r.drops)
		r.apply(entries)
	})
	return nil
}

// Update applies spec on top of the current rules. On error the rules are
// unchanged. A spec is a comma-separated list of entries:
//
//	a<->b=40ms   latency 40ms each way between a and b
//	a->b=40ms    latency 40ms on writes from a to b only
//	a<->b=0      remove the latency between a and b
//	a<->b=drop   partition a from b
//	a<->b=heal   heal the partition between a and b
//
// where a and b are node names, region names or "*".
func (r *Rules) Update(spec string) error {
	entries, err := parseSpec(spec)
	if err != nil {
		return err
	}
	r.update(func() { r.apply(entries) })
	return nil
}

// String renders the rules as a spec that Set accepts.
func (r *Rules) String() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for l, d := range r.latency {
		back, ok := r.latency[link{l.to, l.from}]
		switch {
		case ok && back == d && l.from < l.to:
			out = append(out, fmt.Sprintf("%s<->%s=%s", l.from, l.to, d))
		case ok && back == d && l.from > l.to:
		case ok && back == d:
			out = append(out, fmt.Sprintf("%s<->%s=%s", l.from, l.to, d)) // a<->a
		default:
			out = append(out, fmt.Sprintf("%s->%s=%s", l.from, l.to, d))
		}
	}
	for l := range r.drops {
		if l.from <= l.to {
			out = append(out, fmt.Sprintf("%s<->%s=drop", l.from, l.to))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// Latency is the delay added to writes from local to remote: the most
// specific matching rule wins (a node name counts 2, a region 1 and "*" 0,
// summed over both ends; ties go to the more specific local end).
func (r *Rules) Latency(local, remote Endpoint) time.Duration {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.latencyLocked(local, remote)
}

// Partitioned reports whether any partition rule matches local and remote.
func (r *Rules) Partitioned(local, remote Endpoint) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.partitionedLocked(local, remote)
}

type namePair struct {
	from, to string
}

// candidates lists the keys that can match a link, most specific first.
func candidates(local, remote Endpoint) []namePair {
	type named struct {
		name string
		spec int
	}
	names := func(e Endpoint) []named {
		var out []named
		if e.Node != "" {
			out = append(out, named{e.Node, 2})
		}
		if e.Region != "" {
			out = append(out, named{e.Region, 1})
		}
		return append(out, named{Any, 0})
	}
	type scored struct {
		namePair
		score, local int
	}
	var all []scored
	for _, l := range names(local) {
		for _, r := range names(remote) {
			all = append(all, scored{namePair{l.name, r.name}, l.spec + r.spec, l.spec})
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].score != all[j].score {
			return all[i].score > all[j].score
		}
		return all[i].local > all[j].local
	})
	out := make([]namePair, len(all))
	for i, s := range all {
		out[i] = s.namePair
	}
	return out
}

func (r *Rules) latencyLocked(local, remote Endpoint) time.Duration {
	if len(r.latency) == 0 {
		return 0
	}
	for _, p := range candidates(local, remote) {
		if d, ok := r.latency[link{p.from, p.to}]; ok {
			return d
		}
	}
	return 0
}

func (r *Rules) partitionedLocked(local, remote Endpoint) bool {
	if len(r.drops) == 0 {
		return false
	}
	for _, p := range candidates(local, remote) {
		if r.drops[link{p.from, p.to}] {
			return true
		}
	}
	return false
}

func (r *Rules) setLatency(l link, d time.Duration) {
	if d == 0 {
		delete(r.latency, l)
		return
	}
	r.latency[l] = d
}

// update runs change under the lock, then breaks the live connections that
// the new rules partition. Breaking happens outside the lock because a
// connection's own lock may be held by a writer asking for its delay.
func (r *Rules) update(change func()) {
	r.mu.Lock()
	change()
	r.version.Add(1)
	var broken []*Conn
	for c := range r.conns {
		if r.partitionedLocked(c.local, *c.peer.Load()) {
			broken = append(broken, c)
			delete(r.conns, c)
		}
	}
	r.mu.Unlock()
	// Mark every connection before closing any, so the far end of a link
	// tracked here too reports ErrPartitioned rather than the EOF it may
	// see first.
	for _, c := range broken {
		c.broken.Store(true)
	}
	for _, c := range broken {
		c.breakLink()
	}
}

// track registers a labelled connection, or refuses it when its link is
// partitioned, atomically with respect to rule changes.
func (r *Rules) track(c *Conn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	peer := *c.peer.Load()
	if r.partitionedLocked(c.local, peer) {
		return fmt.Errorf("%s -> %s: %w", c.local, peer, ErrPartitioned)
	}
	r.conns[c] = struct{}{}
	return nil
}

func (r *Rules) untrack(c *Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

type entry struct {
	a, b    string
	both    bool
	latency time.Duration
	drop    bool
	heal    bool
}

func (r *Rules) apply(entries []entry) {
	for _, e := range entries {
		switch {
		case e.drop:
			r.drops[link{e.a, e.b}], r.drops[link{e.b, e.a}] = true, true
		case e.heal:
			delete(r.drops, link{e.a, e.b})
			delete(r.drops, link{e.b, e.a})
		default:
			r.setLatency(link{e.a, e.b}, e.latency)
			if e.both {
				r.setLatency(link{e.b, e.a}, e.latency)
			}
		}
	}
}

// maxLatency bounds a spec's latency; anything larger is a typo.
const maxLatency = time.Hour

func parseSpec(spec string) ([]entry, error) {
	var out []entry
	for _, raw := range strings.Split(spec, ",") {
		s := strings.TrimSpace(raw)
		if s == "" {
			continue
		}
		e, err := parseEntry(s)
		if err != nil {
			return nil, fmt.Errorf("faultnet: rule %q: %w", s, err)
		}
		out = append(out, e)
	}
	return out, nil
}

func parseEntry(s string) (entry, error) {
	names, value, ok := strings.Cut(s, "=")
	if !ok {
		return entry{}, errors.New(`want "a<->b=value" or "a->b=value"`)
	}
	var e entry
	sep := "->"
	if strings.Contains(names, "<->") {
		sep, e.both = "<->", true
	}
	a, b, ok := strings.Cut(names, sep)
	e.a, e.b = strings.TrimSpace(a), strings.TrimSpace(b)
	if !ok || !validName(e.a) || !validName(e.b) {
		return entry{}, errors.New(`want two names joined by "<->" or "->"`)
	}
	switch value = strings.TrimSpace(value); value {
	case "drop":
		e.drop = true
	case "heal":
		e.heal = true
	default:
		d, err := time.ParseDuration(value)
		if value == "0" {
			d, err = 0, nil
		}
		if err != nil {
			return entry{}, fmt.Errorf(`value: want a duration, "drop" or "heal": %w`, err)
		}
		if d < 0 || d > maxLatency {
			return entry{}, fmt.Errorf("latency %s outside [0, %s]", d, maxLatency)
		}
		e.latency = d
	}
	if (e.drop || e.heal) && !e.both {
		return entry{}, errors.New(`partitions cut both directions: use "<->"`)
	}
	return e, nil
}

func validName(s string) bool {
	return s != "" && len(s) <= maxNameLen && !strings.ContainsAny(s, "<>=, \t\r\n")
}
