package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// RunConfig is how one run is driven.
type RunConfig struct {
	// Workers is the size of the goroutine pool: at most this many requests are in
	// flight. Requests due while all are busy go out late, and their latency counts
	// the wait (open loop).
	Workers int
	// Progress receives a line a second while the run goes; nil is quiet.
	Progress io.Writer
	// Label prefixes progress lines.
	Label string
	// Grace is how long after the schedule's end the run may go on finishing
	// requests; default max(2s, half the schedule).
	Grace time.Duration
}

// errRunDeadline marks requests given up when a run overran its grace period.
var errRunDeadline = errors.New("not sent: the run's deadline passed (target overloaded)")

// Percentiles summarise a latency histogram, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func summarise(h *hdr.Histogram) Percentiles {
	ms := func(v int64) float64 { return float64(v) / 1e6 }
	return Percentiles{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1e6,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// Tick is one progress interval.
type Tick struct {
	At         float64 `json:"at_s"`
	Done       int64   `json:"done"`
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
}

// Result is one run of one workload at one offered rate against one target.
type Result struct {
	Target      string  `json:"target"`
	Workload    string  `json:"workload"`
	OfferedRate float64 `json:"offered_rate"`
	Arrival     string  `json:"arrival"`
	Workers     int     `json:"workers"`
	ScheduleS   float64 `json:"schedule_s"` // the schedule's length
	WallS       float64 `json:"wall_s"`     // start to last completion
	Throughput  float64 `json:"throughput"` // decisions (allowed or denied, not errors) per second of wall time

	Sent    int64 `json:"sent"`
	Allowed int64 `json:"allowed"`
	Denied  int64 `json:"denied"`
	Errors  int64 `json:"errors"`
	// Abandoned counts the errors that were never sent because the run's deadline
	// passed first (the target fell too far behind).
	Abandoned int64 `json:"abandoned,omitempty"`

	Latency  Percentiles            `json:"latency"`
	ByRegion map[string]Percentiles `json:"by_region,omitempty"`
	// SendLag is how late the generator sent (actual minus intended): large values
	// mean the pool was saturated or the machine busy; latency includes it either way.
	SendLag Percentiles `json:"send_lag"`
	// CPU is this process's CPU time over the run (generator, client stack, and for
	// the in-process and null targets the target itself), in cores and per request.
	CPUCores  float64 `json:"cpu_cores"`
	CPUPerReq float64 `json:"cpu_us_per_request"`
	// TargetCPUCores is the CPU the target's own processes used over the run
	// (servers, Redis, etcd), in cores; 0 for in-process targets.
	TargetCPUCores float64 `json:"target_cpu_cores,omitempty"`

	ErrorSamples map[string]int64 `json:"error_samples,omitempty"`
	// Skipped says why the run did not happen (the target lacks the request kind).
	Skipped string `json:"skipped,omitempty"`
	Series  []Tick `json:"series,omitempty"`
}

// Run drives schedule s against target t (started and set up) and returns the result.
func Run(ctx context.Context, t Target, s *Schedule, cfg RunConfig) (*Result, error) {
	regions := t.Regions()
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	n := s.Len()
	clients := make([][]Client, cfg.Workers)
	for w := range clients {
		clients[w] = make([]Client, len(regions))
		for r := range regions {
			c, err := t.Client(w, r)
			if err != nil {
				return nil, fmt.Errorf("%s: client for worker %d region %s: %w", t.Name(), w, regions[r], err)
			}
			clients[w][r] = c
		}
	}
	rec := newRecorder(min(cfg.Workers, 8), len(regions))

	// The run ends at the schedule's length plus Grace whatever the target does:
	// then requests in flight are cancelled and requests not yet sent are given up,
	// both counted as errors with their lateness as latency.
	grace := cfg.Grace
	if grace <= 0 {
		grace = max(2*time.Second, s.Duration/2)
	}
	runCtx, cancel := context.WithTimeout(ctx, s.Duration+grace)
	defer cancel()

	var targetCPU0 time.Duration
	cr, hasCPU := t.(CPUReporter)
	if hasCPU {
		targetCPU0 = cr.ServerCPU()
	}
	cpu0 := cpuTime()
	start := time.Now()
	// One pacer releases each slot at its intended time into a queue the worker pool
	// takes from; when every worker is busy the queue (and then the pacer) waits, and
	// the wait counts in the latency of the requests it delays.
	queue := make(chan int32, 4096)
	var released, abandoned atomic.Int64
	giveUp := func(shard int, i int) {
		op := &s.Ops[i]
		late := int64(time.Since(start)) - s.At[i]
		rec.add(shard, op.Region, late, late, Failed, errRunDeadline)
		abandoned.Add(1)
	}
	go func() {
		lockPacer()
		defer unlockPacer()
		defer close(queue)
		for i := 0; i < n; i++ {
			// Sleep until the slot is due; under 20 µs early it goes at once.
			for {
				wait := s.At[i] - int64(time.Since(start))
				if wait <= 20_000 {
					break
				}
				sleepNS(wait)
			}
			select {
			case queue <- int32(i):
				released.Store(int64(i + 1))
			case <-runCtx.Done():
				for ; i < n; i++ {
					giveUp(0, i)
				}
				released.Store(int64(n))
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			shard := w % len(rec.shards)
			cl := clients[w]
			for i := range queue {
				if runCtx.Err() != nil {
					giveUp(shard, int(i))
					continue
				}
				at := s.At[i]
				sent := int64(time.Since(start))
				op := &s.Ops[i]
				out, err := cl[op.Region].Do(runCtx, op)
				end := int64(time.Since(start))
				rec.add(shard, op.Region, end-at, sent-at, out, err)
			}
		}(w)
	}

	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	res := &Result{
		Target: t.Name(), OfferedRate: float64(n) / s.Duration.Seconds(), Workers: cfg.Workers,
		ScheduleS: s.Duration.Seconds(),
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	window := newHist()
	var lastDone int64
	lastAt := start
loop:
	for {
		select {
		case <-finished:
			break loop
		case now := <-tick.C:
			rec.takeWindow(window)
			done := rec.done.Load()
			el := now.Sub(start).Seconds()
			tk := Tick{
				At: el, Done: done, Throughput: float64(done-lastDone) / now.Sub(lastAt).Seconds(),
				P50: float64(window.ValueAtQuantile(50)) / 1e6, P99: float64(window.ValueAtQuantile(99)) / 1e6,
			}
			res.Series = append(res.Series, tk)
			lastDone, lastAt = done, now
			if cfg.Progress != nil {
				sent := released.Load()
				fmt.Fprintf(cfg.Progress, "%s %5.1fs/%.0fs sent %d done %d in-flight %d | %7.0f/s p50 %s p99 %s | denied %d errors %d\n",
					cfg.Label, el, res.ScheduleS, sent, done, sent-done, tk.Throughput,
					fmtMS(tk.P50), fmtMS(tk.P99), rec.denied.Load(), rec.failed.Load())
			}
		}
	}
	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	if hasCPU {
		res.TargetCPUCores = (cr.ServerCPU() - targetCPU0).Seconds() / wall.Seconds()
	}

	all, byRegion, lag := rec.totals()
	res.WallS = wall.Seconds()
	res.Sent = int64(n)
	res.Allowed, res.Denied, res.Errors = rec.allowed.Load(), rec.denied.Load(), rec.failed.Load()
	res.Abandoned = abandoned.Load()
	res.Throughput = float64(res.Allowed+res.Denied) / max(res.WallS, res.ScheduleS)
	res.Latency = summarise(all)
	res.SendLag = summarise(lag)
	if len(regions) > 1 {
		res.ByRegion = map[string]Percentiles{}
		for i, h := range byRegion {
			res.ByRegion[regions[i]] = summarise(h)
		}
	}
	res.CPUCores = cpu.Seconds() / wall.Seconds()
	res.CPUPerReq = float64(cpu.Microseconds()) / float64(n)
	if len(rec.errSeen) > 0 {
		res.ErrorSamples = rec.errSeen
	}
	return res, nil
}

// cpuTime is this process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fmtMS(ms float64) string {
	switch {
	case ms >= 1000:
		return fmt.Sprintf("%.2fs", ms/1000)
	case ms >= 100:
		return fmt.Sprintf("%.0fms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1fms", ms)
	case ms >= 1:
		return fmt.Sprintf("%.2fms", ms)
	default:
		return fmt.Sprintf("%.0fµs", ms*1000)
	}
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
