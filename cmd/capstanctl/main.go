// Command capstanctl operates a Capstan cluster and tests policies.
//
// Usage follows etcdctl and consul: nouns, then verbs (`capstanctl policy test DIR`).
// Output is a table by default and JSON with -o json; the exit code is 0 on success,
// 1 when a check failed (a conformance case, a denied decision asked for with
// --fail-denied), and 2 on usage or connection errors.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// globals are the flags every command accepts before the noun.
type globals struct {
	server string
	apiKey string
	output string
	stdout io.Writer
	stderr io.Writer
}

// command is one noun-verb pair.
type command struct {
	summary string
	usage   string // arguments after the verb
	run     func(g *globals, args []string) error
}

// commands maps noun -> verb -> command. Commands register themselves in init().
var commands = map[string]map[string]*command{}

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
	g := &globals{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("capstanctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&g.server, "server", envOr("CAPSTAN_SERVER", "http://127.0.0.1:7070"), "server URL (env CAPSTAN_SERVER)")
	fs.StringVar(&g.apiKey, "api-key", os.Getenv("CAPSTAN_API_KEY"), "API key (env CAPSTAN_API_KEY)")
	fs.StringVar(&g.output, "o", "table", "output format: table or json")
	fs.Usage = func() { printUsage(stderr, fs) }
	if err := fs.Parse(argv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if g.output != "table" && g.output != "json" {
		fmt.Fprintf(stderr, "capstanctl: -o must be table or json, got %q\n", g.output)
		return 2
	}
	args := fs.Args()
	if len(args) == 0 || args[0] == "help" {
		printUsage(stderr, fs)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	verbs, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "capstanctl: unknown command %q (see capstanctl help)\n", args[0])
		return 2
	}
	if len(args) < 2 || args[1] == "help" || args[1] == "-h" || args[1] == "--help" {
		printNounUsage(stderr, args[0], verbs)
		if len(args) < 2 {
			return 2
		}
		return 0
	}
	cmd, ok := verbs[args[1]]
	if !ok {
		fmt.Fprintf(stderr, "capstanctl %s: unknown verb %q\n", args[0], args[1])
		printNounUsage(stderr, args[0], verbs)
		return 2
	}
	if err := cmd.run(g, args[2:]); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if !errors.Is(ee.err, flag.ErrHelp) {
				fmt.Fprintf(stderr, "capstanctl %s %s: %v\n", args[0], args[1], ee.err)
			}
			if errors.Is(ee.err, flag.ErrHelp) {
				return 0
			}
			return ee.code
		}
		fmt.Fprintf(stderr, "capstanctl %s %s: %v\n", args[0], args[1], err)
		return 2
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "capstanctl — operate a Capstan cluster and test policies")
	fmt.Fprintln(w, "\nUsage: capstanctl [global flags] <command> <verb> [args]\n\nCommands:")
	nouns := make([]string, 0, len(commands))
	for n := range commands {
		nouns = append(nouns, n)
	}
	sort.Strings(nouns)
	for _, n := range nouns {
		verbs := make([]string, 0, len(commands[n]))
		for v := range commands[n] {
			verbs = append(verbs, v)
		}
		sort.Strings(verbs)
		fmt.Fprintf(w, "  %-10s %s\n", n, strings.Join(verbs, ", "))
	}
	fmt.Fprintln(w, "\nGlobal flags:")
	fs.PrintDefaults()
	fmt.Fprintln(w, "\nRun `capstanctl <command> help` for a command's verbs.")
}

func printNounUsage(w io.Writer, noun string, verbs map[string]*command) {
	names := make([]string, 0, len(verbs))
	for v := range verbs {
		names = append(names, v)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "Usage: capstanctl %s <verb>\n\nVerbs:\n", noun)
	for _, v := range names {
		c := verbs[v]
		fmt.Fprintf(w, "  %-28s %s\n", v+" "+c.usage, c.summary)
	}
}

// subFlags is a FlagSet for a verb, printing its own usage.
func subFlags(g *globals, noun, verb string) *flag.FlagSet {
	fs := flag.NewFlagSet(noun+" "+verb, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	c := commands[noun][verb]
	fs.Usage = func() {
		fmt.Fprintf(g.stderr, "Usage: capstanctl %s %s %s\n\n%s\n", noun, verb, c.usage, c.summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses a verb's flags, turning -h into a clean exit.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: 0, err: flag.ErrHelp}
		}
		return &exitError{code: 2, err: err}
	}
	return nil
}
