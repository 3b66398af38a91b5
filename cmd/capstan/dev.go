package main

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/capstanhq/capstan/rpc"
)

// devPolicy is the seed's spend-caps policy plus a default plan.
//
//go:embed devpolicy.stof
var devPolicy string

// devKeyFile holds the dev server's admin key, inside the data dir.
const devKeyFile = "dev-api-key"

func devDefaults() options {
	return options{
		nodeID:    "dev",
		dataDir:   "data",
		listen:    "127.0.0.1:7070",
		raftAddr:  "127.0.0.1:7071",
		region:    "local",
		shards:    4,
		bootstrap: true,
	}
}

func devCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("capstan dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	o.flags(fs, devDefaults())
	setUsage(fs, "Runs a single-node development server on ./data with the seed's sample policy (or --policy)\n"+
		"and an admin API key kept in ./data/"+devKeyFile+", and prints how to call it.")
	if err := parseOptions(fs, args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if err := o.validate(); err != nil {
		return err
	}
	logger := newLogger(stderr, o)
	policy, format := devPolicy, "stof"
	if o.policyFile != "" {
		b, err := os.ReadFile(o.policyFile)
		if err != nil {
			return usageError{fmt.Errorf("--policy: %w", err)}
		}
		policy, format = string(b), formatOf(o.policyFile, o.policyFormat)
	}
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	key, err := devKey(filepath.Join(o.dataDir, devKeyFile))
	if err != nil {
		return err
	}
	keys, err := rpc.LoadKeys(o.apiKeysFile, os.Getenv("CAPSTAN_API_KEYS"))
	if err != nil {
		return usageError{err}
	}
	if err := keys.Add(key, rpc.RoleAdmin); err != nil {
		return fmt.Errorf("%s: %w", devKeyFile, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveNode(ctx, o, keys, policy, format, logger, func(baseURL string) {
		printDevBanner(stdout, baseURL, key, filepath.Join(o.dataDir, devKeyFile))
	})
}

// devKey reads the dev admin key, or makes one and saves it (0600).
func devKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if k := strings.TrimSpace(string(b)); k != "" {
			return k, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("dev api key: %w", err)
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("dev api key: %w", err)
	}
	key := "cap_dev_" + hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("dev api key: %w", err)
	}
	return key, nil
}

func printDevBanner(w io.Writer, baseURL, key, keyPath string) {
	curl := func(procedure, body string) string {
		return fmt.Sprintf("  curl -sS %s/%s \\\n    -H 'Content-Type: application/json' \\\n    -H 'Authorization: Bearer %s' \\\n    -d '%s'\n",
			baseURL, procedure, key, body)
	}
	fmt.Fprintf(w, `
Capstan dev server

  URL:      %s
  API key:  %s   (role admin, saved in %s)
  Policy:   the seed's spend-caps example; plans: free (default), starter

Create a customer, then meter a call:

%s
%s
Reflection is on (grpcurl -plaintext %s list); metrics at %s/metrics.
`, baseURL, key, keyPath,
		curl("capstan.v1.CustomerService/CreateCustomer", `{"id":"cus_123","plan":"starter"}`),
		curl("capstan.v1.LimiterService/Allow", `{"customer":"cus_123","entitlement":"ai_chat","value":"6420"}`),
		strings.TrimPrefix(baseURL, "http://"), baseURL)
}
