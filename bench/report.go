package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/capstanhq/capstan/internal/version"
)

// Report is one suite run: what ran where, every result, and the goals it is judged
// against. It is written as JSON (everything), markdown (the tables) and SVG (the
// sweep's latency against rate).
type Report struct {
	Suite    string      `json:"suite"`
	Version  string      `json:"version"`
	Started  time.Time   `json:"started"`
	Finished time.Time   `json:"finished"`
	Host     Host        `json:"host"`
	Config   SuiteConfig `json:"config"`

	Targets []TargetInfo `json:"targets"`
	Runs    []*Result    `json:"runs"`
	Sweeps  []*Sweep     `json:"sweeps"`
	Goals   []Goal       `json:"goals"`
	// EngineClosedLoop is allow/s with the engine called back to back on one
	// goroutine for a second: its capacity without the harness.
	EngineClosedLoop float64  `json:"engine_closed_loop_allow_per_s,omitempty"`
	Notes            []string `json:"notes,omitempty"`
	// Profiles are CPU profiles taken during runs (file name -> pprof bytes),
	// written beside the report.
	Profiles map[string][]byte `json:"-"`
	// ProfileFiles names the profile files written with the report.
	ProfileFiles []string `json:"profile_files,omitempty"`
}

func (r *Report) addProfile(name string, b []byte) {
	if r.Profiles == nil {
		r.Profiles = map[string][]byte{}
	}
	r.Profiles[name] = b
	r.ProfileFiles = append(r.ProfileFiles, name)
}

// Host is the machine measured on.
type Host struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	// LoadAvg is /proc/loadavg's 1-minute figure at the start and the end: other
	// work on the machine shows in every latency, the generator's first.
	LoadAvg [2]float64 `json:"loadavg"`
}

// TargetInfo is one target's line in the report.
type TargetInfo struct {
	Name    string   `json:"name"`
	Status  string   `json:"status"` // ok, not available, failed
	Reason  string   `json:"reason,omitempty"`
	About   string   `json:"about"`
	Regions []string `json:"regions"`
	Seconds float64  `json:"seconds"`
}

// Sweep is one target's rate sweep.
type Sweep struct {
	Target         string    `json:"target"`
	Workload       string    `json:"workload"`
	BoundMS        float64   `json:"p99_bound_ms"`
	Knee           float64   `json:"knee_rate"` // the highest offered rate that passed; 0 = none
	MaxThroughput  float64   `json:"max_throughput"`
	StoppedBecause string    `json:"stopped_because"`
	Steps          []*Result `json:"steps"`
}

// Goal is one of the targets the issue sets, with what this run measured.
type Goal struct {
	Goal   string `json:"goal"`
	Result string `json:"result"`
	Status string `json:"status"` // met, missed, not measured
}

func newReport(c SuiteConfig) *Report {
	return &Report{Suite: c.Name, Version: version.Version, Started: time.Now().UTC(), Host: hostInfo(), Config: c}
}

func (r *Report) sweep(target string) *Sweep {
	for _, s := range r.Sweeps {
		if s.Target == target {
			return s
		}
	}
	return nil
}

func (r *Report) run(target, workload string) *Result {
	for _, x := range r.Runs {
		if x.Target == target && x.Workload == workload {
			return x
		}
	}
	return nil
}

// finish stamps the end and judges the goals.
func (r *Report) finish() {
	r.Finished = time.Now().UTC()
	r.Host.LoadAvg[1] = loadAvg()
	judge := func(goal string, measured bool, met bool, result string) {
		g := Goal{Goal: goal, Result: result, Status: "not measured"}
		if measured {
			g.Status = map[bool]string{true: "met", false: "missed"}[met]
		}
		r.Goals = append(r.Goals, g)
	}
	three := r.sweep("3-node")
	if three != nil && len(three.Steps) > 0 {
		best := 0.0
		for _, s := range three.Steps {
			if missed(s, time.Duration(three.BoundMS*1e6)) == "" {
				best = max(best, s.Throughput)
			}
		}
		judge("3 nodes: >= 30k linearizable allow/s sustained", true, best >= 30000,
			fmt.Sprintf("%.0f/s sustained (p99 within %s), %.0f/s at most", best, fmtMS(three.BoundMS), three.MaxThroughput))
		var at10k *Result
		for _, s := range three.Steps {
			if s.OfferedRate >= 9999 && s.OfferedRate <= 10001 {
				at10k = s
			}
		}
		if at10k != nil {
			judge("3 nodes: p99 <= 5 ms at 10k/s offered", true, at10k.Latency.P99 <= 5,
				fmt.Sprintf("p99 %s, throughput %.0f/s", fmtMS(at10k.Latency.P99), at10k.Throughput))
		} else {
			// The sweep only stops below 10k/s when lower rates already missed.
			judge("3 nodes: p99 <= 5 ms at 10k/s offered", true, false, "the sweep stopped before 10k/s: "+three.StoppedBecause)
		}
	} else {
		judge("3 nodes: >= 30k linearizable allow/s sustained", false, false, "3-node target "+r.status("3-node"))
		judge("3 nodes: p99 <= 5 ms at 10k/s offered", false, false, "3-node target "+r.status("3-node"))
	}
	if raw := r.EngineClosedLoop; raw > 0 {
		judge("engine in-process: >= 1M decisions/s", true, raw >= 1e6,
			fmt.Sprintf("%.0f allow/s closed-loop on one goroutine (no harness); open-loop knee through the harness %.0f/s", raw, r.kneeOf("in-process")))
	} else {
		judge("engine in-process: >= 1M decisions/s", false, false, "in-process target "+r.status("in-process"))
	}
}

func (r *Report) status(target string) string {
	for _, t := range r.Targets {
		if t.Name == target {
			if t.Reason != "" {
				return t.Status + ": " + t.Reason
			}
			return t.Status
		}
	}
	return "not run"
}

func (r *Report) kneeOf(target string) float64 {
	if s := r.sweep(target); s != nil {
		return s.Knee
	}
	return 0
}

// Write writes report.json, report.md and latency.svg into dir/<stamp>-<suite>/ and
// copies them to dir/latest-<suite>.{json,md,svg}; it returns the run's directory.
func (r *Report) Write(dir string) (string, error) {
	run := filepath.Join(dir, r.Started.Format("20060102-150405")+"-"+r.Suite)
	if err := os.MkdirAll(run, 0o755); err != nil {
		return "", err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	for name, b := range r.Profiles {
		if err := os.WriteFile(filepath.Join(run, name), b, 0o644); err != nil {
			return "", err
		}
	}
	files := map[string][]byte{"report.json": js, "report.md": []byte(r.Markdown()), "latency.svg": []byte(r.SVG())}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(run, name), b, 0o644); err != nil {
			return "", err
		}
		ext := filepath.Ext(name)
		if err := os.WriteFile(filepath.Join(dir, "latest-"+r.Suite+ext), b, 0o644); err != nil {
			return "", err
		}
	}
	return run, nil
}

// Markdown renders the report's tables.
func (r *Report) Markdown() string {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "# Capstan bench: %s suite\n\n", r.Suite)
	fmt.Fprintf(&b, "%s, version %s, %d CPUs (GOMAXPROCS %d), %s %s; took %s; load average %.2f at the start, %.2f at the end.\n\n",
		r.Started.Format("2006-01-02 15:04 MST"), r.Version, r.Host.CPUs, r.Host.GOMAXPROCS, r.Host.GoVersion, r.Host.OS,
		r.Finished.Sub(r.Started).Round(time.Second), r.Host.LoadAvg[0], r.Host.LoadAvg[1])
	fmt.Fprintf(&b, "Open loop, %s arrivals: latency counts from each request's intended send time. "+
		"Seed policy (soft monthly limit 16667 tokens at $0.0003, overage-only caps): %d customers with caps never reached, "+
		"%d with the seed's $20 monthly / $15 weekly caps; every customer primed to its plan limit, so each call does the overage and cap arithmetic. "+
		"%d workers for network targets; the harness and the servers it started ran at nice %d.\n\n", c.Arrival, c.Customers, c.Capped, c.Workers, c.Nice)

	b.WriteString("## Targets\n\n| target | status | what is measured |\n|---|---|---|\n")
	for _, t := range r.Targets {
		st := t.Status
		if t.Reason != "" {
			st += ": " + oneLine(t.Reason)
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t.Name, st, t.About)
	}

	fmt.Fprintf(&b, "\n## Workloads at %.0f/s offered, %s each\n\n", c.FixedRate, c.FixedDuration)
	b.WriteString("Ratios are against the in-process engine (the price of the API, replication and durability).\n\n")
	b.WriteString("| workload | target | throughput/s | p50 | p90 | p99 | p99.9 | max | allowed | denied | errors | p50 ×in-proc | p99 ×in-proc | send lag p99 |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, w := range c.Workloads {
		base := r.run("in-process", w.Name)
		for _, t := range r.Targets {
			x := r.run(t.Name, w.Name)
			if x == nil {
				continue
			}
			if x.Skipped != "" {
				fmt.Fprintf(&b, "| %s | %s | %s | | | | | | | | | | | |\n", w.Name, t.Name, x.Skipped)
				continue
			}
			l := x.Latency
			fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %d | %d | %d | %s | %s | %s |\n",
				w.Name, t.Name, x.Throughput, fmtMS(l.P50), fmtMS(l.P90), fmtMS(l.P99), fmtMS(l.P999), fmtMS(l.Max),
				x.Allowed, x.Denied, x.Errors, ratio(l.P50, base, func(r *Result) float64 { return r.Latency.P50 }),
				ratio(l.P99, base, func(r *Result) float64 { return r.Latency.P99 }), fmtMS(x.SendLag.P99))
		}
	}
	b.WriteString("\n")
	for _, w := range c.Workloads {
		fmt.Fprintf(&b, "- **%s**: %s\n", w.Name, w.About)
	}

	fmt.Fprintf(&b, "\n## Rate sweep: %s, p99 bound %s\n\n", c.SweepWorkload.Name, c.P99Bound)
	b.WriteString("The knee is the highest offered rate at which p99 stayed within the bound, throughput kept up (>= 90%) and errors stayed under 1%. Cells are p99 (throughput).\n\n")
	b.WriteString("| target | knee | knee ×in-proc | max throughput/s | stopped |")
	for _, rate := range c.SweepRates {
		fmt.Fprintf(&b, " %s/s |", kfmt(rate))
	}
	b.WriteString("\n|---|--:|--:|--:|---|" + strings.Repeat("--:|", len(c.SweepRates)) + "\n")
	inKnee := r.kneeOf("in-process")
	for _, t := range r.Targets {
		s := r.sweep(t.Name)
		if s == nil || len(s.Steps) == 0 {
			status := t.Status
			if status == "ok" {
				status = "not swept"
			}
			fmt.Fprintf(&b, "| %s | %s | | | |%s\n", t.Name, status, strings.Repeat(" |", len(c.SweepRates)))
			continue
		}
		kr := ""
		if inKnee > 0 && t.Name != "in-process" && t.Name != "null" {
			kr = fmt.Sprintf("%.2f", s.Knee/inKnee)
		}
		knee := "none"
		if s.Knee > 0 {
			knee = kfmt(s.Knee) + "/s"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %s |", t.Name, knee, kr, s.MaxThroughput, s.StoppedBecause)
		for _, rate := range c.SweepRates {
			cell := " |"
			for _, st := range s.Steps {
				if st.OfferedRate > rate*0.999 && st.OfferedRate < rate*1.001 {
					cell = fmt.Sprintf(" %s (%s) |", fmtMS(st.Latency.P99), kfmt(st.Throughput))
				}
			}
			b.WriteString(cell)
		}
		b.WriteString("\n")
	}
	b.WriteString("\nPlot: latency.svg (p50 dashed, p99 solid, against offered rate).\n")

	var regional []*Result
	for _, x := range r.Runs {
		if len(x.ByRegion) > 1 {
			regional = append(regional, x)
		}
	}
	if len(regional) > 0 {
		b.WriteString("\n## Latency by client region\n\n| target | workload | region | requests | p50 | p99 | max |\n|---|---|---|--:|--:|--:|--:|\n")
		for _, x := range regional {
			for _, reg := range sortedNames(x.ByRegion) {
				p := x.ByRegion[reg]
				fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s | %s |\n", x.Target, x.Workload, reg, p.Count, fmtMS(p.P50), fmtMS(p.P99), fmtMS(p.Max))
			}
		}
	}

	b.WriteString("\n## The generator's own cost\n\n")
	b.WriteString("The null target answers at once, so its latency is the harness's floor (pacer wake-up, hand-off to a worker, recording). " +
		"Send lag is how late requests left against their intended time (counted in every latency above). CPU is this process's: " +
		"generator and client stack (plus the engine itself for in-process).\n\n")
	b.WriteString("| target | workload | offered/s | latency p50 | p99 | send lag p50 | p99 | bench CPU (cores) | bench CPU µs/request | target's processes CPU (cores) |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, x := range r.generatorRows() {
		tcpu := ""
		if x.TargetCPUCores > 0 {
			tcpu = fmt.Sprintf("%.2f", x.TargetCPUCores)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s | %s | %.2f | %.1f | %s |\n", x.Target, x.Workload, x.OfferedRate,
			fmtMS(x.Latency.P50), fmtMS(x.Latency.P99), fmtMS(x.SendLag.P50), fmtMS(x.SendLag.P99), x.CPUCores, x.CPUPerReq, tcpu)
	}

	b.WriteString("\n## Goals\n\n| goal | measured | status |\n|---|---|---|\n")
	for _, g := range r.Goals {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", g.Goal, oneLine(g.Result), g.Status)
	}
	notes := slices.Clone(r.Notes)
	for _, name := range r.ProfileFiles {
		notes = append(notes, fmt.Sprintf("CPU profile %s beside this report: `go tool pprof -top bin/capstan %s`", name, name))
	}
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// generatorRows are the null target's runs (fixed rate and sweep) and every other
// target's uniform run at the fixed rate.
func (r *Report) generatorRows() []*Result {
	var out []*Result
	for _, t := range r.Targets {
		if x := r.run(t.Name, Uniform.Name); x != nil && x.Skipped == "" {
			out = append(out, x)
		}
		if s := r.sweep(t.Name); s != nil && t.Name == "null" {
			out = append(out, s.Steps...)
		}
	}
	return out
}

func ratio(v float64, base *Result, get func(*Result) float64) string {
	if base == nil || base.Skipped != "" || get(base) <= 0 {
		return ""
	}
	return fmt.Sprintf("%.1f", v/get(base))
}

func kfmt(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1000:
		return fmt.Sprintf("%.3gk", v/1000)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
