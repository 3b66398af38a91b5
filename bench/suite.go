package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SuiteConfig is one harness run: which targets, which workloads at which rate, and
// the sweep that finds each target's knee.
type SuiteConfig struct {
	Name string `json:"name"`
	// Targets to run, in order (see TargetNames).
	Targets []string `json:"targets"`
	// Workloads run once each at FixedRate for FixedDuration on every target.
	Workloads     []Workload    `json:"workloads"`
	FixedRate     float64       `json:"fixed_rate"`
	FixedDuration time.Duration `json:"fixed_duration_ns"`
	// The sweep runs SweepWorkload at rising SweepRates for SweepStep each and stops
	// when the target misses: p99 over P99Bound, throughput under
	// 90% of offered, or over 1% errors, twice in a row. The knee is the highest
	// rate that passed with every lower rate passing (a single miss between passes,
	// a hiccup of a shared machine, keeps the knee at the rate before it).
	SweepWorkload Workload      `json:"sweep_workload"`
	SweepRates    []float64     `json:"sweep_rates"`
	SweepStep     time.Duration `json:"sweep_step_ns"`
	P99Bound      time.Duration `json:"p99_bound_ns"`
	// Warmup is a short unrecorded uniform run before a target's measurements.
	Warmup time.Duration `json:"warmup_ns"`

	Customers int    `json:"customers"` // the open population
	Capped    int    `json:"capped"`    // customers with the seed's caps
	Arrival   string `json:"arrival"`
	Seed      int64  `json:"seed"`
	// Workers is the pool size for network targets; the in-process and null targets
	// use InProcWorkers (the engine is serialised, more workers only contend).
	Workers       int `json:"workers"`
	InProcWorkers int `json:"inproc_workers"`

	Server ServerConfig `json:"server"`
	// RedisFsync is Redis's appendfsync setting.
	RedisFsync string `json:"redis_fsync"`
	// Timeout bounds one request.
	Timeout time.Duration `json:"timeout_ns"`
	// Nice is the nice value the harness runs at (and the servers it starts
	// inherit); 0 when left alone (see SetNice).
	Nice int `json:"nice"`
	// Grace is how long a run may overrun its schedule (see RunConfig.Grace).
	Grace time.Duration `json:"grace_ns"`

	Progress io.Writer `json:"-"`
}

// TargetNames are the targets a suite knows, in report order.
// "3-node-regions" is the 3-node cluster again with Server.Latency injected between
// its nodes' regions; it runs the uniform workload only and reports latency by
// client region.
var TargetNames = []string{"null", "in-process", "single-node", "3-node", "3-node-regions", "redis", "etcd"}

// Suites are the built-in suites: "short" is `make bench` (under three minutes),
// "full" measures longer and sweeps further.
func Suites(name string) (SuiteConfig, error) {
	base := SuiteConfig{
		Name:          name,
		Targets:       TargetNames,
		Workloads:     []Workload{Uniform, Zipf, Hot, ReserveSettle, CapsMix},
		SweepWorkload: Uniform,
		P99Bound:      5 * time.Millisecond,
		Arrival:       ArrivalPoisson,
		Seed:          1,
		Workers:       256,
		InProcWorkers: 2,
		RedisFsync:    "everysec",
		Timeout:       5 * time.Second,
	}
	switch name {
	case "short":
		base.FixedRate = 2000
		base.FixedDuration = 2 * time.Second
		base.SweepRates = []float64{1000, 2000, 5000, 10000, 20000, 30000, 50000, 100000}
		base.SweepStep = 2 * time.Second
		base.Warmup = 500 * time.Millisecond
		base.Grace = time.Second
		base.Customers, base.Capped = 500, 20
	case "full":
		base.FixedRate = 5000
		base.FixedDuration = 15 * time.Second
		base.SweepRates = []float64{1000, 2000, 5000, 10000, 15000, 20000, 30000, 40000, 50000, 75000, 100000, 200000, 500000, 1000000}
		base.SweepStep = 5 * time.Second
		base.Warmup = 2 * time.Second
		base.Customers, base.Capped = 10000, 100
	default:
		return SuiteConfig{}, fmt.Errorf("unknown suite %q (short, full)", name)
	}
	return base, nil
}

// newTarget builds a target by name.
func (c *SuiteConfig) newTarget(name string) (Target, error) {
	switch name {
	case "null":
		return NullTarget{}, nil
	case "in-process":
		return NewInProcess(), nil
	case "single-node":
		cfg := c.Server
		cfg.Latency, cfg.Regions = "", nil
		return NewServer(cfg, 1), nil
	case "3-node":
		cfg := c.Server
		cfg.Latency = ""
		return NewServer(cfg, 3), nil
	case "3-node-regions":
		if c.Server.Latency == "" {
			return nil, fmt.Errorf("target 3-node-regions needs a region latency")
		}
		s := NewServer(c.Server, 3)
		s.name = name
		return s, nil
	case "redis":
		return &Redis{Fsync: c.RedisFsync, Timeout: c.Timeout}, nil
	case "etcd":
		return &Etcd{Timeout: c.Timeout}, nil
	}
	return nil, fmt.Errorf("unknown target %q (%v)", name, TargetNames)
}

// RunSuite runs every target of the suite in turn and returns the report. A target
// that cannot start here is reported as not available; a failure while measuring
// one target is reported on it and the suite goes on to the next.
func RunSuite(ctx context.Context, c SuiteConfig) (*Report, error) {
	rep := newReport(c)
	f := NewFixture(c.Customers, c.Capped)
	for _, name := range c.Targets {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		t, err := c.newTarget(name)
		if err != nil {
			return rep, err
		}
		info := TargetInfo{Name: t.Name(), About: t.Describe(), Regions: t.Regions()}
		begun := time.Now()
		err = c.runTarget(ctx, t, f, rep)
		info.Seconds = time.Since(begun).Seconds()
		switch {
		case errors.Is(err, ErrNotAvailable):
			info.Status = "not available"
			info.Reason = strings.TrimPrefix(err.Error(), ErrNotAvailable.Error()+": ")
		case err != nil:
			info.Status = "failed"
			info.Reason = err.Error()
		default:
			info.Status = "ok"
			info.About = t.Describe() // some targets say more once started
		}
		if c.Progress != nil && err != nil {
			fmt.Fprintf(c.Progress, "[%s] %s: %s\n", name, info.Status, info.Reason)
		}
		rep.Targets = append(rep.Targets, info)
	}
	ranRegions := slices.ContainsFunc(rep.Targets, func(t TargetInfo) bool { return t.Name == "3-node-regions" && t.Status == "ok" })
	if c.Server.Latency != "" && ranRegions {
		rep.Notes = append(rep.Notes, "3-node-regions: one-way delay between the nodes' regions "+c.Server.Latency+
			" (faultnet syntax); nodes in "+strings.Join(c.Server.Regions, ", ")+", clients spread evenly, each calling the node in its own region.")
	}
	rep.finish()
	return rep, nil
}

func (c *SuiteConfig) runTarget(ctx context.Context, t Target, f *Fixture, rep *Report) (err error) {
	progress := func(format string, args ...any) {
		if c.Progress != nil {
			fmt.Fprintf(c.Progress, "[%s] "+format+"\n", append([]any{t.Name()}, args...)...)
		}
	}
	progress("starting")
	defer func() {
		if cerr := t.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if err := t.Start(ctx); err != nil {
		return err
	}
	begun := time.Now()
	if err := t.Setup(ctx, f); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	progress("%d customers set up in %s", len(f.IDs()), time.Since(begun).Round(time.Millisecond))
	if ip, ok := t.(*InProcess); ok {
		rep.EngineClosedLoop = ip.ClosedLoop(time.Second)
		progress("engine closed loop: %.0f allow/s", rep.EngineClosedLoop)
	}
	_, null := t.(NullTarget)
	_, local := t.(*InProcess)
	workers := c.Workers
	if null || local {
		workers = c.InProcWorkers
	}
	run := func(w Workload, rate float64, d time.Duration, seed int64) (*Result, error) {
		s, err := NewSchedule(w, f, rate, d, c.Arrival, len(t.Regions()), seed)
		if err != nil {
			return nil, err
		}
		label := fmt.Sprintf("[%s %s %.0f/s]", t.Name(), w.Name, rate)
		res, err := Run(ctx, t, s, RunConfig{Workers: workers, Progress: c.Progress, Label: label, Grace: c.Grace})
		if err != nil {
			return nil, err
		}
		res.Workload, res.Arrival = w.Name, cmp.Or(c.Arrival, ArrivalPoisson)
		return res, nil
	}
	if c.Warmup > 0 {
		if _, err := run(Uniform, c.FixedRate, c.Warmup, c.Seed+1000); err != nil {
			return fmt.Errorf("warmup: %w", err)
		}
	}
	regional := t.Name() == "3-node-regions"
	for i, w := range c.Workloads {
		if (null || regional) && w.Name != Uniform.Name {
			continue // the generator's cost does not depend on the workload; regions are about distance
		}
		if !t.Supports(w.Kind) {
			rep.Runs = append(rep.Runs, &Result{Target: t.Name(), Workload: w.Name, OfferedRate: c.FixedRate, Skipped: "not supported by this target"})
			continue
		}
		// With -pprof, the server's CPU is profiled over the uniform run.
		var prof []byte
		var profErr error
		profiled := make(chan struct{})
		if p, ok := t.(Profiler); ok && c.Server.Pprof && w.Name == Uniform.Name {
			go func() {
				defer close(profiled)
				prof, profErr = p.CPUProfile(ctx, c.FixedDuration)
			}()
		} else {
			close(profiled)
		}
		res, err := run(w, c.FixedRate, c.FixedDuration, c.Seed+int64(i))
		<-profiled
		if err != nil {
			return fmt.Errorf("%s: %w", w.Name, err)
		}
		rep.Runs = append(rep.Runs, res)
		if profErr != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: no CPU profile: %v", t.Name(), profErr))
		} else if prof != nil {
			rep.addProfile(fmt.Sprintf("%s-%s-%.0f.pprof", t.Name(), w.Name, c.FixedRate), prof)
		}
	}
	if regional || len(c.SweepRates) == 0 {
		return nil
	}
	rates := c.SweepRates
	if null && len(rates) > 2 {
		// The generator alone: a middle rate and the top one are enough to show
		// its floor and its ceiling.
		rates = []float64{rates[len(rates)/2], rates[len(rates)-1]}
	}
	sw := &Sweep{Target: t.Name(), Workload: c.SweepWorkload.Name, BoundMS: ms(c.P99Bound)}
	rep.Sweeps = append(rep.Sweeps, sw)
	misses, missedAny := 0, false
	for i, rate := range rates {
		res, err := run(c.SweepWorkload, rate, c.SweepStep, c.Seed+100+int64(i))
		if err != nil {
			return fmt.Errorf("sweep at %.0f/s: %w", rate, err)
		}
		sw.Steps = append(sw.Steps, res)
		sw.MaxThroughput = max(sw.MaxThroughput, res.Throughput)
		// One miss may be a hiccup of a shared machine; two in a row end the sweep.
		if why := missed(res, c.P99Bound); why != "" {
			misses++
			missedAny = true
			sw.StoppedBecause = fmt.Sprintf("at %.0f/s: %s", rate, why)
			if misses == 2 {
				break
			}
			continue
		}
		if !missedAny {
			sw.Knee = rate
		}
		misses = 0
	}
	if misses < 2 {
		sw.StoppedBecause = "swept every rate"
		if misses == 1 {
			sw.StoppedBecause += "; missed the last"
		}
	}
	progress("knee %.0f/s (%s)", sw.Knee, sw.StoppedBecause)
	return nil
}

// missed says why a sweep step failed, or "" when it passed.
func missed(r *Result, bound time.Duration) string {
	switch {
	case r.Latency.P99 > ms(bound):
		return fmt.Sprintf("p99 %s over %s", fmtMS(r.Latency.P99), fmtMS(ms(bound)))
	case r.Throughput < 0.9*r.OfferedRate:
		return fmt.Sprintf("throughput %.0f/s under 90%% of offered", r.Throughput)
	case float64(r.Errors) > 0.01*float64(r.Sent):
		return fmt.Sprintf("%d errors", r.Errors)
	}
	return ""
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// hostInfo describes the machine a report was measured on.
func hostInfo() Host {
	return Host{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, LoadAvg: [2]float64{loadAvg(), 0}}
}

// loadAvg is the 1-minute load average (0 where /proc/loadavg is missing).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
