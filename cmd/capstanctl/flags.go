package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// subFlags is the FlagSet of a verb ("" for a single-word command): its own
// flags are added by the caller; the global ones are already there, so
// `capstanctl customer get ID -o json` works.
func subFlags(g *globals, noun, verb string) *flag.FlagSet {
	return subFlagsFor(g, noun, verb)
}

func subFlagsFor(g *globals, noun, verb string) *flag.FlagSet {
	name := noun
	if verb != "" {
		name += " " + verb
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by run
	g.register(fs)
	fs.Usage = func() {} // errors are one line; --help is answered by parseArgs
	return fs
}

// verbHelp prints the --help of the verb fs belongs to.
func verbHelp(g *globals, fs *flag.FlagSet) {
	noun, verb, _ := strings.Cut(fs.Name(), " ")
	printCommandUsage(g.stdout, fs.Name(), commands[noun][verb], fs)
}

// parseArgs parses a verb's flags wherever they appear among its arguments
// and returns the positional ones. A negative number ("-5") is an argument,
// not a flag; after "--" everything is an argument.
func parseArgs(g *globals, fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for i := 0; i < len(args); {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' || isNumber(a) {
			pos = append(pos, a)
			i++
			continue
		}
		// One flag, with its value when it takes one and it is not inline.
		name, _, inline := strings.Cut(strings.TrimLeft(a, "-"), "=")
		n := 1
		if f := fs.Lookup(name); f != nil && !inline && !isBoolFlag(f) && i+1 < len(args) {
			n = 2
		}
		if err := fs.Parse(args[i : i+n]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				verbHelp(g, fs)
				return nil, &exitError{code: 0, err: flag.ErrHelp}
			}
			return nil, usageErr("%v (see --help)", err)
		}
		i += n
	}
	if g.output != "table" && g.output != "json" {
		return nil, usageErr("-o must be table or json, got %q", g.output)
	}
	return pos, nil
}

// parseN is parseArgs for a verb that takes between min and max positional
// arguments (max < 0: no limit).
func parseN(g *globals, fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	pos, err := parseArgs(g, fs, args)
	if err != nil {
		return nil, err
	}
	switch {
	case len(pos) < min:
		return nil, usageErr("missing arguments; usage: capstanctl %s", usageLine(fs))
	case max >= 0 && len(pos) > max:
		return nil, usageErr("unexpected argument %q; usage: capstanctl %s", pos[max], usageLine(fs))
	}
	return pos, nil
}

// usageLine is "noun verb ARGS" for the verb fs belongs to.
func usageLine(fs *flag.FlagSet) string {
	noun, verb, _ := strings.Cut(fs.Name(), " ")
	if c := commands[noun][verb]; c != nil && c.usage != "" {
		return fs.Name() + " " + c.usage
	}
	return fs.Name()
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// flagSet says whether the command line gave flag name to fs.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// routingKeyUsage is --routing-key on every customer-scoped verb.
const routingKeyUsage = "`key` that picks the customer's shard (default: the customer id); customers that reference each other share one"

// routingKey adds --routing-key to a customer-scoped verb.
func routingKey(fs *flag.FlagSet) *string { return fs.String("routing-key", "", routingKeyUsage) }

// listFlag is a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// mapFlag is a repeatable key=value flag.
type mapFlag map[string]string

func (m mapFlag) String() string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (m mapFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", v)
	}
	m[k] = val
	return nil
}

// shardFlag is --shard: a shard number, and whether one was given (0 is a
// shard, so the zero value cannot mean "not given").
type shardFlag struct {
	n   uint32
	set bool
}

func (f *shardFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatUint(uint64(f.n), 10)
}

func (f *shardFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("want a shard number (0, 1, ...), got %q", s)
	}
	f.n, f.set = uint32(v), true
	return nil
}

// optBool is a boolean flag that knows whether it was given.
type optBool struct{ v *bool }

func (o *optBool) IsBoolFlag() bool { return true }
func (o *optBool) String() string {
	if o == nil || o.v == nil {
		return ""
	}
	return strconv.FormatBool(*o.v)
}

func (o *optBool) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	o.v = &b
	return nil
}

// timeFlag is an instant: RFC 3339, or a Go duration from now ("720h").
type timeFlag struct{ t *timestamppb.Timestamp }

func (f *timeFlag) String() string {
	if f == nil || f.t == nil {
		return ""
	}
	return f.t.AsTime().Format(time.RFC3339)
}

func (f *timeFlag) Set(s string) error {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		f.t = timestamppb.New(t)
		return nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		f.t = timestamppb.New(time.Now().Add(d).UTC().Truncate(time.Second))
		return nil
	}
	return fmt.Errorf("want an RFC 3339 instant (2026-04-01T00:00:00Z) or a duration from now (720h), got %q", s)
}

// cursorFlag is an event cursor, INDEX:SEQ as `capstanctl events` prints it.
type cursorFlag struct{ c *capstanv1.EventCursor }

func (f *cursorFlag) String() string {
	if f == nil || f.c == nil {
		return ""
	}
	return cursorString(f.c)
}

func (f *cursorFlag) Set(s string) error {
	i, q, ok := strings.Cut(s, ":")
	index, err := strconv.ParseUint(i, 10, 64)
	seq, err2 := strconv.ParseUint(q, 10, 32)
	if !ok || err != nil || err2 != nil {
		return fmt.Errorf("want a cursor INDEX:SEQ as capstanctl events prints it (e.g. 42:0), got %q", s)
	}
	f.c = &capstanv1.EventCursor{Index: index, Seq: uint32(seq)}
	return nil
}

func cursorString(c *capstanv1.EventCursor) string {
	return strconv.FormatUint(c.GetIndex(), 10) + ":" + strconv.FormatUint(uint64(c.GetSeq()), 10)
}
