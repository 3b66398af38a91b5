package linearize

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// OpenReturn marks an operation whose return time is unknown. Check also
// treats every allow with an unknown outcome as open, whatever its Return,
// and rewrites open returns to just after the history's last timestamp.
const OpenReturn int64 = math.MaxInt64

// Result is the verdict on a History.
type Result struct {
	// OK is true when every customer's history is linearizable and no cap
	// admitted past its value.
	OK bool
	// Unknown is true when porcupine ran out of time (or ctx ended) for at
	// least one customer before finding a violation there.
	Unknown bool
	// OverCap is the number of customers the simple check caught over their
	// cap. It does not depend on porcupine finishing.
	OverCap int
	// PerCustomer holds each customer's details.
	PerCustomer map[string]CustomerResult
	// Visualizations lists the HTML files written for illegal customers.
	Visualizations []string
}

// CustomerResult is the verdict on one customer's operations.
type CustomerResult struct {
	// Linearizable is porcupine's answer: Ok, Illegal or Unknown (timed out).
	Linearizable porcupine.CheckResult
	Cap          int64
	// Admitted is the sum of amounts of allows known to have been allowed.
	Admitted int64
	// MaxRead is the largest value a known read returned.
	MaxRead int64
	// OverCap is Admitted > Cap or MaxRead > Cap.
	OverCap bool
	// Ops counts the operations checked (unknown reads are dropped: they
	// constrain nothing) and Unknowns the allows among them with an unknown
	// outcome.
	Ops, Unknowns int
	// Visualization is the HTML file written when Linearizable is Illegal
	// and Check was given a directory.
	Visualization string
}

// Check checks h customer by customer, with porcupine and with the simple
// over-cap count. timeout bounds the whole porcupine search (0 means no
// bound beyond ctx's deadline); customers not finished in time are Unknown.
// porcupine cannot be interrupted, so ctx ends the check only through its
// deadline or between customers. When visualizeDir is not empty, every
// customer found Illegal gets porcupine's HTML visualisation written there.
//
// The error reports a malformed history (a customer without a cap, a
// negative amount, a foreign input type) or a visualisation that could not
// be written; in the latter case the Result is still complete.
func Check(ctx context.Context, h History, timeout time.Duration, visualizeDir string) (Result, error) {
	byCustomer, err := normalize(h)
	if err != nil {
		return Result{}, err
	}
	deadline, hasDeadline := ctx.Deadline()
	if timeout > 0 {
		if d := time.Now().Add(timeout); !hasDeadline || d.Before(deadline) {
			deadline, hasDeadline = d, true
		}
	}

	customers := make([]string, 0, len(byCustomer))
	for c := range byCustomer {
		customers = append(customers, c)
	}
	sort.Strings(customers)

	results := make([]CustomerResult, len(customers))
	errs := make([]error, len(customers))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, c := range customers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i], errs[i] = checkCustomer(ctx, c, h.Caps[c], byCustomer[c], deadline, hasDeadline, visualizeDir)
		}()
	}
	wg.Wait()

	res := Result{PerCustomer: make(map[string]CustomerResult, len(customers))}
	illegal := false
	for i, c := range customers {
		r := results[i]
		res.PerCustomer[c] = r
		switch r.Linearizable {
		case porcupine.Illegal:
			illegal = true
		case porcupine.Unknown:
			res.Unknown = true
		}
		if r.OverCap {
			res.OverCap++
		}
		if r.Visualization != "" {
			res.Visualizations = append(res.Visualizations, r.Visualization)
		}
	}
	res.OK = !illegal && !res.Unknown && res.OverCap == 0
	return res, errors.Join(errs...)
}

func checkCustomer(ctx context.Context, customer string, capacity int64, ops []porcupine.Operation,
	deadline time.Time, hasDeadline bool, visualizeDir string) (CustomerResult, error) {
	r := CustomerResult{Cap: capacity, Ops: len(ops)}
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		switch {
		case in.Kind == KindAllow && !out.Known:
			r.Unknowns++
		case in.Kind == KindAllow && out.Allowed:
			r.Admitted += in.Amount
		case in.Kind == KindRead:
			r.MaxRead = max(r.MaxRead, out.Value)
		}
	}
	r.OverCap = r.Admitted > capacity || r.MaxRead > capacity

	// Each customer is already its own partition; porcupine's own
	// partitioning would stop all partitions at the first illegal one.
	model := Model(map[string]int64{customer: capacity})
	model.Partition = nil
	var budget time.Duration
	if hasDeadline {
		budget = time.Until(deadline)
		if budget <= 0 {
			r.Linearizable = porcupine.Unknown
			return r, nil
		}
	}
	if ctx.Err() != nil {
		r.Linearizable = porcupine.Unknown
		return r, nil
	}
	if visualizeDir == "" {
		r.Linearizable = porcupine.CheckOperationsTimeout(model, ops, budget)
		return r, nil
	}
	var info porcupine.LinearizationInfo
	r.Linearizable, info = porcupine.CheckOperationsVerbose(model, ops, budget)
	if r.Linearizable != porcupine.Illegal {
		return r, nil
	}
	path, err := writeVisualization(model, info, visualizeDir, customer)
	if err != nil {
		return r, fmt.Errorf("customer %q: %w", customer, err)
	}
	r.Visualization = path
	return r, nil
}

// normalize validates h, drops unknown reads, opens the return time of
// unknown allows and splits the operations per customer.
func normalize(h History) (map[string][]porcupine.Operation, error) {
	var end int64
	for _, op := range h.Ops {
		end = max(end, op.Call)
		if op.Return != OpenReturn {
			end = max(end, op.Return)
		}
	}
	open := end + 1

	by := make(map[string][]porcupine.Operation)
	for i, op := range h.Ops {
		in, ok := op.Input.(Input)
		if !ok {
			return nil, fmt.Errorf("operation %d: input is %T, want linearize.Input", i, op.Input)
		}
		out, ok := op.Output.(Output)
		if !ok {
			return nil, fmt.Errorf("operation %d: output is %T, want linearize.Output", i, op.Output)
		}
		if _, ok := h.Caps[in.Customer]; !ok {
			return nil, fmt.Errorf("operation %d: customer %q has no cap", i, in.Customer)
		}
		switch in.Kind {
		case KindAllow:
			if in.Amount < 0 {
				return nil, fmt.Errorf("operation %d: negative amount %d", i, in.Amount)
			}
			if !out.Known {
				op.Return = OpenReturn
			}
		case KindRead:
			if !out.Known {
				continue
			}
		default:
			return nil, fmt.Errorf("operation %d: unknown kind %d", i, in.Kind)
		}
		if op.Return == OpenReturn {
			op.Return = open
		}
		if op.Return < op.Call {
			return nil, fmt.Errorf("operation %d: returns at %d before its call at %d", i, op.Return, op.Call)
		}
		by[in.Customer] = append(by[in.Customer], op)
	}
	return by, nil
}

func writeVisualization(model porcupine.Model, info porcupine.LinearizationInfo, dir, customer string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("visualisation dir: %w", err)
	}
	f, err := os.CreateTemp(dir, "linearize-"+fileSafe(customer)+"-*.html")
	if err != nil {
		return "", fmt.Errorf("visualisation file: %w", err)
	}
	if err := porcupine.Visualize(model, info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("visualisation %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("visualisation %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

func fileSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}
