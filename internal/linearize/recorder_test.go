package linearize

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// limiter is an in-memory stand-in for Capstan: a counter per customer.
type limiter struct {
	mu      sync.Mutex
	counter map[string]int64
	caps    map[string]int64
	// broken admits everything, the bug the checker must catch.
	broken bool
}

func (l *limiter) allow(customer string, amount int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.broken && l.counter[customer]+amount > l.caps[customer] {
		return false
	}
	l.counter[customer] += amount
	return true
}

func (l *limiter) read(customer string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counter[customer]
}

// runWorkload drives l from several clients through a Recorder. Every
// seventh allow is reported as unknown, half of those without reaching l.
func runWorkload(t *testing.T, l *limiter) History {
	t.Helper()
	rec := NewRecorder(l.caps)
	const clients, perClient = 8, 60
	var wg sync.WaitGroup
	for client := range clients {
		wg.Go(func() {
			for i := range perClient {
				customer := fmt.Sprintf("cust-%d", (client+i)%3)
				if i%4 == 3 {
					done := rec.Call(client, Read(customer))
					done(ReadValue(l.read(customer)))
					continue
				}
				amount := int64(1 + i%3)
				done := rec.Call(client, Allow(customer, amount))
				switch {
				case i%7 == 0 && client%2 == 0:
					l.allow(customer, amount) // applied, reply lost
					done(Unknown())
				case i%7 == 0:
					done(Unknown()) // never sent
				default:
					done(Decision(l.allow(customer, amount)))
				}
			}
		})
	}
	wg.Wait()
	// One call that never returns: counts as unknown.
	rec.Call(0, Allow("cust-0", 1))
	return rec.History()
}

func newLimiter(broken bool) *limiter {
	return &limiter{
		counter: map[string]int64{},
		caps:    map[string]int64{"cust-0": 50, "cust-1": 80, "cust-2": 1000},
		broken:  broken,
	}
}

func TestRecorderCorrectLimiterIsLinearizable(t *testing.T) {
	h := runWorkload(t, newLimiter(false))
	if len(h.Ops) != 8*60+1 {
		t.Fatalf("recorded %d operations, want %d", len(h.Ops), 8*60+1)
	}
	res, err := Check(context.Background(), h, 30*time.Second, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK {
		t.Fatalf("got %+v, want OK", res)
	}
	if res.PerCustomer["cust-0"].Unknowns == 0 {
		t.Fatal("workload produced no unknown outcomes")
	}
}

func TestRecorderBrokenLimiterIsCaught(t *testing.T) {
	h := runWorkload(t, newLimiter(true))
	dir := t.TempDir()
	res, err := Check(context.Background(), h, 30*time.Second, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || res.OverCap != 2 || res.PerCustomer["cust-2"].OverCap {
		t.Fatalf("got OverCap=%d %+v, want cust-0 and cust-1 over cap", res.OverCap, res.PerCustomer)
	}
	if len(res.Visualizations) == 0 {
		t.Fatal("no visualisation written")
	}
}

func TestRecorderCountsUnknownsAndRejectsDoubleReturn(t *testing.T) {
	rec := NewRecorder(map[string]int64{"c": 1})
	rec.Call(0, Allow("c", 1))(Unknown())
	rec.Call(0, Allow("c", 1))(Decision(true))
	if got := rec.Unknowns("c"); got != 1 {
		t.Fatalf("Unknowns = %d, want 1", got)
	}
	done := rec.Call(0, Read("c"))
	done(ReadValue(1))
	defer func() {
		if recover() == nil {
			t.Fatal("second return did not panic")
		}
	}()
	done(ReadValue(1))
}

func TestRecorderTimestampsAreOrdered(t *testing.T) {
	rec := NewRecorder(map[string]int64{"c": 10})
	rec.Call(0, Allow("c", 1))(Decision(true))
	rec.Call(0, Read("c"))(ReadValue(1))
	h := rec.History()
	if h.Ops[0].Return < h.Ops[0].Call || h.Ops[1].Call < h.Ops[0].Return {
		t.Fatalf("timestamps out of order: %+v", h.Ops)
	}
}
