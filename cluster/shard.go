package cluster

import "hash/fnv"

// The customer → shard mapping is persistent: changing it (the hash, the mixer or
// the shard count) would move customers away from their state. The shard count is
// fixed when a data directory is bootstrapped and checked on every open.

// shardFor maps a customer id onto [0, shards) with Google's jump consistent hash
// (Lamping & Veach) over a 64-bit FNV-1a of the id, finished with a splitmix64
// mixer so that ids differing in their last byte spread over all shards.
func shardFor(customer string, shards int) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(customer))
	return jump(mix64(h.Sum64()), shards)
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// jump is the jump consistent hash: growing buckets from n to n+1 moves only
// about 1/(n+1) of the keys. The float64 arithmetic is exact IEEE division and
// multiplication (no fused operations), so every platform agrees.
func jump(key uint64, buckets int) int {
	var b, j int64 = -1, 0
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}
