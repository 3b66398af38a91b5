// Command capstanctl operates a Capstan cluster and tests policies.
//
// Usage follows etcdctl and consul: nouns, then verbs (`capstanctl shards list`,
// `capstanctl policy test DIR`); a few everyday calls are single words
// (`capstanctl status`, `capstanctl allow CUSTOMER ENTITLEMENT 100`). Output is
// a table by default and, with -o json, the API's response message as protojson.
//
// Exit codes scripts can trust:
//
//	0  success (a denied decision is a success unless --fail-denied)
//	1  the server refused the request (invalid argument, not found, failed
//	   precondition, permission denied), or a check failed (a conformance case,
//	   an invalid policy, a denied decision with --fail-denied)
//	2  usage errors, and calls that got no usable answer (connection refused,
//	   unavailable, timeout, missing or invalid API key, internal error)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// globals are the flags every command accepts, before the command or after
// its verb.
type globals struct {
	server  serverFlag
	apiKey  string
	output  string
	timeout time.Duration
	// timeoutSet: --timeout was given before the command (a verb's own
	// FlagSet knows whether it was given after it).
	timeoutSet bool
	stdout     io.Writer
	stderr     io.Writer

	api *api // built on first use by g.client()
}

// serverFlag is --server; it records whether the command line named one, so
// `policy test` knows it was asked to run remotely.
type serverFlag struct {
	url string
	set bool
}

func (s *serverFlag) String() string     { return s.url }
func (s *serverFlag) Set(v string) error { s.url, s.set = v, true; return nil }

// command is one noun-verb pair, or a single-word command (verb "").
type command struct {
	group   string // section of the top-level help
	summary string
	usage   string // arguments after the verb
	about   string // longer help, printed by --help
	run     func(g *globals, args []string) error
}

// commands maps noun -> verb -> command. Commands register themselves in init().
var commands = map[string]map[string]*command{}

// groups orders the sections of the top-level help.
var groups = []string{"cluster", "snapshots", "policy", "customers", "limiter", "events", "other"}

func register(noun, verb string, c *command) {
	if commands[noun] == nil {
		commands[noun] = map[string]*command{}
	}
	commands[noun][verb] = c
}

// exitError carries an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func failed(format string, args ...any) error {
	return &exitError{code: 1, err: fmt.Errorf(format, args...)}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr, output: "table", timeout: 30 * time.Second,
		apiKey: os.Getenv("CAPSTAN_API_KEY")}
	g.server.url = envOr("CAPSTAN_SERVER", "http://127.0.0.1:7070")
	fs := flag.NewFlagSet("capstanctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.register(fs)
	fs.Usage = func() {} // -h is answered below; errors are printed by fs
	if err := fs.Parse(argv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, fs)
			return 0
		}
		fmt.Fprintln(stderr, "see capstanctl help")
		return 2
	}
	g.timeoutSet = flagSet(fs, "timeout")
	args := fs.Args()
	if len(args) == 0 {
		printUsage(stderr, fs)
		return 2
	}
	if args[0] == "help" {
		return help(g, fs, args[1:])
	}
	noun := args[0]
	verbs, ok := commands[noun]
	if !ok {
		fmt.Fprintf(stderr, "capstanctl: unknown command %q (see capstanctl help)\n", noun)
		return 2
	}
	name, verb, rest := noun, "", args[1:]
	if _, single := verbs[""]; !single {
		if len(rest) == 0 {
			printNounUsage(stderr, noun)
			return 2
		}
		if isHelp(rest[0]) {
			printNounUsage(stdout, noun)
			return 0
		}
		verb, rest = rest[0], rest[1:]
		name += " " + verb
		if _, ok := verbs[verb]; !ok {
			fmt.Fprintf(stderr, "capstanctl %s: unknown verb %q\n\n", noun, verb)
			printNounUsage(stderr, noun)
			return 2
		}
	}
	err := verbs[verb].run(g, rest)
	if err == nil {
		return 0
	}
	code := 2
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "capstanctl %s: %v\n", name, err)
	return code
}

func isHelp(s string) bool { return s == "help" || s == "-h" || s == "-help" || s == "--help" }

// register adds the global flags to fs (the top level's, or a verb's), with
// the values so far as defaults.
func (g *globals) register(fs *flag.FlagSet) {
	fs.Var(&g.server, "server", "server `URL` (env CAPSTAN_SERVER)")
	fs.StringVar(&g.apiKey, "api-key", g.apiKey, "API `key`, sent as 'Authorization: Bearer <key>' (env CAPSTAN_API_KEY)")
	fs.Lookup("api-key").DefValue = "" // never print a key in help
	fs.StringVar(&g.output, "o", g.output, "output: table or json (the API's response message as protojson)")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "deadline of each call to the server")
}

var globalFlags = map[string]bool{"server": true, "api-key": true, "o": true, "timeout": true}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// help answers `capstanctl help [NOUN [VERB]]`.
func help(g *globals, fs *flag.FlagSet, args []string) int {
	if len(args) == 0 {
		fs.SetOutput(g.stdout)
		printUsage(g.stdout, fs)
		return 0
	}
	verbs, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(g.stderr, "capstanctl help: unknown command %q\n", args[0])
		return 2
	}
	// A verb's flags are defined where it runs, so its --help prints them.
	if c, single := verbs[""]; single {
		_ = c.run(g, []string{"--help"})
		return 0
	}
	if len(args) == 1 {
		printNounUsage(g.stdout, args[0])
		return 0
	}
	c, ok := verbs[args[1]]
	if !ok {
		fmt.Fprintf(g.stderr, "capstanctl help: unknown verb %q of %s\n", args[1], args[0])
		return 2
	}
	_ = c.run(g, []string{"--help"})
	return 0
}

// line is one command in a listing: "shards list" or "allow CUSTOMER ...".
func line(noun, verb string, c *command) string {
	s := noun
	if verb != "" {
		s += " " + verb
	}
	if c.usage != "" {
		s += " " + c.usage
	}
	return s
}

func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `capstanctl — operate a Capstan cluster and test policies

Usage: capstanctl [global flags] <command> [<verb>] [args] [flags]
`)
	byGroup := map[string][][2]string{}
	for noun, verbs := range commands {
		for verb, c := range verbs {
			byGroup[c.group] = append(byGroup[c.group], [2]string{strings.TrimSpace(noun + " " + verb), c.summary})
		}
	}
	for _, grp := range groups {
		cmds := byGroup[grp]
		if len(cmds) == 0 {
			continue
		}
		sort.Slice(cmds, func(i, j int) bool { return cmds[i][0] < cmds[j][0] })
		fmt.Fprintf(w, "\n%s%s:\n", strings.ToUpper(grp[:1]), grp[1:])
		for _, c := range cmds {
			printLine(w, c[0], c[1])
		}
	}
	fmt.Fprintln(w, "\nGlobal flags (also accepted after the verb):")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, `
Exit codes:
  0  success; a denied allow/check is a success unless --fail-denied
  1  the server refused the request (invalid_argument, not_found, failed_precondition,
     permission_denied, ...) or a check failed (a failing case, an invalid policy, a
     denied decision with --fail-denied)
  2  usage error, or no usable answer (connection refused, unavailable, deadline
     exceeded, unauthenticated, internal)

Run 'capstanctl help <command>' or 'capstanctl <command> <verb> --help' for details.
`)
}

// printLine prints a command and its summary, the summary on its own line
// when the command is long.
func printLine(w io.Writer, cmd, summary string) {
	if len(cmd) <= 20 {
		fmt.Fprintf(w, "  %-20s %s\n", cmd, summary)
		return
	}
	fmt.Fprintf(w, "  %s\n  %-20s %s\n", cmd, "", summary)
}

func printNounUsage(w io.Writer, noun string) {
	verbs := commands[noun]
	names := make([]string, 0, len(verbs))
	for v := range verbs {
		names = append(names, v)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "Usage: capstanctl %s <verb> [args] [flags]\n\nVerbs:\n", noun)
	for _, v := range names {
		printLine(w, line(noun, v, verbs[v])[len(noun)+1:], verbs[v].summary)
	}
	fmt.Fprintf(w, "\nRun 'capstanctl %s <verb> --help' for a verb's flags.\n", noun)
}

func printCommandUsage(w io.Writer, name string, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: capstanctl %s\n\n%s.\n", strings.TrimSpace(name+" "+c.usage), upperFirst(c.summary))
	if c.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.about))
	}
	// The verb's own flags, then a pointer to the global ones.
	own := flag.NewFlagSet(name, flag.ContinueOnError)
	own.SetOutput(w)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if globalFlags[f.Name] {
			return
		}
		own.Var(f.Value, f.Name, f.Usage)
		own.Lookup(f.Name).DefValue = f.DefValue
		n++
	})
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		own.PrintDefaults()
	}
	fmt.Fprintln(w, "\nGlobal flags: --server URL, --api-key KEY, -o table|json, --timeout D (see capstanctl help).")
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
