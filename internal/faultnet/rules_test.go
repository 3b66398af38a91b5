package faultnet

import (
	"testing"
	"time"
)

var (
	east1 = Endpoint{Node: "n1", Region: "us-east"}
	east2 = Endpoint{Node: "n2", Region: "us-east"}
	west3 = Endpoint{Node: "n3", Region: "eu-west"}
	ap4   = Endpoint{Node: "n4", Region: "ap"}
)

func TestRulesLatencyAndPartitions(t *testing.T) {
	tests := []struct {
		name        string
		spec        string
		local       Endpoint
		remote      Endpoint
		latency     time.Duration
		partitioned bool
	}{
		{"no rules", "", east1, west3, 0, false},
		{"region pair, forward", "us-east<->eu-west=40ms", east1, west3, 40 * time.Millisecond, false},
		{"region pair, backward", "us-east<->eu-west=40ms", west3, east1, 40 * time.Millisecond, false},
		{"region pair does not touch others", "us-east<->eu-west=40ms", east1, ap4, 0, false},
		{"one way only", "us-east->ap=120ms", ap4, east1, 0, false},
		{"one way forward", "us-east->ap=120ms", east1, ap4, 120 * time.Millisecond, false},
		{"node beats region", "us-east<->eu-west=40ms,n1->n3=5ms", east1, west3, 5 * time.Millisecond, false},
		{"region beats wildcard", "*<->*=1ms,us-east<->eu-west=40ms", east1, west3, 40 * time.Millisecond, false},
		{"wildcard", "*<->*=1ms", east1, east2, time.Millisecond, false},
		{"zero removes", "us-east<->eu-west=40ms,us-east<->eu-west=0", east1, west3, 0, false},
		{"region partition", "us-east<->eu-west=drop", west3, east1, 0, true},
		{"region partition spares the rest", "us-east<->eu-west=drop", east1, east2, 0, false},
		{"isolate one node", "n1<->*=drop", east1, east2, 0, true},
		{"isolated node, others fine", "n1<->*=drop", east2, west3, 0, false},
		{"heal", "us-east<->eu-west=drop,eu-west<->us-east=heal", east1, west3, 0, false},
		{"partition keeps latency", "us-east<->eu-west=40ms,n1<->n3=drop", east1, west3, 40 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRules()
			if err := r.Set(tt.spec); err != nil {
				t.Fatal(err)
			}
			if got := r.Latency(tt.local, tt.remote); got != tt.latency {
				t.Errorf("Latency(%s, %s) = %s, want %s", tt.local, tt.remote, got, tt.latency)
			}
			if got := r.Partitioned(tt.local, tt.remote); got != tt.partitioned {
				t.Errorf("Partitioned(%s, %s) = %v, want %v", tt.local, tt.remote, got, tt.partitioned)
			}
			// String renders a spec that means the same.
			again := NewRules()
			if err := again.Set(r.String()); err != nil {
				t.Fatalf("Set(String()=%q): %v", r.String(), err)
			}
			if again.String() != r.String() {
				t.Errorf("String round trip: %q then %q", r.String(), again.String())
			}
		})
	}
}

func TestRulesString(t *testing.T) {
	r := NewRules()
	if err := r.Set(" us-east<->eu-west=40ms , eu-west->ap=7ms,us-east<->ap=drop "); err != nil {
		t.Fatal(err)
	}
	if got, want := r.String(), "ap<->us-east=drop,eu-west->ap=7ms,eu-west<->us-east=40ms"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	r.HealAll()
	if got, want := r.String(), "eu-west->ap=7ms,eu-west<->us-east=40ms"; got != want {
		t.Fatalf("after HealAll String() = %q, want %q", got, want)
	}
}

func TestRulesRejectBadSpecsAndKeepOldRules(t *testing.T) {
	for _, spec := range []string{
		"us-east<->eu-west",
		"us-east<->eu-west=fast",
		"us-east<->eu-west=-5ms",
		"us-east<->eu-west=2h",
		"us-east->eu-west=drop",
		"us-east<->=40ms",
		"us east<->eu-west=40ms",
		"us-east<->eu-west=40ms,bad",
	} {
		t.Run(spec, func(t *testing.T) {
			r := NewRules()
			r.SetLatency("a", "b", time.Second)
			if err := r.Set(spec); err == nil {
				t.Fatal("Set accepted it")
			}
			if err := r.Update(spec); err == nil {
				t.Fatal("Update accepted it")
			}
			if got := r.String(); got != "a->b=1s" {
				t.Fatalf("rules changed to %q", got)
			}
		})
	}
}

func TestUpdateMergesAndSetReplaces(t *testing.T) {
	r := NewRules()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Set("us-east<->eu-west=40ms"))
	must(r.Update("us-east<->ap=drop"))
	if !r.Partitioned(east1, ap4) || r.Latency(east1, west3) != 40*time.Millisecond {
		t.Fatalf("Update lost a rule: %q", r.String())
	}
	must(r.Set("us-east<->ap=10ms"))
	if r.Partitioned(east1, ap4) || r.Latency(east1, west3) != 0 {
		t.Fatalf("Set kept an old rule: %q", r.String())
	}
}
