package cluster

import (
	"fmt"
	"testing"
)

// TestShardForIsStable pins the mapping: a change here moves customers away from
// their state on every existing deployment.
func TestShardForIsStable(t *testing.T) {
	for _, tc := range []struct {
		id        string
		of64, of8 int
	}{{"cus_1", 45, 0}, {"cus_2", 59, 3}, {"acme", 9, 3}, {"", 27, 5}, {"x", 40, 5}} {
		if got := shardFor(tc.id, 64); got != tc.of64 {
			t.Errorf("shardFor(%q, 64) = %d, want %d", tc.id, got, tc.of64)
		}
		if got := shardFor(tc.id, 8); got != tc.of8 {
			t.Errorf("shardFor(%q, 8) = %d, want %d", tc.id, got, tc.of8)
		}
	}
}

func TestShardForSpreadsAndMovesLittle(t *testing.T) {
	const n = 100_000
	counts := make([]int, 64)
	moved := 0
	for i := range n {
		id := fmt.Sprintf("cus_%d", i)
		s := shardFor(id, 64)
		counts[s]++
		// Jump hash: growing to 65 shards moves a key only to the new shard.
		if s2 := shardFor(id, 65); s2 != s {
			if s2 != 64 {
				t.Fatalf("%s moved from %d to %d, not to the new shard", id, s, s2)
			}
			moved++
		}
		if s := shardFor(id, 1); s != 0 {
			t.Fatal("one shard must own everything")
		}
	}
	for s, c := range counts {
		if c < n/64*85/100 || c > n/64*115/100 {
			t.Errorf("shard %d holds %d of %d ids (expected about %d)", s, c, n, n/64)
		}
	}
	if moved < n/65*80/100 || moved > n/65*120/100 {
		t.Errorf("%d ids moved to the 65th shard, expected about %d", moved, n/65)
	}
}
