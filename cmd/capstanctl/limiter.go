package main

import (
	"flag"
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limiter commands (LimiterService): a client-role API key is enough.
func init() {
	register("allow", "", &command{
		group:   "limiter",
		summary: "decide a call and, when allowed, meter it",
		usage:   "CUSTOMER ENTITLEMENT [VALUE] [--event JSON] [--idempotency-key K] [--fail-denied]",
		about: `VALUE is in the limit credit's units (or --unit); empty is zero, a negative value
gives usage back (write it as-is: capstanctl allow c1 chat -5). A denied decision
is an answer, not an error: it exits 0 unless --fail-denied is given.`,
		run: allow,
	})
	register("check", "", &command{
		group:   "limiter",
		summary: "show the decision allow would make now, changing nothing",
		usage:   "CUSTOMER ENTITLEMENT [VALUE] [--event JSON] [--fail-denied]",
		run:     check,
	})
	register("usage", "", &command{
		group:   "limiter",
		summary: "show a customer's usage of an entitlement (value, limit, remaining, resets, rate)",
		usage:   "CUSTOMER ENTITLEMENT [--stale]",
		run:     usage,
	})
}

// callFlags are the flags allow and check share.
type callFlags struct {
	event, unit, overhead, routingKey string
	caps                              mapFlag
	failDenied                        bool
}

func (f *callFlags) register(fs *flag.FlagSet) {
	f.caps = mapFlag{}
	fs.StringVar(&f.event, "event", "", "event data, a `JSON` object (carried on events, given to cost expressions)")
	fs.StringVar(&f.unit, "unit", "", "`unit` of VALUE (GB, ms), converted to the credit's units")
	fs.StringVar(&f.overhead, "overhead", "", "the call's provider `cost` in runes, when known")
	fs.Var(f.caps, "cap", "call-scoped ceiling `CREDIT=VALUE` (repeatable)")
	fs.BoolVar(&f.failDenied, "fail-denied", false, "exit 1 when the decision is denied")
	fs.StringVar(&f.routingKey, "routing-key", "", routingKeyUsage)
}

// valueArg is the optional VALUE argument.
func valueArg(pos []string) string {
	if len(pos) > 2 {
		return pos[2]
	}
	return ""
}

func allow(g *globals, args []string) error {
	fs := subFlags(g, "allow", "")
	var f callFlags
	f.register(fs)
	noEvents := fs.Bool("no-events", false, "emit no events for this call")
	force := fs.Bool("force", false, "record usage that already happened, past limits and caps")
	key := fs.String("idempotency-key", "", "`key` that makes a retry of this call safe (same key, same answer, metered once)")
	pos, err := parseN(g, fs, args, 2, 3)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.lim.Allow(ctx, connect.NewRequest(&capstanv1.AllowRequest{
		Customer: pos[0], Entitlement: pos[1], Value: valueArg(pos), Unit: f.unit, EventData: f.event,
		Caps: f.caps, Overhead: f.overhead, NoEvents: *noEvents, Force: *force, IdempotencyKey: *key, RoutingKey: f.routingKey,
	}))
	if err != nil {
		return g.callErr(err)
	}
	m := res.Msg
	g.replayed(m.Duplicate)
	if g.json() {
		if err := g.printJSON(m); err != nil {
			return err
		}
	} else {
		printDecision(g, m.Allowed, m.Reason, m.CapId, m.Remaining, m.ResetsAt, m.PolicyVersion, "EVENTS", eventTypes(m.Events))
	}
	return deniedExit(f.failDenied, m.Allowed, m.Reason)
}

func check(g *globals, args []string) error {
	fs := subFlags(g, "check", "")
	var f callFlags
	f.register(fs)
	stale := fs.Bool("stale", false, "decide on this node's copy, which may lag the leader a little")
	pos, err := parseN(g, fs, args, 2, 3)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.lim.Check(ctx, connect.NewRequest(&capstanv1.CheckRequest{
		Customer: pos[0], Entitlement: pos[1], Value: valueArg(pos), Unit: f.unit, EventData: f.event,
		Caps: f.caps, Overhead: f.overhead, Stale: *stale, RoutingKey: f.routingKey,
	}))
	if err != nil {
		return g.callErr(err)
	}
	m := res.Msg
	if g.json() {
		if err := g.printJSON(m); err != nil {
			return err
		}
	} else {
		printDecision(g, m.Allowed, m.Reason, m.CapId, m.Remaining, m.ResetsAt, m.PolicyVersion)
	}
	return deniedExit(f.failDenied, m.Allowed, m.Reason)
}

// printDecision prints a decision as NAME VALUE lines, then extra pairs.
func printDecision(g *globals, allowed bool, reason, capID, remaining string, resets *timestamppb.Timestamp, policy uint64, extra ...string) {
	result := "allowed"
	if !allowed {
		result = "denied"
	}
	fields(g.stdout, append([]string{
		"RESULT", result,
		"REASON", reason,
		"CAP", capID,
		"REMAINING", orUnlimited(remaining),
		"RESETS", when(resets),
		"POLICY", "v" + strconv.FormatUint(policy, 10),
	}, extra...)...)
}

func deniedExit(failDenied, allowed bool, reason string) error {
	if failDenied && !allowed {
		return &exitError{code: 1, err: fmt.Errorf("denied: %s", reason)}
	}
	return nil
}

func usage(g *globals, args []string) error {
	fs := subFlags(g, "usage", "")
	stale := fs.Bool("stale", false, "read this node's copy, which may lag the leader a little")
	rk := routingKey(fs)
	pos, err := parseN(g, fs, args, 2, 2)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.lim.GetUsage(ctx, connect.NewRequest(&capstanv1.GetUsageRequest{Customer: pos[0], Entitlement: pos[1], Stale: *stale, RoutingKey: *rk}))
	if err != nil {
		return g.callErr(err)
	}
	u := res.Msg.Usage
	if g.json() {
		if err := g.printJSON(res.Msg); err != nil {
			return err
		}
	}
	if u == nil || !u.Found {
		reason := "unknown"
		if u != nil {
			reason = u.Reason
		}
		// An unknown customer or entitlement is an answer, but not usage.
		return failed("no usage of %s for %s: %s", pos[1], pos[0], reason)
	}
	if g.json() {
		return nil
	}
	if !u.Limited {
		fields(g.stdout, "ENTITLEMENT", u.Entitlement, "LIMITED", "no (a feature flag)")
		return nil
	}
	fields(g.stdout,
		"ENTITLEMENT", u.Entitlement,
		"CREDIT", u.Credit,
		"MODE", u.Mode,
		"VALUE", u.Value,
		"LIMIT", orUnlimited(u.Limit),
		"REMAINING", orUnlimited(u.Remaining),
		"ALLOWANCE", orUnlimited(u.Allowance),
		"HELD", u.Held,
		"GRANTS", u.Grants,
		"OVERHEAD", u.Overhead,
		"PERIOD START", when(u.PeriodStart),
		"RESETS", when(u.ResetsAt),
		"RATE", u.Rate,
		"EXHAUSTED AT", when(u.ProjectedExhaustion),
	)
	return nil
}
