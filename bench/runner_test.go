package bench

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestSmokeInProcess drives the in-process target for about two seconds at a low rate
// and checks the report is sane. It is the only load `go test` ever runs.
func TestSmokeInProcess(t *testing.T) {
	ctx := context.Background()
	f := NewFixture(200, 2)
	tgt := NewInProcess()
	if err := tgt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	if err := tgt.Setup(ctx, f); err != nil {
		t.Fatal(err)
	}
	for _, w := range []Workload{CapsMix, ReserveSettle} {
		s, err := NewSchedule(w, f, 500, time.Second, ArrivalPoisson, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		var progress *os.File
		if testing.Verbose() {
			progress = os.Stderr
		}
		res, err := Run(ctx, tgt, s, RunConfig{Workers: 4, Progress: progress, Label: w.Name})
		if err != nil {
			t.Fatal(err)
		}
		l := res.Latency
		t.Logf("%s: sent %d allowed %d denied %d errors %d p50 %.3fms p99 %.3fms max %.3fms lag p50 %.3fms p99 %.3fms", w.Name, res.Sent, res.Allowed, res.Denied, res.Errors, l.P50, l.P99, l.Max, res.SendLag.P50, res.SendLag.P99)
		if res.Sent == 0 || l.Count != res.Sent {
			t.Errorf("%s: sent %d, recorded %d", w.Name, res.Sent, l.Count)
		}
		if res.Allowed+res.Denied+res.Errors != res.Sent {
			t.Errorf("%s: allowed %d + denied %d + errors %d != sent %d", w.Name, res.Allowed, res.Denied, res.Errors, res.Sent)
		}
		if !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s: percentiles out of order: %+v", w.Name, l)
		}
		if res.Errors != 0 {
			t.Errorf("%s: %d errors: %v", w.Name, res.Errors, res.ErrorSamples)
		}
		if res.Throughput < 0.8*res.OfferedRate {
			t.Errorf("%s: throughput %.0f/s at %.0f/s offered", w.Name, res.Throughput, res.OfferedRate)
		}
		if w.CappedShare > 0 && res.Denied == 0 {
			t.Errorf("%s: no call was denied: the capped customers' caps were never hit", w.Name)
		}
	}
}

// TestGeneratorDoesNotAllocatePerRequest keeps the harness's hot path (pacer,
// worker hand-off, recording) free of per-request allocations.
func TestGeneratorDoesNotAllocatePerRequest(t *testing.T) {
	f := NewFixture(100, 1)
	s, err := NewSchedule(Uniform, f, 10000, 500*time.Millisecond, ArrivalPoisson, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := Run(context.Background(), NullTarget{}, s, RunConfig{Workers: 2})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	perReq := float64(after.Mallocs-before.Mallocs) / float64(s.Len())
	t.Logf("%d requests, %.3f allocations per request, send lag p99 %s", res.Sent, perReq, fmtMS(res.SendLag.P99))
	if perReq > 0.1 {
		t.Errorf("%.3f allocations per request", perReq)
	}
}

// threeRegions is the null target with a client endpoint in each of three regions.
type threeRegions struct{ NullTarget }

func (threeRegions) Regions() []string { return []string{"us-east", "eu-west", "ap-south"} }

// TestLatencyByRegion checks requests are spread over the client regions and each
// region gets its own latency summary.
func TestLatencyByRegion(t *testing.T) {
	f := NewFixture(100, 1)
	s, err := NewSchedule(Uniform, f, 3000, 300*time.Millisecond, ArrivalPoisson, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), threeRegions{}, s, RunConfig{Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	regions := threeRegions{}.Regions()
	for _, r := range regions {
		p, ok := res.ByRegion[r]
		if !ok || p.Count < res.Sent/6 {
			t.Errorf("region %s: %+v (of %d requests)", r, p, res.Sent)
		}
		sum += p.Count
	}
	if sum != res.Sent {
		t.Errorf("regions hold %d requests, sent %d", sum, res.Sent)
	}
}
