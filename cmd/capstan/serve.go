package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/capstanhq/capstan/cluster"
	"github.com/capstanhq/capstan/internal/faultnet"
	"github.com/capstanhq/capstan/internal/version"
	"github.com/capstanhq/capstan/rpc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func serveDefaults() options {
	host, _ := os.Hostname()
	if host == "" {
		host = "node1"
	}
	return options{
		nodeID:   host,
		dataDir:  "data",
		listen:   "127.0.0.1:7070",
		raftAddr: "127.0.0.1:7071",
		region:   "local",
		shards:   0, // the cluster's default for a new data dir, else as bootstrapped
	}
}

func serveCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("capstan serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	o.flags(fs, serveDefaults())
	setUsage(fs, "Runs a Capstan node: the API (Connect, gRPC and gRPC-Web; JSON or protobuf) on --listen,\n"+
		"raft between nodes on --raft-addr. Give --bootstrap for a standalone node, or --gossip-addr with\n"+
		"--bootstrap-expect (first start) and --join for a cluster (see docs/cluster-contract.md).")
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
	keys, err := rpc.LoadKeys(o.apiKeysFile, os.Getenv("CAPSTAN_API_KEYS"))
	if err != nil {
		return usageError{err}
	}
	var policy, format string
	if o.policyFile != "" {
		b, err := os.ReadFile(o.policyFile)
		if err != nil {
			return usageError{fmt.Errorf("--policy: %w", err)}
		}
		policy, format = string(b), formatOf(o.policyFile, o.policyFormat)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serveNode(ctx, o, keys, policy, format, logger, nil)
}

// serveNode opens the node, serves the API until ctx ends, then shuts down:
// the HTTP server first (in-flight requests finish), then the node. ready,
// when not nil, is called with the API's base URL once it is listening.
func serveNode(ctx context.Context, o options, keys *rpc.Keys, policy, format string, logger *slog.Logger, ready func(baseURL string)) error {
	if o.noAuth {
		keys = nil
		logger.Warn("serving WITHOUT authentication (--no-auth): every caller is an admin")
	} else if keys.Len() == 0 {
		return usageError{errors.New("no API keys: give --api-keys-file or CAPSTAN_API_KEYS=\"key:role,...\" (or --no-auth for a local experiment)")}
	}
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Listen before opening the node so a busy port fails fast.
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()

	cfg := cluster.Config{
		NodeID: o.nodeID, DataDir: o.dataDir, RaftAddr: o.raftAddr, AdvertiseRaft: o.advertiseRaft, Region: o.region,
		Shards: o.shards, Bootstrap: o.bootstrap, Policy: policy, PolicyFormat: format, Logger: logger, Queries: rpc.Queries(),
	}
	if o.clustered() {
		var rules *faultnet.Rules
		if o.regionLatency != "" {
			rules = faultnet.NewRules()
			if err := rules.Set(o.regionLatency); err != nil {
				return usageError{fmt.Errorf("--region-latency: %w", err)}
			}
			logger.Warn("simulated region latency on node-to-node links", "spec", rules.String())
		}
		if o.unsafeStaleAllow {
			logger.Warn("UNSAFE: --unsafe-stale-allow answers Allow from follower replicas without raft; caps are NOT enforced across nodes")
		}
		api := o.apiAddr()
		if _, port, _ := net.SplitHostPort(api); port == "0" {
			api = ln.Addr().String()
		}
		// Forwarded calls arrive on the API port with faultnet's preamble.
		ln = faultnet.NewListener(ln, rules, faultnet.Endpoint{Node: o.nodeID, Region: o.region}, nil)
		cfg.GossipAddr, cfg.AdvertiseGossip, cfg.Join = o.gossipAddr, o.advertiseGossip, o.joinList()
		cfg.BootstrapExpect, cfg.Replicas, cfg.APIAddr, cfg.ClusterKey = o.bootstrapExpect, o.replicas, api, o.clusterKey
		cfg.Faults, cfg.UnsafeStaleAllow = rules, o.unsafeStaleAllow
		if o.tlsCert != "" {
			if cfg.ForwardTLS, err = forwardTLS(o.tlsCert); err != nil {
				return err
			}
		}
	}
	node, err := cluster.Open(cfg)
	if err != nil {
		return fmt.Errorf("open node: %w", err)
	}
	closeNode := func() {
		if err := node.Close(); err != nil {
			logger.Error("close node", "err", err)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux, err := rpc.NewMux(rpc.Config{
		Backend: node, Keys: keys, Logger: logger, Registry: reg, Version: version.Version,
	})
	if err != nil {
		closeNode()
		return err
	}
	if o.clustered() {
		mux.Handle(node.InternalHandler())
	}
	if o.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}

	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	scheme := "http"
	if o.tlsCert != "" {
		srv.Protocols.SetHTTP2(true)
		scheme = "https"
	} else {
		// Plain-text HTTP/2 (h2c) for gRPC clients without TLS.
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	baseURL := scheme + "://" + ln.Addr().String()

	errc := make(chan error, 1)
	go func() {
		var err error
		if o.tlsCert != "" {
			err = srv.ServeTLS(ln, o.tlsCert, o.tlsKey)
		} else {
			err = srv.Serve(ln)
		}
		errc <- err
	}()
	logger.Info("capstan serving", "url", baseURL, "node_id", o.nodeID, "region", o.region,
		"raft_addr", node.RaftAddr(), "shards", node.Shards(), "data_dir", o.dataDir, "version", version.Version,
		"tls", o.tlsCert != "", "auth", keys != nil, "pprof", o.pprof, "cluster", o.clustered())
	if ready != nil {
		ready(baseURL)
	}

	var serveErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case serveErr = <-errc:
		logger.Error("http server stopped", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	// Leadership moves away while this node still answers (forwarding), so
	// callers see a leader change, not an outage.
	node.Drain(sctx)
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("http shutdown", "err", err)
		_ = srv.Close()
	}
	closeNode()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	logger.Info("stopped")
	return nil
}

// forwardTLS trusts the system roots plus the certificates in certFile (nodes
// of one cluster often share a certificate) for calls to peers' APIs.
func forwardTLS(certFile string) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert: %w", err)
	}
	pool.AppendCertsFromPEM(b)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level: want debug, info, warn or error, got %q", s)
	}
	return l, nil
}

func newLogger(w io.Writer, o options) *slog.Logger {
	level, _ := parseLevel(o.logLevel)
	hopts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(o.logFormat, "json") {
		return slog.New(slog.NewJSONHandler(w, hopts))
	}
	return slog.New(slog.NewTextHandler(w, hopts))
}
