package linearize

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func op(client int, in Input, out Output, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
}

func check(t *testing.T, h History, visualizeDir string) Result {
	t.Helper()
	res, err := Check(context.Background(), h, 10*time.Second, visualizeDir)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return res
}

func TestCheckHandWrittenHistories(t *testing.T) {
	const c = "cust-a"
	caps := map[string]int64{c: 5}
	tests := []struct {
		name    string
		ops     []porcupine.Operation
		ok      bool
		overCap int
	}{
		{
			name: "sequential allows, denial at the cap, reads",
			ops: []porcupine.Operation{
				op(0, Allow(c, 2), Decision(true), 0, 10),
				op(0, Read(c), ReadValue(2), 11, 20),
				op(0, Allow(c, 3), Decision(true), 21, 30),
				op(0, Allow(c, 1), Decision(false), 31, 40),
				op(0, Read(c), ReadValue(5), 41, 50),
			},
			ok: true,
		},
		{
			name: "two concurrent allows race for the last unit, one is denied",
			ops: []porcupine.Operation{
				op(0, Allow(c, 4), Decision(true), 0, 10),
				op(1, Allow(c, 1), Decision(true), 20, 40),
				op(2, Allow(c, 1), Decision(false), 25, 35),
			},
			ok: true,
		},
		{
			name: "two concurrent allows both take the last unit",
			ops: []porcupine.Operation{
				op(0, Allow(c, 4), Decision(true), 0, 10),
				op(1, Allow(c, 1), Decision(true), 20, 40),
				op(2, Allow(c, 1), Decision(true), 25, 35),
			},
			overCap: 1,
		},
		{
			name: "denied although it fit",
			ops: []porcupine.Operation{
				op(0, Allow(c, 4), Decision(true), 0, 10),
				op(0, Allow(c, 1), Decision(false), 20, 30),
			},
		},
		{
			name: "read concurrent with an allow may see either value",
			ops: []porcupine.Operation{
				op(0, Allow(c, 1), Decision(true), 0, 20),
				op(1, Read(c), ReadValue(0), 5, 15),
				op(2, Read(c), ReadValue(1), 6, 16),
			},
			ok: true,
		},
		{
			name: "stale read after the allow completed",
			ops: []porcupine.Operation{
				op(0, Allow(c, 1), Decision(true), 0, 10),
				op(1, Read(c), ReadValue(1), 11, 15),
				op(2, Read(c), ReadValue(0), 20, 30),
			},
		},
		{
			name: "read above the cap",
			ops: []porcupine.Operation{
				op(0, Read(c), ReadValue(6), 0, 10),
			},
			overCap: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			res := check(t, History{Caps: caps, Ops: tt.ops}, dir)
			if res.OK != tt.ok || res.OverCap != tt.overCap || res.Unknown {
				t.Fatalf("got OK=%v OverCap=%d Unknown=%v, want OK=%v OverCap=%d; %+v",
					res.OK, res.OverCap, res.Unknown, tt.ok, tt.overCap, res.PerCustomer[c])
			}
			got := res.PerCustomer[c]
			if tt.ok {
				if got.Linearizable != porcupine.Ok || len(res.Visualizations) != 0 {
					t.Fatalf("got %+v, want Ok and no visualisation", got)
				}
				return
			}
			if got.Linearizable != porcupine.Illegal {
				t.Fatalf("porcupine said %s, want Illegal", got.Linearizable)
			}
			assertVisualization(t, dir, got.Visualization)
			if len(res.Visualizations) != 1 || res.Visualizations[0] != got.Visualization {
				t.Fatalf("Visualizations = %v, want [%s]", res.Visualizations, got.Visualization)
			}
		})
	}
}

func assertVisualization(t *testing.T, dir, path string) {
	t.Helper()
	if path == "" || !strings.HasPrefix(path, dir) {
		t.Fatalf("visualisation path %q not in %s", path, dir)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "<html") || !strings.Contains(string(b), "(cust-a") {
		t.Fatalf("visualisation %s does not look like porcupine's HTML with our operations", path)
	}
}

// An allow whose outcome is unknown may have happened, at any time after its
// call, or never.
func TestCheckUnknownOutcomes(t *testing.T) {
	const c = "cust-u"
	caps := map[string]int64{c: 1}
	unknown := func(call, ret int64) porcupine.Operation { return op(0, Allow(c, 1), Unknown(), call, ret) }
	tests := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{
			name: "never happened: a later allow takes the unit",
			ops:  []porcupine.Operation{unknown(0, OpenReturn), op(1, Allow(c, 1), Decision(true), 20, 30)},
			ok:   true,
		},
		{
			name: "happened: a later read sees it",
			ops:  []porcupine.Operation{unknown(0, OpenReturn), op(1, Read(c), ReadValue(1), 20, 30)},
			ok:   true,
		},
		{
			name: "happened: a later allow is denied",
			ops:  []porcupine.Operation{unknown(0, OpenReturn), op(1, Allow(c, 1), Decision(false), 20, 30)},
			ok:   true,
		},
		{
			name: "happened after the client gave up: the recorded return is ignored",
			ops: []porcupine.Operation{
				unknown(0, 5),
				op(1, Read(c), ReadValue(0), 20, 30),
				op(1, Read(c), ReadValue(1), 40, 50),
			},
			ok: true,
		},
		{
			name: "cannot both have happened and left room for another allow",
			ops: []porcupine.Operation{
				unknown(0, OpenReturn),
				op(1, Read(c), ReadValue(1), 20, 30),
				op(1, Allow(c, 1), Decision(true), 40, 50),
			},
		},
		{
			name: "cannot un-happen",
			ops: []porcupine.Operation{
				unknown(0, OpenReturn),
				op(1, Read(c), ReadValue(1), 20, 30),
				op(1, Read(c), ReadValue(0), 40, 50),
			},
		},
		{
			name: "unknown reads constrain nothing",
			ops: []porcupine.Operation{
				op(0, Allow(c, 1), Decision(true), 0, 10),
				op(1, Read(c), Unknown(), 20, 30),
			},
			ok: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := check(t, History{Caps: caps, Ops: tt.ops}, "")
			if res.OK != tt.ok || res.Unknown || res.OverCap != 0 {
				t.Fatalf("got %+v, want OK=%v", res, tt.ok)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	const c = "cust-r"
	h := History{Caps: map[string]int64{c: 1}}
	lost := Allow(c, 1)
	lost.RequestID = "req-1"
	h.Ops = []porcupine.Operation{
		op(0, lost, Unknown(), 0, 5),
		op(1, Allow(c, 1), Decision(true), 20, 30),
	}
	if res := check(t, h, ""); !res.OK {
		t.Fatalf("unresolved: got %+v, want OK", res)
	}

	applied := h.Resolve(func(id string) (Resolution, bool) {
		return Resolution{Applied: true, Allowed: true}, id == "req-1"
	})
	res := check(t, applied, "")
	if res.OK || res.OverCap != 1 || res.PerCustomer[c].Admitted != 2 {
		t.Fatalf("resolved as allowed: got %+v, want over cap with 2 admitted", res)
	}

	never := h.Resolve(func(string) (Resolution, bool) { return Resolution{}, true })
	if len(never.Ops) != 1 {
		t.Fatalf("resolved as never applied: %d ops left, want 1", len(never.Ops))
	}
	if res := check(t, never, ""); !res.OK {
		t.Fatalf("resolved as never applied: got %+v, want OK", res)
	}
}

// A search porcupine cannot finish in time is Unknown, and the simple check
// still catches the over-admission.
func TestCheckTimeoutStillCountsOverCap(t *testing.T) {
	const c, n = "cust-t", 40
	h := History{Caps: map[string]int64{c: n - 1}}
	for i := range n {
		// All concurrent and all allowed: proving that no order works
		// means trying every subset.
		h.Ops = append(h.Ops, op(i, Allow(c, 1), Decision(true), int64(i), int64(1000+i)))
	}
	res, err := Check(context.Background(), h, 50*time.Millisecond, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || !res.Unknown || res.OverCap != 1 || res.PerCustomer[c].Linearizable != porcupine.Unknown {
		t.Fatalf("got %+v, want Unknown with OverCap 1", res)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err = Check(ctx, History{Caps: h.Caps, Ops: h.Ops[:1]}, 0, "")
	if err != nil || res.OK || !res.Unknown {
		t.Fatalf("cancelled ctx: got %+v, %v; want Unknown", res, err)
	}
}

func TestCheckRejectsMalformedHistories(t *testing.T) {
	caps := map[string]int64{"a": 1}
	tests := map[string]porcupine.Operation{
		"customer without a cap": op(0, Allow("b", 1), Decision(true), 0, 1),
		"negative amount":        op(0, Allow("a", -1), Decision(true), 0, 1),
		"foreign input":          {Input: "allow a 1", Output: Decision(true)},
		"return before call":     op(0, Allow("a", 1), Decision(true), 5, 1),
	}
	for name, o := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := Check(context.Background(), History{Caps: caps, Ops: []porcupine.Operation{o}}, 0, ""); err == nil {
				t.Fatal("Check accepted it")
			}
		})
	}
}
