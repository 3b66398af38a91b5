package main

import (
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
)

// Spend cap commands (CustomerService caps).
func init() {
	register("cap", "add", &command{
		group:   "customers",
		summary: "add a standing spend cap to a customer",
		usage:   "CUSTOMER VALUE [--id ID] [--credit C] [--overage-only] [--ignore-grants] [--reset-sch S] ...",
		about: `VALUE is the ceiling in --credit (rune by default: 1 rune = 1 USD). Resets follow
--reset-sch (calendar: monthly:1, weekly:mon) or --reset-inc (fixed: 7days);
--resets alone resets every 30 days.`,
		run: capAdd,
	})
	register("cap", "get", &command{
		group:   "customers",
		summary: "show one cap with its meter value and next reset",
		usage:   "CUSTOMER CAP_ID [--stale]",
		run:     capGet,
	})
	register("cap", "list", &command{
		group:   "customers",
		summary: "list a customer's caps in the order they are checked",
		usage:   "CUSTOMER [--stale]",
		run:     capList,
	})
	register("cap", "reset", &command{
		group:   "customers",
		summary: "zero a cap's meter value and restart its clock",
		usage:   "CUSTOMER CAP_ID [--idempotency-key K]",
		run:     capReset,
	})
	register("cap", "remove", &command{
		group:   "customers",
		summary: "delete a cap",
		usage:   "CUSTOMER CAP_ID [--idempotency-key K]",
		run:     capRemove,
	})
}

func capAdd(g *globals, args []string) error {
	fs := subFlags(g, "cap", "add")
	req := &capstanv1.AddCapRequest{}
	fs.StringVar(&req.CapId, "id", "", "cap id (server default: cap-N)")
	fs.StringVar(&req.Credit, "credit", "", "credit or currency of VALUE (server default: rune)")
	exch := &optBool{}
	fs.Var(exch, "exchangeable", "count usage of other credits, converted (default: true for rune and currencies)")
	fs.BoolVar(&req.OverageOnly, "overage-only", false, "count only usage past the plan limit")
	fs.BoolVar(&req.IgnoreGrants, "ignore-grants", false, "count only what grants do not cover")
	fs.BoolVar(&req.ObserveOnly, "observe-only", false, "never deny; only report crossings")
	fs.BoolVar(&req.OverheadCost, "overhead-cost", false, "count the provider cost instead of the price")
	fs.BoolVar(&req.FollowDecrements, "follow-decrements", false, "let decrements lower the cap's meter")
	fs.BoolVar(&req.HardTrailing, "hard-trailing", false, "deny only once the cap is already reached")
	fs.BoolVar(&req.Shared, "shared", false, "apply to customers that ref this one")
	sharedWith, scope := &listFlag{}, &listFlag{}
	fs.Var(sharedWith, "shared-with", "limit sharing to these customer types (repeatable)")
	fs.Var(scope, "scope", "entitlements the cap applies to (repeatable; default all)")
	fs.BoolVar(&req.Resets, "resets", false, "reset every 30 days unless --reset-inc or --reset-sch say otherwise")
	fs.StringVar(&req.ResetInc, "reset-inc", "", "fixed reset period (7days, 30days)")
	fs.StringVar(&req.ResetSch, "reset-sch", "", "calendar reset schedule (monthly:1, weekly:mon)")
	expires := &timeFlag{}
	fs.Var(expires, "expires", "`when` to remove the cap: RFC 3339 or a duration from now (720h); default never")
	fs.StringVar(&req.IdempotencyKey, "idempotency-key", "", "`key` that makes a retry of this call safe")
	fs.StringVar(&req.RoutingKey, "routing-key", "", routingKeyUsage)
	pos, err := parseN(g, fs, args, 2, 2)
	if err != nil {
		return err
	}
	req.Customer, req.Value = pos[0], pos[1]
	req.Exchangeable, req.SharedWith, req.Scope, req.ExpiresOn = exch.v, *sharedWith, *scope, expires.t
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.cus.AddCap(ctx, connect.NewRequest(req))
	if err != nil {
		return g.callErr(err)
	}
	g.replayed(res.Msg.Duplicate)
	if g.json() {
		return g.printJSON(res.Msg)
	}
	printCaps(g.stdout, []*capstanv1.Cap{res.Msg.Cap})
	return nil
}

func capGet(g *globals, args []string) error {
	fs := subFlags(g, "cap", "get")
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
	res, err := c.cus.GetCap(ctx, connect.NewRequest(&capstanv1.GetCapRequest{Customer: pos[0], CapId: pos[1], Stale: *stale, RoutingKey: *rk}))
	if err != nil {
		return g.callErr(err)
	}
	if g.json() {
		return g.printJSON(res.Msg)
	}
	printCaps(g.stdout, []*capstanv1.Cap{res.Msg.Cap})
	return nil
}

func capList(g *globals, args []string) error {
	fs := subFlags(g, "cap", "list")
	stale := fs.Bool("stale", false, "read this node's copy, which may lag the leader a little")
	rk := routingKey(fs)
	pos, err := parseN(g, fs, args, 1, 1)
	if err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.cus.ListCaps(ctx, connect.NewRequest(&capstanv1.ListCapsRequest{Customer: pos[0], Stale: *stale, RoutingKey: *rk}))
	if err != nil {
		return g.callErr(err)
	}
	if g.json() {
		return g.printJSON(res.Msg)
	}
	printCaps(g.stdout, res.Msg.Caps)
	return nil
}

func capReset(g *globals, args []string) error {
	fs := subFlags(g, "cap", "reset")
	key := fs.String("idempotency-key", "", "`key` that makes a retry of this call safe")
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
	res, err := c.cus.ResetCap(ctx, connect.NewRequest(&capstanv1.ResetCapRequest{Customer: pos[0], CapId: pos[1], IdempotencyKey: *key, RoutingKey: *rk}))
	if err != nil {
		return g.callErr(err)
	}
	g.replayed(res.Msg.Duplicate)
	if g.json() {
		return g.printJSON(res.Msg)
	}
	fmt.Fprintf(g.stdout, "cap %s of %s reset\n", pos[1], pos[0])
	return nil
}

func capRemove(g *globals, args []string) error {
	fs := subFlags(g, "cap", "remove")
	key := fs.String("idempotency-key", "", "`key` that makes a retry of this call safe")
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
	res, err := c.cus.RemoveCap(ctx, connect.NewRequest(&capstanv1.RemoveCapRequest{Customer: pos[0], CapId: pos[1], IdempotencyKey: *key, RoutingKey: *rk}))
	if err != nil {
		return g.callErr(err)
	}
	g.replayed(res.Msg.Duplicate)
	if g.json() {
		return g.printJSON(res.Msg)
	}
	fmt.Fprintf(g.stdout, "cap %s of %s removed\n", pos[1], pos[0])
	return nil
}

// printCaps is the cap table: one row per cap, options as a comma list.
func printCaps(w io.Writer, caps []*capstanv1.Cap) {
	t := newTable(w, "CAP", "CREDIT", "VALUE", "METER", "REMAINING", "RESETS", "OPTIONS")
	for _, c := range caps {
		t.row(c.CapId, c.Credit, c.Value, c.MeterValue, c.Remaining, when(c.ResetsAt), capOptions(c))
	}
	t.flush()
}

func capOptions(c *capstanv1.Cap) string {
	var o []string
	flag := func(on bool, name string) {
		if on {
			o = append(o, name)
		}
	}
	flag(c.OverageOnly, "overage-only")
	flag(c.IgnoreGrants, "ignore-grants")
	flag(c.ObserveOnly, "observe-only")
	flag(c.OverheadCost, "overhead-cost")
	flag(c.FollowDecrements, "follow-decrements")
	flag(c.HardTrailing, "hard-trailing")
	flag(c.Shared, "shared")
	flag(!c.Exchangeable, "exact-credit")
	if len(c.SharedWith) > 0 {
		o = append(o, "shared-with="+strings.Join(c.SharedWith, "+"))
	}
	if len(c.Scope) > 0 {
		o = append(o, "scope="+strings.Join(c.Scope, "+"))
	}
	if c.ResetSch != "" {
		o = append(o, "reset-sch="+c.ResetSch)
	} else if c.ResetInc != "" {
		o = append(o, "reset-inc="+c.ResetInc)
	}
	if c.ExpiresOn != nil {
		o = append(o, "expires="+when(c.ExpiresOn))
	}
	return strings.Join(o, ",")
}
