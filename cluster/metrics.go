package cluster

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// ShardGauge is one hosted shard's cheap-to-read numbers (no hashing, no raft
// round trip): what Node.ShardGauges reports and /metrics exports.
type ShardGauge struct {
	Shard         int
	Leader        bool // this node's replica leads the shard
	AppliedIndex  uint64
	LastIndex     uint64
	Customers     int
	PolicyVersion uint64
}

// ShardGauges reports every shard hosted here, by shard id, from local state
// only: raft's applied/last index and state, and the FSM's Info.
func (n *Node) ShardGauges() []ShardGauge {
	var out []ShardGauge
	for _, s := range n.sorted() {
		info := s.fsm.Info()
		out = append(out, ShardGauge{
			Shard: s.id, Leader: s.group.Raft.State() == raft.Leader,
			AppliedIndex: s.group.Raft.AppliedIndex(), LastIndex: s.group.Raft.LastIndex(),
			Customers: info.Customers, PolicyVersion: info.PolicyVersion,
		})
	}
	return out
}

// Outcome labels of capstan_proposals_total and capstan_forwarded_total.
const (
	outcomeOK        = "ok"
	outcomeNotLeader = "not_leader"
	outcomeUnavail   = "unavailable"
	outcomeUnknown   = "unknown_outcome"
	outcomeTransport = "transport_error" // forwarded only: the call failed in transit
	outcomeErr       = "error"
)

// nodeMetrics are the node's counters; Node.Collector exports them with the
// per-shard and membership gauges computed at scrape time.
type nodeMetrics struct {
	proposals   *prometheus.CounterVec
	proposalDur prometheus.Histogram
	forwarded   *prometheus.CounterVec
	// proposalsBy and forwardedBy hold the vectors' children, resolved once: the request path
	// then counts with a read-only map lookup instead of hashing label values.
	proposalsBy, forwardedBy map[string]prometheus.Counter
	leaderChanges            prometheus.Counter

	isLeader, applied, lastIndex, customers, policyVersion, members *prometheus.Desc
}

func newNodeMetrics() *nodeMetrics {
	shard := []string{"shard"}
	m := &nodeMetrics{
		proposals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "capstan", Name: "proposals_total",
			Help: "Commands this node proposed to a shard's raft log as its leader, by outcome (ok, not_leader, unavailable, unknown_outcome, error).",
		}, []string{"outcome"}),
		proposalDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "capstan", Name: "proposal_duration_seconds",
			Help:    "Time to propose a command on this node and see it applied (including waiting for an in-flight slot and retries), any outcome.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "capstan", Name: "forwarded_total",
			Help: "Call attempts this node forwarded to another node (each retry counts), by outcome (ok, not_leader, unavailable, unknown_outcome, transport_error, error).",
		}, []string{"outcome"}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "capstan", Name: "leader_changes_total",
			Help: "Times this node won leadership of a shard (as seen by its 100ms leadership check).",
		}),
		isLeader:      prometheus.NewDesc("capstan_shard_is_leader", "1 when this node's replica leads the shard, else 0.", shard, nil),
		applied:       prometheus.NewDesc("capstan_shard_applied_index", "Last raft log index applied to this node's replica of the shard.", shard, nil),
		lastIndex:     prometheus.NewDesc("capstan_shard_last_log_index", "Last raft log index stored by this node's replica of the shard.", shard, nil),
		customers:     prometheus.NewDesc("capstan_shard_customers", "Customers in this node's replica of the shard.", shard, nil),
		policyVersion: prometheus.NewDesc("capstan_shard_policy_version", "Policy version this node's replica of the shard runs (0: none yet).", shard, nil),
		members:       prometheus.NewDesc("capstan_cluster_members", "Nodes by state (alive, suspect, dead, left, removed) as this node sees them; a standalone node reports itself alive.", []string{"state"}, nil),
	}
	m.proposalsBy, m.forwardedBy = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	for _, o := range []string{outcomeOK, outcomeNotLeader, outcomeUnavail, outcomeUnknown, outcomeErr} {
		m.proposalsBy[o] = m.proposals.WithLabelValues(o)
		m.forwardedBy[o] = m.forwarded.WithLabelValues(o)
	}
	m.forwardedBy[outcomeTransport] = m.forwarded.WithLabelValues(outcomeTransport)
	return m
}

// metricOutcome classifies a proposal's or forwarded call's error.
func metricOutcome(err error) string {
	var te transportError
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrUnknownOutcome):
		return outcomeUnknown
	case errors.As(err, &te):
		return outcomeTransport
	case errors.Is(err, ErrNotLeader):
		return outcomeNotLeader
	case errors.Is(err, ErrUnavailable):
		return outcomeUnavail
	}
	return outcomeErr
}

func (m *nodeMetrics) proposal(start time.Time, err error) {
	m.proposalDur.Observe(time.Since(start).Seconds())
	countOutcome(m.proposalsBy, err)
}

func (m *nodeMetrics) forward(err error) { countOutcome(m.forwardedBy, err) }

func countOutcome(by map[string]prometheus.Counter, err error) {
	c, ok := by[metricOutcome(err)]
	if !ok { // an outcome this vector does not list (transport on a proposal)
		c = by[outcomeErr]
	}
	c.Inc()
}

// Collector exports the node's metrics: per hosted shard (label shard)
// capstan_shard_is_leader, _applied_index, _last_log_index, _customers and
// _policy_version; capstan_proposals_total{outcome},
// capstan_proposal_duration_seconds, capstan_forwarded_total{outcome},
// capstan_leader_changes_total and capstan_cluster_members{state}. A scrape
// reads local state only. Register it once (rpc.NewMux does).
func (n *Node) Collector() prometheus.Collector { return nodeCollector{n} }

type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	m := c.n.metrics
	m.proposals.Describe(ch)
	m.proposalDur.Describe(ch)
	m.forwarded.Describe(ch)
	m.leaderChanges.Describe(ch)
	for _, d := range []*prometheus.Desc{m.isLeader, m.applied, m.lastIndex, m.customers, m.policyVersion, m.members} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.n.metrics
	m.proposals.Collect(ch)
	m.proposalDur.Collect(ch)
	m.forwarded.Collect(ch)
	m.leaderChanges.Collect(ch)
	for _, g := range c.n.ShardGauges() {
		id := strconv.Itoa(g.Shard)
		leader := 0.0
		if g.Leader {
			leader = 1
		}
		ch <- prometheus.MustNewConstMetric(m.isLeader, prometheus.GaugeValue, leader, id)
		ch <- prometheus.MustNewConstMetric(m.applied, prometheus.GaugeValue, float64(g.AppliedIndex), id)
		ch <- prometheus.MustNewConstMetric(m.lastIndex, prometheus.GaugeValue, float64(g.LastIndex), id)
		ch <- prometheus.MustNewConstMetric(m.customers, prometheus.GaugeValue, float64(g.Customers), id)
		ch <- prometheus.MustNewConstMetric(m.policyVersion, prometheus.GaugeValue, float64(g.PolicyVersion), id)
	}
	counts := map[string]int{StateAlive: 0, StateSuspect: 0, StateDead: 0, StateLeft: 0, StateRemoved: 0}
	if members, err := c.n.Members(context.Background()); err == nil { // local view only: gossip and the cached map
		for _, mem := range members {
			counts[mem.State]++
		}
	}
	for state, k := range counts {
		ch <- prometheus.MustNewConstMetric(m.members, prometheus.GaugeValue, float64(k), state)
	}
}
