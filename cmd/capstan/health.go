package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// healthCmd asks a node's gRPC health check (over the Connect protocol, JSON)
// whether it serves: exit 0 on SERVING, 1 otherwise. It is the Docker exec
// healthcheck, so it needs nothing but the binary.
func healthCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("capstan health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", defaultHealthAddr(os.Getenv), "the node's API address (host:port, or an http:// or https:// URL)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	insecure := fs.Bool("insecure", false, "with https, do not verify the server's certificate")
	quiet := fs.Bool("quiet", false, "print nothing; only the exit code tells")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: capstan health [flags]\n\nExits 0 when the node's gRPC health check answers SERVING (the node has joined\nand can route), else 1.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: *insecure}} //nolint:gosec // opt-in, for self-signed dev certs
	client := &http.Client{Transport: tr, Timeout: *timeout}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	status, err := checkHealth(ctx, client, strings.TrimRight(base, "/"))
	if !*quiet {
		if err != nil {
			fmt.Fprintf(stdout, "%s: %v\n", *addr, err)
		} else {
			fmt.Fprintf(stdout, "%s: %s\n", *addr, status)
		}
	}
	if err != nil {
		return err
	}
	if status != "SERVING" {
		return errNotServing
	}
	return nil
}

var errNotServing = errors.New("not serving")

// checkHealth answers the node's overall status: SERVING, NOT_SERVING, ...
func checkHealth(ctx context.Context, client *http.Client, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("health check: HTTP %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var out struct{ Status string }
	if err := json.Unmarshal(b, &out); err != nil {
		return "", fmt.Errorf("health check: %w", err)
	}
	return strings.TrimPrefix(out.Status, "SERVING_STATUS_"), nil
}

// defaultHealthAddr is CAPSTAN_LISTEN with a wildcard host made loopback (the
// healthcheck runs inside the node's container), else 127.0.0.1:7070.
func defaultHealthAddr(getenv func(string) string) string {
	l := getenv("CAPSTAN_LISTEN")
	if l == "" {
		return "127.0.0.1:7070"
	}
	host, port, err := net.SplitHostPort(l)
	if err != nil {
		return l
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
