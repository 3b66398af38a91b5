package bench

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// RegionLatency is simulated network distance between regions, in the syntax of
// the project's fault layer (internal/faultnet): "us-east<->eu-west=40ms" adds 40ms
// to every write in each direction, so a round trip between the two costs 80ms.
// Pairs not named add nothing, and a region is never distant from itself.
//
// The harness cannot delay raft traffic itself: the nodes share the loopback device
// (no tc netem on this kernel), and which peer a connection comes from is only known
// inside the node. The node-to-node port wraps its dialer and listener with
// internal/faultnet (cluster.Config.RaftListener/RaftDial), and docs/cluster-contract.md
// has `capstan serve` take the spec as `--region-latency`; the 3-node-regions target
// passes String() there when `capstan serve -h` lists the flag, and otherwise runs
// without injected latency and says so in the report.
type RegionLatency map[[2]string]time.Duration

// ParseRegionLatency reads "A<->B=DELAY" pairs separated by commas; "A<->B 40ms"
// (a space for the equals sign) is accepted too.
func ParseRegionLatency(s string) (RegionLatency, error) {
	l := RegionLatency{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		pair, dur, ok := strings.Cut(part, "=")
		if !ok {
			i := strings.LastIndexByte(part, ' ')
			if i < 0 {
				return nil, fmt.Errorf("region latency %q: want A<->B=DELAY", part)
			}
			pair, dur = part[:i], part[i+1:]
		}
		a, b, ok := strings.Cut(pair, "<->")
		a, b = strings.TrimSpace(a), strings.TrimSpace(b)
		if !ok || a == "" || b == "" || a == b {
			return nil, fmt.Errorf("region latency %q: want two different regions as A<->B", part)
		}
		d, err := time.ParseDuration(strings.TrimSpace(dur))
		if err != nil || d < 0 {
			return nil, fmt.Errorf("region latency %q: bad duration %q", part, dur)
		}
		l[key(a, b)] = d
	}
	return l, nil
}

func key(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// OneWay is the delay added to each write from region a to region b.
func (l RegionLatency) OneWay(a, b string) time.Duration {
	if a == b {
		return 0
	}
	return l[key(a, b)]
}

// RTT is the round-trip time added between two regions.
func (l RegionLatency) RTT(a, b string) time.Duration { return 2 * l.OneWay(a, b) }

// String writes the pairs back in the syntax ParseRegionLatency reads, sorted.
func (l RegionLatency) String() string {
	var parts []string
	for k, d := range l {
		parts = append(parts, fmt.Sprintf("%s<->%s=%s", k[0], k[1], d))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
