package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
)

// Customer commands (CustomerService: customers, plans, grants, topups).
func init() {
	register("customer", "create", &command{
		group:   "customers",
		summary: "create a customer, or update the one with this id",
		usage:   "ID [--plan P] [--type T] [--label L] [--ref ID]... [--alt ID]... [--meta k=v]...",
		run:     customerCreate,
	})
	register("customer", "get", &command{
		group:   "customers",
		summary: "show a customer (id or alt id) with its usage, caps and grants",
		usage:   "ID [--stale]",
		run:     customerGet,
	})
	register("customer", "delete", &command{
		group:   "customers",
		summary: "delete a customer and its alt ids",
		usage:   "ID [--idempotency-key K]",
		run:     customerDelete,
	})
	register("customer", "set-plan", &command{
		group:   "customers",
		summary: "move a customer to another plan",
		usage:   "ID PLAN [--overwrite-meters] [--idempotency-key K]",
		run:     customerSetPlan,
	})
	register("grant", "", &command{
		group:   "customers",
		summary: "give a customer a balance of a credit (goodwill, promos)",
		usage:   "CUSTOMER CREDIT VALUE [--id ID] [--expires T] [--idempotency-key K]",
		run:     grant,
	})
	register("topup", "apply", &command{
		group:   "customers",
		summary: "grant one of the customer's plan topups (after it was paid for)",
		usage:   "CUSTOMER TOPUP [--idempotency-key K]",
		run:     topupApply,
	})
}

func customerCreate(g *globals, args []string) error {
	fs := subFlags(g, "customer", "create")
	req := &capstanv1.CreateCustomerRequest{Metadata: map[string]string{}}
	fs.StringVar(&req.Plan, "plan", "", "plan (default: inherited through refs, else the policy's default plan)")
	fs.StringVar(&req.Type, "type", "", "customer type that entitlement scopes match (server default: user)")
	fs.StringVar(&req.Label, "label", "", "display name")
	refs, alts := &listFlag{}, &listFlag{}
	fs.Var(refs, "ref", "`customer` this one inherits plans, scoped meters and shared caps from (repeatable)")
	fs.Var(alts, "alt", "alternative `id` (repeatable)")
	fs.Var(mapFlag(req.Metadata), "meta", "metadata `key=value` (repeatable); when given, replaces the metadata")
	fs.StringVar(&req.IdempotencyKey, "idempotency-key", "", "`key` that makes a retry of this call safe")
	fs.StringVar(&req.RoutingKey, "routing-key", "", routingKeyUsage)
	pos, err := parseN(g, fs, args, 1, 1)
	if err != nil {
		return err
	}
	req.Id, req.Refs, req.AltIds = pos[0], *refs, *alts
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.cus.CreateCustomer(ctx, connect.NewRequest(req))
	if err != nil {
		return g.callErr(err)
	}
	g.replayed(res.Msg.Duplicate)
	if g.json() {
		return g.printJSON(res.Msg)
	}
	printCustomer(g.stdout, res.Msg.Customer)
	return nil
}

func customerGet(g *globals, args []string) error {
	fs := subFlags(g, "customer", "get")
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
	res, err := c.cus.GetCustomer(ctx, connect.NewRequest(&capstanv1.GetCustomerRequest{Id: pos[0], Stale: *stale, RoutingKey: *rk}))
	if err != nil {
		return g.callErr(err)
	}
	if g.json() {
		return g.printJSON(res.Msg)
	}
	cu := res.Msg.Customer
	printCustomer(g.stdout, cu)
	if len(cu.Usage) > 0 {
		fmt.Fprintln(g.stdout, "\nUSAGE")
		t := newTable(g.stdout, "ENTITLEMENT", "CREDIT", "MODE", "VALUE", "LIMIT", "REMAINING", "RESETS")
		for _, u := range cu.Usage {
			t.row(u.Entitlement, u.Credit, u.Mode, u.Value, orUnlimited(u.Limit), orUnlimited(u.Remaining), when(u.ResetsAt))
		}
		t.flush()
	}
	if len(cu.Caps) > 0 {
		fmt.Fprintln(g.stdout, "\nCAPS")
		printCaps(g.stdout, cu.Caps)
	}
	if len(cu.Grants) > 0 {
		fmt.Fprintln(g.stdout, "\nGRANTS")
		printGrants(g.stdout, cu.Grants...)
	}
	return nil
}

func printCustomer(w io.Writer, cu *capstanv1.Customer) {
	keys := make([]string, 0, len(cu.Metadata))
	for k := range cu.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	meta := make([]string, len(keys))
	for i, k := range keys {
		meta[i] = k + "=" + cu.Metadata[k]
	}
	fields(w,
		"ID", cu.Id,
		"PLAN", cu.Plan,
		"TYPE", cu.Type,
		"LABEL", cu.Label,
		"REFS", list(cu.Refs),
		"ALT IDS", list(cu.AltIds),
		"METADATA", strings.Join(meta, ","),
		"OVERRIDES", list(cu.Overrides),
		"CREATED", when(cu.CreatedAt),
	)
}

func printGrants(w io.Writer, grants ...*capstanv1.Grant) {
	t := newTable(w, "GRANT", "CREDIT", "VALUE", "STARTING", "TOPUP", "EXPIRES")
	for _, gr := range grants {
		t.row(gr.Id, gr.Credit, gr.Value, gr.StartingValue, gr.Topup, when(gr.ExpiresOn))
	}
	t.flush()
}

func customerDelete(g *globals, args []string) error {
	fs := subFlags(g, "customer", "delete")
	key := fs.String("idempotency-key", "", "`key` that makes a retry of this call safe")
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
	res, err := c.cus.DeleteCustomer(ctx, connect.NewRequest(&capstanv1.DeleteCustomerRequest{Id: pos[0], IdempotencyKey: *key, RoutingKey: *rk}))
	if err != nil {
		return g.callErr(err)
	}
	g.replayed(res.Msg.Duplicate)
	if g.json() {
		return g.printJSON(res.Msg)
	}
	fmt.Fprintf(g.stdout, "customer %s deleted\n", pos[0])
	return nil
}

func customerSetPlan(g *globals, args []string) error {
	fs := subFlags(g, "customer", "set-plan")
	overwrite := fs.Bool("overwrite-meters", false, "start every meter of the new plan from zero (default: keep existing meters)")
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
	res, err := c.cus.SetPlan(ctx, connect.NewRequest(&capstanv1.SetPlanRequest{
		Customer: pos[0], Plan: pos[1], OverwriteMeters: *overwrite, IdempotencyKey: *key, RoutingKey: *rk,
	}))
	if err != nil {
		return g.callErr(err)
	}
	g.replayed(res.Msg.Duplicate)
	if g.json() {
		return g.printJSON(res.Msg)
	}
	fmt.Fprintf(g.stdout, "customer %s is on plan %s\n", pos[0], pos[1])
	return nil
}

func grant(g *globals, args []string) error {
	fs := subFlags(g, "grant", "")
	req := &capstanv1.GrantRequest{}
	fs.StringVar(&req.GrantId, "id", "", "grant id (server default: grant-N)")
	expires := &timeFlag{}
	fs.Var(expires, "expires", "`when` the grant ends: RFC 3339 or a duration from now (720h); default never")
	fs.StringVar(&req.IdempotencyKey, "idempotency-key", "", "`key` that makes a retry of this call safe")
	fs.StringVar(&req.RoutingKey, "routing-key", "", routingKeyUsage)
	pos, err := parseN(g, fs, args, 3, 3)
	if err != nil {
		return err
	}
	req.Customer, req.Credit, req.Value, req.ExpiresOn = pos[0], pos[1], pos[2], expires.t
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.cus.Grant(ctx, connect.NewRequest(req))
	if err != nil {
		return g.callErr(err)
	}
	g.replayed(res.Msg.Duplicate)
	if g.json() {
		return g.printJSON(res.Msg)
	}
	printGrants(g.stdout, res.Msg.Grant)
	return nil
}

func topupApply(g *globals, args []string) error {
	fs := subFlags(g, "topup", "apply")
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
	res, err := c.cus.ApplyTopup(ctx, connect.NewRequest(&capstanv1.ApplyTopupRequest{Customer: pos[0], Topup: pos[1], IdempotencyKey: *key, RoutingKey: *rk}))
	if err != nil {
		return g.callErr(err)
	}
	g.replayed(res.Msg.Duplicate)
	if g.json() {
		return g.printJSON(res.Msg)
	}
	printGrants(g.stdout, res.Msg.Grant)
	return nil
}
