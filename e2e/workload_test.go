//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/linearize"
)

// shape is what a workload meters: every customer is one hard-capped counter
// (the e2e plan's "calls" entitlement, overridden per customer to its cap),
// metered one unit at a time. Customers are retired after cap+Extra allows
// or once they collect maxUnknowns unknown outcomes, so every customer's
// history stays small enough for porcupine and ends with races for the last
// units.
type shape struct {
	Slots          int // customers metered at once
	MinCap, MaxCap int
	Extra          int     // allows past the cap before a customer is retired
	ReadShare      float64 // share of operations that are linearizable reads
}

// faultShape is the fault run's workload.
var faultShape = shape{Slots: 12, MinCap: 15, MaxCap: 45, Extra: 25, ReadShare: 0.2}

const (
	workersPerNode = 4
	maxUnknowns    = 12
	opTimeout      = 8 * time.Second // one operation, retries included
	attemptTimeout = 2500 * time.Millisecond
	readTimeout    = 4 * time.Second
)

// customer is one planned counter.
type customer struct {
	ID  string
	Cap int64
}

// ack is an allow that came back with a decision.
type ack struct {
	Key      string
	Customer string
	Allowed  bool
}

// stats counts what the clients saw.
type stats struct {
	allows, reads              atomic.Int64
	allowed, denied            atomic.Int64
	unknownAllows, failedReads atomic.Int64
	duplicateAnswers           atomic.Int64 // first answers that were already duplicates (a retry's earlier attempt applied)
	retries                    atomic.Int64
	provisioned                atomic.Int64

	mu        sync.Mutex
	errCodes  map[string]int
	anomalies []string // answers the workload never expects (wrong reason, bad value, refused arguments)
}

func (s *stats) code(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errCodes == nil {
		s.errCodes = map[string]int{}
	}
	s.errCodes[connect.CodeOf(err).String()]++
}

func (s *stats) anomaly(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.anomalies) < 50 {
		s.anomalies = append(s.anomalies, fmt.Sprintf(format, args...))
	}
}

// workload runs the capped clients against the harness's cluster.
type workload struct {
	h      *harness
	shape  shape
	runID  string
	plans  []customer
	caps   map[string]int64
	rec    *linearize.Recorder
	st     stats
	ready  chan customer
	next   atomic.Int64 // next plan to provision
	stop   atomic.Bool
	slotMu sync.Mutex
	slots  []*slot

	routeMu sync.Mutex
	live    []string          // nodes clients may call
	removed []string          // nodes taken out with RemoveNode
	homes   map[string]string // group (the node it started on) -> node it calls first

	ackMu sync.Mutex
	acks  []ack
	used  map[string]bool // customers that got at least one operation
}

type slot struct {
	c      customer
	allows int
	valid  bool
}

func newWorkload(h *harness, sh shape, planned int, live []string) *workload {
	w := &workload{
		h:     h,
		shape: sh,
		runID: strconv.FormatInt(time.Now().Unix()%1_000_000, 36),
		caps:  map[string]int64{},
		ready: make(chan customer, 2*sh.Slots),
		slots: make([]*slot, sh.Slots),
		live:  slices.Clone(live),
		homes: map[string]string{},
		used:  map[string]bool{},
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for i := range planned {
		c := customer{ID: fmt.Sprintf("e2e-%s-%04d", w.runID, i), Cap: int64(sh.MinCap + rng.IntN(sh.MaxCap-sh.MinCap+1))}
		w.plans = append(w.plans, c)
		w.caps[c.ID] = c.Cap
	}
	for _, id := range live {
		w.homes[id] = id
	}
	for i := range w.slots {
		w.slots[i] = &slot{}
	}
	w.rec = linearize.NewRecorder(w.caps)
	return w
}

// targets is the order a client of group tries nodes in: its home first,
// then the other live nodes in random order.
func (w *workload) targets(group string, rng *rand.Rand) []*api {
	w.routeMu.Lock()
	home := w.homes[group]
	live := slices.Clone(w.live)
	w.routeMu.Unlock()
	rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	out := make([]*api, 0, len(live))
	if home != "" {
		out = append(out, w.h.apis[home])
	}
	for _, id := range live {
		if id != home {
			out = append(out, w.h.apis[id])
		}
	}
	return out
}

// addNode adds a node clients may call.
func (w *workload) addNode(id string) {
	w.routeMu.Lock()
	defer w.routeMu.Unlock()
	w.live = append(w.live, id)
}

// removeNode takes a node out of the ones clients call; groups homed on it
// call to first instead.
func (w *workload) removeNode(id, to string) {
	w.routeMu.Lock()
	defer w.routeMu.Unlock()
	w.live = slices.DeleteFunc(w.live, func(x string) bool { return x == id })
	w.removed = append(w.removed, id)
	for g, home := range w.homes {
		if home == id {
			w.homes[g] = to
		}
	}
}

func (w *workload) liveNodes() []string {
	w.routeMu.Lock()
	defer w.routeMu.Unlock()
	return slices.Clone(w.live)
}

// provision creates planned customers ahead of the workers until ctx ends:
// CreateCustomer on the e2e plan, then CreateOverride to the customer's cap,
// each retried with one idempotency key until it answers.
func (w *workload) provision(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		i := int(w.next.Add(1) - 1)
		if i >= len(w.plans) {
			return
		}
		c := w.plans[i]
		if err := w.create(ctx, c, rng); err != nil {
			if ctx.Err() == nil {
				w.st.anomaly("provision %s: %v", c.ID, err)
			}
			continue
		}
		w.st.provisioned.Add(1)
		select {
		case w.ready <- c:
		case <-ctx.Done():
			return
		}
	}
}

func (w *workload) create(ctx context.Context, c customer, rng *rand.Rand) error {
	targets := w.targets("", rng) // any live node, in random order
	err := untilAnswered(ctx, targets, func(ctx context.Context, target *api) error {
		_, err := target.customers.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{
			Id: c.ID, Plan: plan, IdempotencyKey: c.ID + ".create",
		}))
		return err
	})
	if err != nil {
		return fmt.Errorf("create customer: %w", err)
	}
	var limit string
	err = untilAnswered(ctx, targets, func(ctx context.Context, target *api) error {
		res, err := target.customers.CreateOverride(ctx, connect.NewRequest(&capstanv1.CreateOverrideRequest{
			Customer: c.ID, Entitlement: entitlement, Mode: "hard", Value: strconv.FormatInt(c.Cap, 10),
			Resets: new(false), IdempotencyKey: c.ID + ".cap",
		}))
		if err == nil {
			limit = res.Msg.GetLimit().GetValue()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create override: %w", err)
	}
	if limit != strconv.FormatInt(c.Cap, 10) {
		return fmt.Errorf("override answered limit %q, want %d", limit, c.Cap)
	}
	return nil
}

// untilAnswered calls call on the targets in turn (each attempt bounded by
// attemptTimeout, with backoff between) until one answers or the error is
// definite; the same idempotency key inside call makes the retries safe.
func untilAnswered(ctx context.Context, targets []*api, call func(context.Context, *api) error) error {
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt > 0 {
			sleep(ctx, backoff(attempt))
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := call(actx, targets[attempt%len(targets)])
		cancel()
		if err == nil || definite(err) {
			return err
		}
	}
}

// pick returns the customer a worker meters next, moving a slot on to a
// fresh customer once its customer is used up.
func (w *workload) pick(rng *rand.Rand) (customer, bool) {
	w.slotMu.Lock()
	defer w.slotMu.Unlock()
	s := w.slots[rng.IntN(len(w.slots))]
	if !s.valid || s.allows >= int(s.c.Cap)+w.shape.Extra || w.rec.Unknowns(s.c.ID) >= maxUnknowns {
		select {
		case c := <-w.ready:
			*s = slot{c: c, valid: true}
		default:
			// Nothing provisioned yet: keep metering the old customer, unless
			// it has too many unknowns for the checker.
			if !s.valid || w.rec.Unknowns(s.c.ID) >= 2*maxUnknowns {
				return customer{}, false
			}
		}
	}
	s.allows++
	return s.c, true
}

// worker meters until the workload stops. client is its porcupine client id.
func (w *workload) worker(group string, client int) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(client)))
	for seq := 0; !w.stop.Load(); seq++ {
		c, ok := w.pick(rng)
		if !ok {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		w.ackMu.Lock()
		w.used[c.ID] = true
		w.ackMu.Unlock()
		if rng.Float64() < w.shape.ReadShare {
			w.read(group, client, c, rng)
			continue
		}
		key := fmt.Sprintf("%s.c%d.%d", c.ID, client, seq)
		if !w.allow(group, client, c, key, rng) {
			time.Sleep(100 * time.Millisecond) // a fault is on: don't spin
		}
	}
}

// allow meters one unit with an idempotency key, retrying the same key on
// other nodes until the operation's deadline; reports whether it got a
// decision.
func (w *workload) allow(group string, client int, c customer, key string, rng *rand.Rand) bool {
	w.st.allows.Add(1)
	req := &capstanv1.AllowRequest{Customer: c.ID, Entitlement: entitlement, Value: "1", IdempotencyKey: key}
	done := w.rec.Call(client, linearize.Input{Kind: linearize.KindAllow, Customer: c.ID, Amount: 1, RequestID: key})
	res, err := callAllow(context.Background(), w.targets(group, rng), req, opTimeout, &w.st)
	if err != nil {
		done(linearize.Unknown())
		w.st.unknownAllows.Add(1)
		if definite(err) {
			w.st.anomaly("allow %s: %v", key, err)
		}
		return false
	}
	done(linearize.Decision(res.Allowed))
	if res.Duplicate {
		w.st.duplicateAnswers.Add(1)
	}
	if res.Allowed {
		w.st.allowed.Add(1)
	} else {
		w.st.denied.Add(1)
		if res.Reason != "limit" {
			w.st.anomaly("allow %s denied with reason %q, want limit", key, res.Reason)
		}
	}
	w.ackMu.Lock()
	w.acks = append(w.acks, ack{Key: key, Customer: c.ID, Allowed: res.Allowed})
	w.ackMu.Unlock()
	return true
}

// read records a linearizable read of the customer's counter.
func (w *workload) read(group string, client int, c customer, rng *rand.Rand) {
	w.st.reads.Add(1)
	done := w.rec.Call(client, linearize.Input{Kind: linearize.KindRead, Customer: c.ID})
	targets := w.targets(group, rng)
	v, err := readValue(context.Background(), targets[:min(2, len(targets))], c.ID, readTimeout, &w.st)
	if err != nil {
		done(linearize.Unknown())
		w.st.failedReads.Add(1)
		if definite(err) {
			w.st.anomaly("read %s: %v", c.ID, err)
		}
		return
	}
	done(linearize.ReadValue(v))
}

// callAllow sends req to targets in turn (the same idempotency key every
// time) until one answers or timeout passes. Errors that say the request
// was refused as such (bad arguments, a reused key) end the retries.
func callAllow(ctx context.Context, targets []*api, req *capstanv1.AllowRequest, timeout time.Duration, st *stats) (*capstanv1.AllowResponse, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for attempt := 0; ; attempt++ {
		remaining := time.Until(deadline)
		if remaining <= 0 || ctx.Err() != nil {
			return nil, errors.Join(errGaveUp, last)
		}
		if attempt > 0 {
			st.retries.Add(1)
		}
		actx, cancel := context.WithTimeout(ctx, min(attemptTimeout, remaining))
		res, err := targets[attempt%len(targets)].limiter.Allow(actx, connect.NewRequest(req))
		cancel()
		if err == nil {
			return res.Msg, nil
		}
		st.code(err)
		if definite(err) {
			return nil, err
		}
		last = err
		sleep(ctx, min(backoff(attempt), time.Until(deadline)))
	}
}

// readValue reads the customer's meter value (linearizable), trying targets
// in turn until timeout.
func readValue(ctx context.Context, targets []*api, customer string, timeout time.Duration, st *stats) (int64, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for attempt := 0; ; attempt++ {
		remaining := time.Until(deadline)
		if remaining <= 0 || ctx.Err() != nil {
			return 0, errors.Join(errGaveUp, last)
		}
		actx, cancel := context.WithTimeout(ctx, min(attemptTimeout, remaining))
		res, err := targets[attempt%len(targets)].limiter.GetUsage(actx, connect.NewRequest(&capstanv1.GetUsageRequest{
			Customer: customer, Entitlement: entitlement,
		}))
		cancel()
		if err == nil {
			u := res.Msg.GetUsage()
			if !u.GetFound() {
				return 0, connect.NewError(connect.CodeNotFound, fmt.Errorf("usage not found: %s", u.GetReason()))
			}
			v, perr := strconv.ParseInt(u.GetValue(), 10, 64)
			if perr != nil {
				return 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("meter value %q is not a whole number", u.GetValue()))
			}
			return v, nil
		}
		if st != nil {
			st.code(err)
		}
		if definite(err) {
			return 0, err
		}
		last = err
		sleep(ctx, min(backoff(attempt), time.Until(deadline)))
	}
}

var errGaveUp = errors.New("gave up: no answer before the deadline")

// definite reports errors that mean the call was refused as such and a retry
// would be refused the same way. Everything else (unavailable, deadline,
// a dropped connection, an internal error) may or may not have applied.
func definite(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeNotFound,
		connect.CodeAlreadyExists, connect.CodePermissionDenied, connect.CodeUnauthenticated,
		connect.CodeUnimplemented, connect.CodeOutOfRange:
		return true
	}
	return false
}

func backoff(attempt int) time.Duration {
	return min(time.Duration(attempt+1)*50*time.Millisecond, 500*time.Millisecond)
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// run starts the provisioners and the client groups (workersPerNode per live
// node) and returns a function that stops them and waits for in-flight
// operations to finish.
func (w *workload) run(ctx context.Context) (stop func()) {
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.provision(pctx, rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(100+i))))
		}()
	}
	client := 0
	for _, group := range w.liveNodes() {
		for range workersPerNode {
			wg.Add(1)
			go func(client int) {
				defer wg.Done()
				w.worker(group, client)
			}(client)
			client++
		}
	}
	return func() {
		w.stop.Store(true)
		cancel()
		wg.Wait()
	}
}

// fill provisions n customers before the clients start, so they start at
// full speed.
func (w *workload) fill(ctx context.Context, n int) error {
	errs := make([]error, n)
	parallel(8, n, func(i int) {
		c := w.plans[int(w.next.Add(1)-1)]
		if err := w.create(ctx, c, rand.New(rand.NewPCG(uint64(i), 2))); err != nil {
			errs[i] = fmt.Errorf("provision %s: %w", c.ID, err)
			return
		}
		w.st.provisioned.Add(1)
		w.ready <- c
	})
	return errors.Join(errs...)
}

func (w *workload) removedNodes() []string {
	w.routeMu.Lock()
	defer w.routeMu.Unlock()
	return slices.Clone(w.removed)
}
