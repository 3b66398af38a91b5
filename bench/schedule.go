package bench

import (
	"fmt"
	"math/rand"
	"time"
)

// OpKind is what one scheduled request does.
type OpKind uint8

const (
	// OpAllow is one allow call.
	OpAllow OpKind = iota
	// OpReserveSettle is a reserve followed by a settle of the actual usage (when the
	// reservation was allowed); its latency is the pair's.
	OpReserveSettle
)

// Op is one scheduled request. It is small and holds indexes only (into the
// fixture's customers and values and the run's regions), so a schedule of a million
// requests is 8 MB and sending one formats nothing.
type Op struct {
	Customer uint32
	Value    uint16
	Settle   uint16 // the settle value of a reserve→settle pair
	Kind     OpKind
	Region   uint8 // the client's region: which endpoint sends it
}

// Workload says which requests a run sends.
type Workload struct {
	Name string `json:"name"`
	// Dist picks customers of the open population: "uniform", "zipf" or "hot" (all
	// on one customer).
	Dist  string  `json:"dist"`
	ZipfS float64 `json:"zipf_s,omitempty"`
	// Kind is the request kind.
	Kind OpKind `json:"kind"`
	// CappedShare is the fraction of requests that go, uniformly, to the capped
	// population with a large value, so their caps are hit within a few calls.
	CappedShare float64 `json:"capped_share,omitempty"`
	About       string  `json:"about"`
}

// Built-in workloads.
var (
	Uniform       = Workload{Name: "uniform", Dist: "uniform", About: "allow 10 tokens, customers uniform"}
	Zipf          = Workload{Name: "zipf", Dist: "zipf", ZipfS: 1.1, About: "allow 10 tokens, customers Zipf(1.1)-skewed"}
	Hot           = Workload{Name: "hot", Dist: "hot", About: "allow 10 tokens, every call on one customer"}
	ReserveSettle = Workload{Name: "reserve-settle", Dist: "uniform", Kind: OpReserveSettle, About: "reserve 50 then settle 10..45, customers uniform (latency of the pair)"}
	CapsMix       = Workload{Name: "caps", Dist: "uniform", CappedShare: 0.25, About: "75% allow 10 on open customers, 25% allow 2000 on customers with the seed's $15/$20 caps (denied once hit)"}
)

// Workloads is every built-in workload by name.
var Workloads = map[string]Workload{
	Uniform.Name: Uniform, Zipf.Name: Zipf, Hot.Name: Hot, ReserveSettle.Name: ReserveSettle, CapsMix.Name: CapsMix,
}

// Arrival processes.
const (
	ArrivalPoisson = "poisson" // exponential gaps: bursts as real traffic has them
	ArrivalUniform = "uniform" // evenly spaced
)

// Schedule is a run's requests and their intended send times.
type Schedule struct {
	At       []int64 // intended send time of each request, ns after the run's start, ascending
	Ops      []Op
	Duration time.Duration
}

// Len is the number of requests.
func (s *Schedule) Len() int { return len(s.Ops) }

// NewSchedule pre-generates rate×d requests of workload w over fixture f, spread over
// `regions` client regions, from a seeded generator (the same seed gives the same
// schedule).
func NewSchedule(w Workload, f *Fixture, rate float64, d time.Duration, arrival string, regions int, seed int64) (*Schedule, error) {
	if rate <= 0 || d <= 0 {
		return nil, fmt.Errorf("schedule: rate and duration must be positive")
	}
	if f.Open.Count == 0 || (w.CappedShare > 0 && f.Capped.Count == 0) {
		return nil, fmt.Errorf("schedule: workload %s needs customers the fixture lacks", w.Name)
	}
	if regions < 1 || regions > 255 {
		return nil, fmt.Errorf("schedule: %d regions", regions)
	}
	n := int(rate * d.Seconds())
	if n < 1 {
		n = 1
	}
	r := rand.New(rand.NewSource(seed))
	s := &Schedule{At: make([]int64, n), Ops: make([]Op, n), Duration: d}
	gap := 1e9 / rate
	t := 0.0
	for i := range s.At {
		s.At[i] = int64(t)
		switch arrival {
		case ArrivalUniform:
			t += gap
		case ArrivalPoisson, "":
			t += r.ExpFloat64() * gap
		default:
			return nil, fmt.Errorf("schedule: unknown arrival %q", arrival)
		}
	}
	var zipf *rand.Zipf
	if w.Dist == "zipf" {
		zipf = rand.NewZipf(r, w.ZipfS, 1, uint64(f.Open.Count-1))
	}
	// Zipf ranks are spread over the customer ids by a fixed permutation, so the hot
	// customers do not all sort (and shard) together.
	perm := r.Perm(f.Open.Count)
	for i := range s.Ops {
		op := Op{Kind: w.Kind, Value: valSmall, Region: uint8(r.Intn(regions))}
		switch {
		case w.CappedShare > 0 && r.Float64() < w.CappedShare:
			op.Customer = uint32(f.Open.Count + r.Intn(f.Capped.Count))
			op.Value = valCapped
		case w.Dist == "uniform":
			op.Customer = uint32(r.Intn(f.Open.Count))
		case w.Dist == "zipf":
			op.Customer = uint32(perm[zipf.Uint64()])
		case w.Dist == "hot":
			op.Customer = 0
		default:
			return nil, fmt.Errorf("schedule: unknown distribution %q", w.Dist)
		}
		if op.Kind == OpReserveSettle {
			op.Value = valReserve
			op.Settle = uint16(valSettle0 + r.Intn(settleValues))
		}
		s.Ops[i] = op
	}
	return s, nil
}
