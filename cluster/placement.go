package cluster

import (
	"cmp"
	"slices"
)

// Placement rules, applied once at formation and again for each replacement:
//
//   - a shard's replicas spread over distinct regions first (a region outage
//     then costs each shard at most one replica while there are enough
//     regions), then over the nodes holding the fewest replicas;
//   - home regions go round-robin over the sorted regions, and the first
//     replica is placed in the home region on the node with the fewest homes so
//     far, so leadership (which prefers the home region) is even across nodes.

// place lays out shards over nodes (any order) with replicas voters each.
func place(shards, replicas int, nodes []*nodeInfo) []*placement {
	nodes = slices.Clone(nodes)
	slices.SortFunc(nodes, func(a, b *nodeInfo) int { return cmp.Compare(a.ID, b.ID) })
	replicas = min(replicas, len(nodes))
	var regions []string
	for _, n := range nodes {
		if !slices.Contains(regions, n.Region) {
			regions = append(regions, n.Region)
		}
	}
	slices.Sort(regions)
	count := map[string]int{}
	homes := map[string]int{}
	out := make([]*placement, shards)
	for s := range shards {
		home := regions[s%len(regions)]
		var chosen []string
		used := map[string]bool{}
		for k := 0; k < replicas; k++ {
			var best *nodeInfo
			var bestKey [4]int
			for i, n := range nodes {
				if slices.Contains(chosen, n.ID) {
					continue
				}
				// rotate ties so equal nodes take turns
				rot := (i - s%len(nodes) + len(nodes)) % len(nodes)
				var key [4]int
				if k == 0 {
					key = [4]int{b2i(n.Region != home), homes[n.ID], count[n.ID], rot}
				} else {
					key = [4]int{b2i(used[n.Region]), count[n.ID], 0, rot}
				}
				if best == nil || slices.Compare(key[:], bestKey[:]) < 0 {
					best, bestKey = n, key
				}
			}
			chosen = append(chosen, best.ID)
			used[best.Region] = true
			count[best.ID]++
			if k == 0 && best.Region == home {
				homes[best.ID]++
			}
		}
		out[s] = &placement{Replicas: chosen, Home: home}
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// replacementFor picks a node to take over removed's replica of shard: a live
// node not already a replica, preferring regions the remaining replicas do not
// cover, then nodes that are up, then the fewest replicas held. "" when there
// is none.
func replacementFor(m *clusterMap, shard int, removed string, up func(id string) bool) string {
	p := m.Placement[shard]
	used := map[string]bool{}
	for _, id := range p.Replicas {
		if id != removed && m.Nodes[id] != nil {
			used[m.Nodes[id].Region] = true
		}
	}
	count := map[string]int{}
	for _, q := range m.Placement {
		for _, id := range q.Replicas {
			count[id]++
		}
	}
	best, bestKey := "", [3]int{}
	for _, n := range m.liveNodes() {
		if n.ID == removed || slices.Contains(p.Replicas, n.ID) {
			continue
		}
		key := [3]int{b2i(used[n.Region]), b2i(!up(n.ID)), count[n.ID]}
		if best == "" || slices.Compare(key[:], bestKey[:]) < 0 {
			best, bestKey = n.ID, key
		}
	}
	return best
}
