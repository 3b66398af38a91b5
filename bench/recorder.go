package bench

import (
	"sync"
	"sync/atomic"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: 1 µs to 60 s, three significant digits (values are nanoseconds).
const (
	histMin    = 1_000
	histMax    = 60_000_000_000
	histDigits = 3
)

func newHist() *hdr.Histogram { return hdr.New(histMin, histMax, histDigits) }

func record(h *hdr.Histogram, ns int64) {
	h.RecordValue(min(max(ns, histMin), histMax))
}

// recorder collects one run's measurements. Workers write into a shard each (its
// own lock, so two cores never contend on one histogram); totals are atomics.
type recorder struct {
	shards  []recShard
	regions int

	done, allowed, denied, failed atomic.Int64

	errMu   sync.Mutex
	errSeen map[string]int64
}

type recShard struct {
	mu     sync.Mutex
	lat    []*hdr.Histogram // by client region, from the intended send time
	lag    *hdr.Histogram   // actual send time minus intended: the generator's lateness
	window *hdr.Histogram   // latency since the last progress tick
	_      [64]byte
}

func newRecorder(shards, regions int) *recorder {
	r := &recorder{shards: make([]recShard, shards), regions: regions, errSeen: map[string]int64{}}
	for i := range r.shards {
		s := &r.shards[i]
		for j := 0; j < regions; j++ {
			s.lat = append(s.lat, newHist())
		}
		s.lag = newHist()
		s.window = newHist()
	}
	return r
}

// add records one completed request.
func (r *recorder) add(shard int, region uint8, latency, lag int64, out Outcome, err error) {
	s := &r.shards[shard]
	s.mu.Lock()
	record(s.lat[region], latency)
	record(s.window, latency)
	record(s.lag, lag)
	s.mu.Unlock()
	switch out {
	case Allowed:
		r.allowed.Add(1)
	case Denied:
		r.denied.Add(1)
	default:
		r.failed.Add(1)
		r.noteErr(err)
	}
	r.done.Add(1)
}

// noteErr keeps a count of distinct error messages (a few, for the report).
func (r *recorder) noteErr(err error) {
	msg := "unknown error"
	if err != nil {
		msg = err.Error()
		if len(msg) > 200 {
			msg = msg[:200]
		}
	}
	r.errMu.Lock()
	if _, ok := r.errSeen[msg]; ok || len(r.errSeen) < 8 {
		r.errSeen[msg]++
	}
	r.errMu.Unlock()
}

// takeWindow merges and resets the shards' window histograms.
func (r *recorder) takeWindow(into *hdr.Histogram) {
	into.Reset()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		into.Merge(s.window)
		s.window.Reset()
		s.mu.Unlock()
	}
}

// totals merges every shard: latency overall and by region, and send lag.
func (r *recorder) totals() (all *hdr.Histogram, byRegion []*hdr.Histogram, lag *hdr.Histogram) {
	all, lag = newHist(), newHist()
	byRegion = make([]*hdr.Histogram, r.regions)
	for j := range byRegion {
		byRegion[j] = newHist()
	}
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for j, h := range s.lat {
			all.Merge(h)
			byRegion[j].Merge(h)
		}
		lag.Merge(s.lag)
		s.mu.Unlock()
	}
	return all, byRegion, lag
}
