// Command capstan runs a Capstan node.
//
//	capstan serve [flags]   run a node (flags, CAPSTAN_* environment or a config file)
//	capstan dev [flags]     run a single-node development server on ./data
//	capstan health [flags]  exit 0 when a node's health check answers SERVING
//	capstan version         print the build version
//
// Exit codes: 0 after a clean shutdown, 1 when the server failed, 2 on usage
// errors.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/capstanhq/capstan/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `capstan runs a Capstan usage & spend-control node.

Usage:
  capstan serve [flags]    run a node; every flag can also come from CAPSTAN_<FLAG>
                           (e.g. CAPSTAN_DATA_DIR) or a YAML config file (--config)
  capstan dev [flags]      run a single-node development server on ./data with a
                           sample policy and a generated admin API key
  capstan health [--addr 127.0.0.1:7070]
                           exit 0 when the node's health check answers SERVING, else 1
  capstan version          print the build version

Run 'capstan serve -h' or 'capstan dev -h' for their flags.
`

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCmd(args[1:], stdout, stderr)
	case "dev":
		err = devCmd(args[1:], stdout, stderr)
	case "health":
		err = healthCmd(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "capstan %s (%s %s/%s)\n", version.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "capstan: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errNotServing):
		return 1
	case isUsage(err):
		fmt.Fprintf(stderr, "capstan %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "capstan %s: %v\n", args[0], err)
		return 1
	}
}

// usageError marks bad flags, environment or config.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}
