package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
)

// The event stream (EventService.Subscribe): an admin key is needed.
func init() {
	register("events", "", &command{
		group:   "events",
		summary: "print a customer's or a shard's events after a cursor; --follow waits for new ones",
		usage:   "--customer ID | --shard N [--after INDEX:SEQ] [--type T]... [--follow]",
		about: `Reads a shard's event log on the node at --server, in log order: with --customer,
the events of that customer (whose meter or cap moved, or who made the call) on
its shard; with --shard, every event of the shard. Each event has a cursor
INDEX:SEQ (the raft log index of the command that produced it, and its place
among that command's events), the same on every replica: --after prints only
the events after a cursor, so a consumer resumes where it stopped.

Without --follow it prints the events the node still keeps after the cursor and
exits; with --follow it then waits for new ones until interrupted (Ctrl-C exits
0), or until --timeout when one is given. A row shows the cursor, time,
customer, type and the event's key fields (value=OLD->NEW is the meter;
cap=ID(METER/VALUE) a cap); -o json prints one SubscribeResponse per line,
with every field.

A node keeps a bounded number of recent events per shard (100000 by default)
and none from before its last snapshot restore. An older cursor is refused
(out_of_range, exit 1), naming the cursor to resume after once you have
resynchronised from meters and caps.`,
		run: events,
	})
}

func events(g *globals, args []string) error {
	fs := subFlags(g, "events", "")
	customer := fs.String("customer", "", "print the events of customer `ID` (read from its shard)")
	rk := routingKey(fs)
	shard := &shardFlag{}
	fs.Var(shard, "shard", "print every event of shard `N`")
	after := &cursorFlag{}
	fs.Var(after, "after", "print only events after the cursor `INDEX:SEQ` (default: from the oldest the node keeps)")
	types := &listFlag{}
	fs.Var(types, "type", "print only events of this `type`, e.g. meter-overage (repeatable)")
	follow := fs.Bool("follow", false, "then wait for new events until interrupted (or --timeout, when given)")
	if _, err := parseN(g, fs, args, 0, 0); err != nil {
		return err
	}
	switch {
	case *customer != "" && shard.set:
		return usageErr("give --customer or --shard, not both; usage: capstanctl %s", usageLine(fs))
	case *customer == "" && !shard.set:
		return usageErr("--customer or --shard is required; usage: capstanctl %s", usageLine(fs))
	case *rk != "" && *customer == "":
		return usageErr("--routing-key picks a customer's shard: give it with --customer")
	}
	c, err := g.client()
	if err != nil {
		return err
	}

	// Without --follow the call is bounded by --timeout, like any other; with
	// it, only by an interrupt, or by --timeout when the command line gave one.
	var ctx context.Context
	var cancel context.CancelFunc
	if *follow {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		ctx, cancel = context.WithCancel(ctx)
		if g.timeoutSet || flagSet(fs, "timeout") {
			// Cancelled rather than given a deadline: a deadline would go to the
			// server, which then ends the stream itself, and that is not told
			// apart from a server that went away.
			defer time.AfterFunc(g.timeout, cancel).Stop()
		}
	} else {
		ctx, cancel = g.ctx()
	}
	defer cancel()

	stream, err := c.evt.Subscribe(ctx, connect.NewRequest(&capstanv1.SubscribeRequest{
		Shard: shard.n, Customer: *customer, RoutingKey: *rk, After: after.c, Follow: *follow, Types: *types,
	}))
	if err != nil {
		return g.eventsErr(err, nil)
	}
	defer stream.Close()
	t := newLineTable(g.stdout, []string{"CURSOR", "TIME", "CUSTOMER", "TYPE", "DETAILS"}, 8, 20, 10, 22)
	var last *capstanv1.EventCursor
	for stream.Receive() {
		m := stream.Msg()
		last = m.Cursor
		if g.json() {
			if err := g.printJSONLine(m); err != nil {
				return err
			}
			continue
		}
		ev := m.Event
		if ev == nil {
			ev = &capstanv1.Event{}
		}
		t.row(cursorString(m.Cursor), when(m.Time), ev.Customer, ev.Type, eventDetails(ev))
	}
	err = stream.Err()
	if *follow && ctx.Err() != nil {
		// Interrupted, or --timeout is up: the stream was followed as long as asked.
		if !g.json() {
			t.done()
		}
		return nil
	}
	if err != nil {
		return g.eventsErr(err, last)
	}
	if *follow {
		return &exitError{code: 2, err: errors.New("the server ended the stream" + resumeHint(last))}
	}
	if !g.json() {
		t.done()
	}
	return nil
}

// resumeAfter finds the cursor an out_of_range refusal names.
var resumeAfter = regexp.MustCompile(`resume after index (\d+) seq (\d+)`)

// eventsErr is callErr, with the --after that continues: the one an
// out_of_range refusal names, else the last event printed.
func (g *globals) eventsErr(err error, last *capstanv1.EventCursor) error {
	e := g.callErr(err)
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() == connect.CodeOutOfRange {
		if m := resumeAfter.FindStringSubmatch(ce.Message()); m != nil {
			return &exitError{code: 1, err: fmt.Errorf("%v (that is --after %s:%s)", e, m[1], m[2])}
		}
		return e
	}
	if hint := resumeHint(last); hint != "" {
		var ee *exitError
		if errors.As(e, &ee) {
			return &exitError{code: ee.code, err: fmt.Errorf("%v%s", ee.err, hint)}
		}
	}
	return e
}

func resumeHint(last *capstanv1.EventCursor) string {
	if last == nil {
		return ""
	}
	return fmt.Sprintf(" (continue after the last event printed with --after %s)", cursorString(last))
}

// eventDetails is an event's key fields as key=value words; -o json has all.
func eventDetails(ev *capstanv1.Event) string {
	var w []string
	add := func(k, v string) {
		if v != "" {
			w = append(w, k+"="+v)
		}
	}
	add("entitlement", ev.Entitlement)
	if m := ev.Meter; m != nil {
		add("value", m.Old+"->"+m.Value)
		add("limit", m.Limit)
	}
	add("remaining", ev.Remaining)
	add("overage", ev.Overage)
	add("grants", ev.GrantValueApplied)
	add("invalid", ev.InvalidValue)
	add("price", ev.PriceDiff)
	add("overage_price", ev.OveragePrice)
	capID := ev.CapId
	if cp := ev.Cap; cp != nil {
		if capID == "" {
			capID = cp.Id
		}
		add("cap", fmt.Sprintf("%s(%s/%s)", capID, cp.MeterValue, cp.Value))
		add("requested", cp.Requested)
	} else {
		add("cap", capID)
	}
	if gv := ev.Governor; gv != nil {
		add("governor", gv.Tokens+"/"+gv.Capacity)
		add("requested", gv.Requested)
	}
	add("topup", ev.Topup)
	if ev.PreviousPlan != "" || ev.NewPlan != "" {
		add("plan", ev.PreviousPlan+"->"+ev.NewPlan)
	}
	add("caller", ev.Caller)
	add("notification", ev.Notification)
	return strings.Join(w, " ")
}
