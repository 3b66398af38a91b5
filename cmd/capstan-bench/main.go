// Command capstan-bench measures Capstan's decision latency under an open-loop
// arrival rate, side by side with the engine in-process and Redis and etcd
// baselines, and writes a markdown table, a JSON report and an SVG plot.
//
//	capstan-bench -suite short -out bench/results        (what `make bench` runs)
//	capstan-bench -suite full -targets single-node,redis
//	capstan-bench -targets in-process -workloads hot -rate 20000 -duration 10s -sweep ""
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/capstanhq/capstan/bench"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "capstan-bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("capstan-bench", flag.ContinueOnError)
	var (
		suite     = fs.String("suite", "short", "suite: short (make bench, under 3 minutes) or full")
		out       = fs.String("out", "bench/results", "directory for the results (a folder per run plus latest-<suite>.{md,json,svg})")
		targets   = fs.String("targets", "", "comma-separated targets (default all: "+strings.Join(bench.TargetNames, ",")+")")
		workloads = fs.String("workloads", "", "comma-separated fixed-rate workloads (uniform, zipf, hot, reserve-settle, caps; default all; \"none\" for none)")
		rate      = fs.Float64("rate", 0, "offered rate for the fixed-rate workloads (requests/s; default from the suite)")
		duration  = fs.Duration("duration", 0, "length of each fixed-rate run (default from the suite)")
		sweep     = fs.String("sweep", "default", "comma-separated sweep rates (e.g. 1000,5000,20000), \"\" for no sweep")
		sweepW    = fs.String("sweep-workload", "uniform", "workload of the rate sweep")
		step      = fs.Duration("sweep-step", 0, "length of each sweep step (default from the suite)")
		bound     = fs.Duration("p99", 0, "p99 bound that defines the knee (default 5ms)")
		customers = fs.Int("customers", 0, "customers whose caps are never reached (default from the suite)")
		capped    = fs.Int("capped", 0, "customers with the seed's $15/$20 caps (default from the suite)")
		arrival   = fs.String("arrival", "poisson", "arrival process: poisson or uniform")
		workers   = fs.Int("workers", 0, "worker pool size for network targets (default 256)")
		seed      = fs.Int64("seed", 1, "seed for the schedules")
		capstan   = fs.String("capstan", "", "capstan binary (default: beside capstan-bench, else on PATH)")
		shards    = fs.Int("shards", 0, "shards (raft groups) of the capstan servers (0: the server's default)")
		regions   = fs.String("regions", "us-east,eu-west,ap-south", "regions of the 3-node cluster's nodes (clients are spread evenly over them)")
		latency   = fs.String("region-latency", "us-east<->eu-west=40ms,us-east<->ap-south=90ms,eu-west<->ap-south=60ms",
			"simulated one-way delay between regions for the 3-node-regions target, faultnet syntax, passed to capstan serve --region-latency; \"\" for none")
		redisFsync = fs.String("redis-fsync", "everysec", "Redis appendfsync: everysec, always or no")
		pprofNodes = fs.Bool("pprof", false, "serve /debug/pprof on the capstan nodes and save a CPU profile of the first node over the uniform run")
		keep       = fs.Bool("keep-data", false, "keep the capstan nodes' data directories and logs")
		cpuprofile = fs.String("cpuprofile", "", "write the harness's own CPU profile here")
		quiet      = fs.Bool("q", false, "no progress lines")
		nice       = fs.Int("nice", -10, "nice value for the harness and the servers it starts (below 0 needs root; 0 leaves it), so other work on the machine disturbs the measurement less")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: capstan-bench [flags]\n\nOpen-loop load against Capstan and baselines; see bench/README.md.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg, err := bench.Suites(*suite)
	if err != nil {
		return err
	}
	if *targets != "" {
		cfg.Targets = splitList(*targets)
	}
	if *workloads != "" {
		cfg.Workloads = nil
		for _, name := range splitList(*workloads) {
			if name == "none" {
				continue
			}
			w, ok := bench.Workloads[name]
			if !ok {
				return fmt.Errorf("unknown workload %q", name)
			}
			cfg.Workloads = append(cfg.Workloads, w)
		}
	}
	w, ok := bench.Workloads[*sweepW]
	if !ok {
		return fmt.Errorf("unknown sweep workload %q", *sweepW)
	}
	cfg.SweepWorkload = w
	if *sweep != "default" {
		cfg.SweepRates = nil
		for _, r := range splitList(*sweep) {
			v, err := strconv.ParseFloat(r, 64)
			if err != nil || v <= 0 {
				return fmt.Errorf("-sweep: bad rate %q", r)
			}
			cfg.SweepRates = append(cfg.SweepRates, v)
		}
	}
	setIf(&cfg.FixedRate, *rate)
	setIf(&cfg.FixedDuration, *duration)
	setIf(&cfg.SweepStep, *step)
	setIf(&cfg.P99Bound, *bound)
	setIf(&cfg.Customers, *customers)
	setIf(&cfg.Capped, *capped)
	setIf(&cfg.Workers, *workers)
	cfg.Arrival, cfg.Seed, cfg.RedisFsync = *arrival, *seed, *redisFsync
	if *latency != "" {
		if _, err := bench.ParseRegionLatency(*latency); err != nil {
			return err
		}
	}
	cfg.Server = bench.ServerConfig{Bin: *capstan, Shards: *shards, Regions: splitList(*regions), Latency: *latency,
		Timeout: cfg.Timeout, Pprof: *pprofNodes, KeepData: *keep}
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	if *nice != 0 {
		if err := bench.SetNice(*nice); err != nil {
			fmt.Fprintf(os.Stderr, "capstan-bench: nice %d: %v (running at the default priority)\n", *nice, err)
		} else {
			cfg.Nice = *nice
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	begun := time.Now()
	rep, err := bench.RunSuite(ctx, cfg)
	if rep == nil {
		return err
	}
	dir, werr := rep.Write(*out)
	if werr != nil {
		return errors.Join(err, werr)
	}
	fmt.Print(rep.Markdown())
	fmt.Fprintf(os.Stderr, "\ncapstan-bench: %s suite in %s; results in %s (and %s/latest-%s.{md,json,svg})\n",
		cfg.Name, time.Since(begun).Round(time.Second), dir, *out, cfg.Name)
	return err
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func setIf[T comparable](dst *T, v T) {
	var zero T
	if v != zero {
		*dst = v
	}
}
