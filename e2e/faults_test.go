//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Fault timing: how long a fault lasts and how long the cluster may take to
// be healthy again afterwards.
const (
	faultHold    = 10 * time.Second
	recoverLimit = 3 * time.Minute
	steadyGap    = 5 * time.Second // clean traffic between faults
)

// fault is one injected fault, for the summary.
type fault struct {
	Name    string
	At      time.Duration // since the harness started
	Recover time.Duration // from healing until every live node was healthy again
}

func (f fault) String() string {
	return fmt.Sprintf("%s @%.0fs (healthy %.0fs after healing)", f.Name, f.At.Seconds(), f.Recover.Seconds())
}

// faultStep injects one fault, heals it, and returns its name.
type faultStep func(ctx context.Context, h *harness, w *workload, rng *rand.Rand) (string, error)

// inject runs steps one after the other with steady traffic in between,
// waiting for every live node to be healthy after each.
func (h *harness) inject(ctx context.Context, w *workload, steps []faultStep) ([]fault, error) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	var done []fault
	for _, step := range steps {
		sleep(ctx, steadyGap)
		at := time.Since(h.start)
		name, err := step(ctx, h, w, rng)
		if err != nil {
			return done, fmt.Errorf("fault %q: %w", name, err)
		}
		healed := time.Now()
		if err := h.waitHealthy(ctx, recoverLimit, w.liveNodes()...); err != nil {
			return done, fmt.Errorf("after %s: %w", name, err)
		}
		done = append(done, fault{Name: name, At: at, Recover: time.Since(healed)})
	}
	return done, nil
}

// killLeader kills (SIGKILL) the container of a random shard's leader, then
// starts it again.
func killLeader(ctx context.Context, h *harness, w *workload, rng *rand.Rand) (string, error) {
	n, shard, err := h.someLeader(ctx, w.liveNodes(), rng)
	if err != nil {
		return "kill leader", err
	}
	name := fmt.Sprintf("docker kill %s (leader of shard %d)", n.ID, shard)
	h.logf("fault: %s", name)
	if _, err := h.docker(ctx, "kill", n.Container); err != nil {
		return name, err
	}
	sleep(ctx, faultHold)
	_, err = h.docker(ctx, "start", n.Container)
	h.logf("heal: docker start %s", n.ID)
	return name, err
}

// someLeader picks a random shard with a leader (leadership may be moving
// for balance, so a shard can be briefly without one) and returns its
// leader's node.
func (h *harness) someLeader(ctx context.Context, live []string, rng *rand.Rand) (node, uint32, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := h.status(ctx, live[rng.IntN(len(live))])
		if err == nil {
			rng.Shuffle(len(st.Shards), func(i, j int) { st.Shards[i], st.Shards[j] = st.Shards[j], st.Shards[i] })
			for _, sh := range st.Shards {
				if n, ok := nodeByID(sh.Leader); ok && slices.Contains(live, n.ID) {
					return n, sh.Shard, nil
				}
			}
			err = fmt.Errorf("no shard has a leader among %v", live)
		}
		if time.Now().After(deadline) {
			return node{}, 0, err
		}
		sleep(ctx, time.Second)
	}
}

// pauseNode freezes a random live node (SIGSTOP to every process: it holds
// its connections open and answers nothing), then unfreezes it.
func pauseNode(ctx context.Context, h *harness, w *workload, rng *rand.Rand) (string, error) {
	live := w.liveNodes()
	n, _ := nodeByID(live[rng.IntN(len(live))])
	name := fmt.Sprintf("docker pause %s %s", n.ID, faultHold)
	h.logf("fault: %s", name)
	if _, err := h.docker(ctx, "pause", n.Container); err != nil {
		return name, err
	}
	sleep(ctx, faultHold)
	_, err := h.docker(ctx, "unpause", n.Container)
	h.logf("heal: docker unpause %s", n.ID)
	return name, err
}

// disconnectRegion cuts every live node of a random region off the compose
// network (peers and clients alike: the region is partitioned from the rest),
// then reconnects each with its address and alias. Every shard keeps a voter
// in each of the other two regions, so the majority side keeps deciding.
func disconnectRegion(ctx context.Context, h *harness, w *workload, rng *rand.Rand) (string, error) {
	byRegion := map[string][]node{}
	var regions []string
	for _, id := range w.liveNodes() {
		n, _ := nodeByID(id)
		if len(byRegion[n.Region]) == 0 {
			regions = append(regions, n.Region)
		}
		byRegion[n.Region] = append(byRegion[n.Region], n)
	}
	slices.Sort(regions)
	region := regions[rng.IntN(len(regions))]
	cut := byRegion[region]
	var ids []string
	for _, n := range cut {
		ids = append(ids, n.ID)
	}
	name := fmt.Sprintf("docker network disconnect region %s (%s) %s", region, strings.Join(ids, " "), faultHold)
	h.logf("fault: %s", name)
	for _, n := range cut {
		if _, err := h.docker(ctx, "network", "disconnect", network, n.Container); err != nil {
			return name, err
		}
	}
	sleep(ctx, faultHold)
	var err error
	for _, n := range cut {
		if _, e := h.docker(ctx, "network", "connect", "--ip", n.IP, "--alias", n.ID, network, n.Container); e != nil && err == nil {
			err = e
		}
	}
	h.logf("heal: docker network connect %s", strings.Join(ids, " "))
	return name, err
}

// restartAll restarts every container at once (docker-compose restart).
func restartAll(ctx context.Context, h *harness, w *workload, rng *rand.Rand) (string, error) {
	name := "docker-compose restart (all nodes)"
	h.logf("fault: %s", name)
	_, err := h.compose(ctx, "restart", "--timeout", "5")
	h.logf("heal: restarted")
	return name, err
}

// replaceNode adds the spare node (n6, which joins the running cluster
// through its --join seeds), waits until it is healthy and a member, then
// removes a node of a region that has two (AdminService.RemoveNode: out of
// every raft group, replacement replicas placed, out of gossip) and deletes
// its container. Clients homed on the removed node move to the spare.
func replaceNode(ctx context.Context, h *harness, w *workload, rng *rand.Rand) (string, error) {
	spare := ""
	for _, n := range nodes {
		if n.Spare && !slices.Contains(w.liveNodes(), n.ID) {
			spare = n.ID
			break
		}
	}
	if spare == "" {
		return "replace node", fmt.Errorf("no spare node left")
	}
	live := w.liveNodes()
	perRegion := map[string]int{}
	for _, id := range live {
		n, _ := nodeByID(id)
		perRegion[n.Region]++
	}
	var candidates []string
	for _, id := range live {
		if n, _ := nodeByID(id); perRegion[n.Region] >= 2 {
			candidates = append(candidates, id)
		}
	}
	if len(candidates) == 0 {
		return "replace node", fmt.Errorf("no region has two nodes")
	}
	victim := candidates[rng.IntN(len(candidates))]
	name := fmt.Sprintf("add %s, RemoveNode %s", spare, victim)
	h.logf("fault: docker-compose up -d %s (joins the cluster)", spare)
	if _, err := h.compose(ctx, "up", "-d", "--no-deps", "--no-build", spare); err != nil {
		return name, err
	}
	if err := h.waitHealthy(ctx, recoverLimit, spare); err != nil {
		return name, err
	}
	if err := h.waitMember(ctx, live[0], spare, "alive", time.Minute); err != nil {
		return name, err
	}
	w.addNode(spare)

	var other string
	for _, id := range live {
		if id != victim {
			other = id
			break
		}
	}
	h.logf("fault: AdminService.RemoveNode %s (via %s)", victim, other)
	res, err := h.removeNode(ctx, other, victim, 2*time.Minute)
	if err != nil {
		return name, err
	}
	h.logf("removed %s from shards %v; replacements %v", victim, res.Shards, res.Replacements)
	if err := h.waitMember(ctx, other, victim, "removed", time.Minute); err != nil {
		return name, err
	}
	w.removeNode(victim, spare)
	n, _ := nodeByID(victim)
	if _, err := h.docker(ctx, "rm", "-f", "-v", n.Container); err != nil {
		return name, err
	}
	h.logf("heal: container %s deleted; clients homed on it now call %s", victim, spare)
	return name, nil
}

// allFaults is the order faults run in.
func allFaults() []faultStep {
	return []faultStep{killLeader, pauseNode, disconnectRegion, replaceNode, restartAll, killLeader}
}
