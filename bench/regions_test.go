package bench

import (
	"testing"
	"time"
)

func TestParseRegionLatency(t *testing.T) {
	l, err := ParseRegionLatency("us-east<->eu-west=40ms, eu-west<->ap-south 120ms,us-east<->ap-south=90ms")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		a, b string
		want time.Duration
	}{
		{"us-east", "eu-west", 40 * time.Millisecond},
		{"eu-west", "us-east", 40 * time.Millisecond},
		{"ap-south", "eu-west", 120 * time.Millisecond},
		{"us-east", "us-east", 0},
		{"us-east", "mars", 0},
	} {
		if got := l.OneWay(c.a, c.b); got != c.want {
			t.Errorf("OneWay(%s, %s) = %s, want %s", c.a, c.b, got, c.want)
		}
	}
	if got := l.RTT("us-east", "eu-west"); got != 80*time.Millisecond {
		t.Errorf("RTT = %s, want twice the one-way delay", got)
	}
	back, err := ParseRegionLatency(l.String())
	if err != nil || len(back) != 3 || back.OneWay("us-east", "ap-south") != 90*time.Millisecond {
		t.Errorf("round trip through String: %v %v", back, err)
	}
	for _, bad := range []string{"us-east=40ms", "a<->a=1ms", "a<->b=soon", "a<->b=-1ms", "<->b=1ms"} {
		if _, err := ParseRegionLatency(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
