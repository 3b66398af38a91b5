package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
	clusterv1 "github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1"
)

// Routing on a cluster node. Any node accepts any call. A call for a shard this
// node leads runs here; otherwise it goes to the node believed to lead it,
// looked up in this order: the shard's own raft (when a replica is hosted
// here), the leader a previous NOT_LEADER answer named, the shards nodes
// gossip they lead, and finally any replica (which answers NOT_LEADER naming
// the leader). The receiving node never forwards again. Apply carries its
// request id on every attempt, so a call whose outcome is unknown (leadership
// lost, connection cut after sending) is only ever repeated under that id and
// the shard's idempotency table answers the first outcome.

// QueryFunc is a read registered under a kind (Config.Queries): it decodes its
// args, reads the engine (at now, ms) and encodes its answer. It runs on the
// node that leads the shard (or, for stale reads, any replica), so it must not
// modify the engine or keep references into it. An error that is a
// *connect.Error keeps its code across nodes; fsm.ErrNoPolicy keeps its
// identity; anything else arrives as Internal.
type QueryFunc func(e *engine.Engine, now int64, args []byte) ([]byte, error)

// Answer is a query's result and where it came from.
type Answer struct {
	Result []byte
	// PolicyVersion is the policy the shard ran when the read was made.
	PolicyVersion uint64
	// AppliedIndex is the shard's applied index after the read.
	AppliedIndex uint64
	// Node answered; Stale is true when it read its replica without confirming
	// leadership.
	Node  string
	Stale bool
}

// Query runs the registered read kind for the shard that owns key, on this node
// when it can answer, else on the node that can. Linearizable by default (the
// shard's leader confirms its leadership first); stale reads any replica,
// preferring this node's. Errors: ErrUnavailable, the query's own errors (see
// QueryFunc), fsm.ErrNoPolicy.
func (n *Node) Query(ctx context.Context, key string, stale bool, kind string, args []byte) (Answer, error) {
	fn := n.cfg.Queries[kind]
	if fn == nil {
		return Answer{}, fmt.Errorf("cluster: unknown query %q", kind)
	}
	id, err := n.shardID(key)
	if err != nil {
		return Answer{}, err
	}
	if !n.cluster {
		s := n.hosted(id)
		if s == nil {
			return Answer{}, fmt.Errorf("shard %d: %w (not hosted on node %s)", id, ErrNotLeader, n.cfg.NodeID)
		}
		return n.queryShard(ctx, s, stale, fn, args)
	}
	if stale {
		if s := n.hosted(id); s != nil {
			return n.queryShard(ctx, s, true, fn, args)
		}
	}
	var out Answer
	err = n.route(ctx, id, false, func(local bool, to string) (bool, string, error) {
		if local {
			a, err := n.queryShard(ctx, n.hosted(id), stale, fn, args)
			out = a
			return err == nil, "", err
		}
		c, err := n.fwd.client(to)
		if err != nil {
			return false, "", transportError{err}
		}
		resp, err := c.Query(ctx, connect.NewRequest(&clusterv1.QueryRequest{
			Shard: uint32(id), RoutingKey: key, Kind: kind, Args: args, Stale: stale}))
		if err != nil {
			return false, "", transportError{err}
		}
		m := resp.Msg
		if m.Outcome == clusterv1.Outcome_OUTCOME_OK {
			out = Answer{Result: m.Result, PolicyVersion: m.PolicyVersion, AppliedIndex: m.AppliedIndex, Node: m.NodeId, Stale: m.Stale}
			return true, "", nil
		}
		return false, m.LeaderId, outcomeError(m.Outcome, m.Error, m.Message)
	})
	return out, err
}

// queryShard runs fn on s: after linearize unless stale.
func (n *Node) queryShard(ctx context.Context, s *shard, stale bool, fn QueryFunc, args []byte) (Answer, error) {
	if s == nil {
		return Answer{}, fmt.Errorf("%w: shard closed here", ErrNotLeader)
	}
	if !stale {
		if err := n.linearize(ctx, s); err != nil {
			return Answer{}, err
		}
		if err := n.ensurePolicy(ctx, s); err != nil {
			return Answer{}, err
		}
	}
	var out []byte
	index, version, err := s.fsm.ReadAt(func(e *engine.Engine, clock int64) error {
		var err error
		out, err = fn(e, max(time.Now().UnixMilli(), clock), args)
		return err
	})
	return Answer{Result: out, PolicyVersion: version, AppliedIndex: index, Node: n.cfg.NodeID, Stale: stale}, err
}

// LookupRequest answers what the shard that owns key remembers of a request id
// (linearizable, like Query): its original Result (with Duplicate set) and
// true, or false when the id is unknown. An id is unknown when it never applied
// or was forgotten (older than the dedupe window, or pushed out by the table's
// bounds), so false proves "never applied" only within those limits.
func (n *Node) LookupRequest(ctx context.Context, key, requestID string) (*fsm.Result, bool, error) {
	id, err := n.shardID(key)
	if err != nil {
		return nil, false, err
	}
	lookupHere := func() (*fsm.Result, bool, error) {
		s := n.hosted(id)
		if s == nil {
			return nil, false, fmt.Errorf("shard %d: %w (not hosted on node %s)", id, ErrNotLeader, n.cfg.NodeID)
		}
		if err := n.linearize(ctx, s); err != nil {
			return nil, false, err
		}
		r, ok := s.fsm.LookupRequest(requestID)
		return r, ok, nil
	}
	if !n.cluster {
		return lookupHere()
	}
	var res *fsm.Result
	var found bool
	err = n.route(ctx, id, false, func(local bool, to string) (bool, string, error) {
		if local {
			var err error
			res, found, err = lookupHere()
			return err == nil, "", err
		}
		c, err := n.fwd.client(to)
		if err != nil {
			return false, "", transportError{err}
		}
		resp, err := c.Lookup(ctx, connect.NewRequest(&clusterv1.LookupRequest{Shard: uint32(id), RequestId: requestID}))
		if err != nil {
			return false, "", transportError{err}
		}
		m := resp.Msg
		if m.Outcome != clusterv1.Outcome_OUTCOME_OK {
			return false, m.LeaderId, outcomeError(m.Outcome, nil, m.Message)
		}
		found = m.Found
		if found {
			if res, err = fsm.DecodeResult(m.Result); err != nil {
				return false, "", fmt.Errorf("lookup: %w", err)
			}
			res.Duplicate = true
		}
		return true, "", nil
	})
	return res, found, err
}

// applyRouted is Apply on a cluster node.
func (n *Node) applyRouted(ctx context.Context, id int, key string, cmd *fsm.Command) (*fsm.Result, error) {
	var res *fsm.Result
	var data []byte
	err := n.route(ctx, id, true, func(local bool, to string) (bool, string, error) {
		if local {
			s := n.hosted(id)
			if s == nil {
				return false, "", fmt.Errorf("%w: shard closed here", ErrNotLeader)
			}
			r, err := n.applyShard(ctx, s, cmd)
			res = r
			return err == nil, "", err
		}
		if data == nil {
			c := *cmd
			c.Timestamp = 0 // the leader stamps its own clock
			var err error
			if data, err = fsm.EncodeCommand(&c); err != nil {
				return false, "", err
			}
		}
		c, err := n.fwd.client(to)
		if err != nil {
			return false, "", transportError{err}
		}
		resp, err := c.Apply(ctx, connect.NewRequest(&clusterv1.ApplyRequest{Shard: uint32(id), RoutingKey: key, Command: data}))
		if err != nil {
			return false, "", transportError{err}
		}
		m := resp.Msg
		if m.Outcome == clusterv1.Outcome_OUTCOME_OK {
			if res, err = fsm.DecodeResult(m.Result); err != nil {
				return false, "", fmt.Errorf("shard %d: decode forwarded result: %w", id, err)
			}
			return true, "", nil
		}
		return false, m.LeaderId, outcomeError(m.Outcome, m.Error, m.Message)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// transportError is a forwarded call that failed in transit: it may or may not
// have reached the other node.
type transportError struct{ err error }

func (e transportError) Error() string { return "forward: " + e.err.Error() }
func (e transportError) Unwrap() error { return e.err }

// outcomeError turns a remote non-OK outcome into this package's errors.
func outcomeError(out clusterv1.Outcome, e *clusterv1.Error, msg string) error {
	switch out {
	case clusterv1.Outcome_OUTCOME_NOT_LEADER:
		return fmt.Errorf("%w: %s", ErrNotLeader, msg)
	case clusterv1.Outcome_OUTCOME_UNKNOWN:
		return fmt.Errorf("%w: %w: %s", ErrNotLeader, ErrUnknownOutcome, msg)
	case clusterv1.Outcome_OUTCOME_UNAVAILABLE:
		return fmt.Errorf("%w: %s", ErrUnavailable, msg)
	case clusterv1.Outcome_OUTCOME_ERROR, clusterv1.Outcome_OUTCOME_NO_POLICY:
		return remoteError(out, e, msg)
	}
	return fmt.Errorf("%w: unexpected outcome %s: %s", ErrUnavailable, out, msg)
}

// route calls try for shard id on this node (local) or on another (to) until
// it succeeds, fails for good, or ctx ends. try answers done, a leader hint,
// and its error: ErrNotLeader (retry elsewhere, the hint first), ErrUnavailable
// (retry after a pause), ErrUnknownOutcome (mutating calls: remembered, so the
// final error says the call may have been applied), transportError (the
// connection failed: try another node; for mutating calls the outcome is
// unknown). Anything else is final.
func (n *Node) route(ctx context.Context, id int, mutating bool, try func(local bool, to string) (bool, string, error)) error {
	return n.routeWith(ctx, id, mutating, func(skip map[string]bool) (string, bool) { return n.target(id, skip) }, try)
}

// routeWith is route with its own choice of target (the meta group's).
func (n *Node) routeWith(ctx context.Context, id int, mutating bool, target func(skip map[string]bool) (string, bool),
	try func(local bool, to string) (bool, string, error)) error {
	unknown := false
	skip := map[string]bool{}
	var last error = errors.New("no leader known")
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := n.pause(ctx, retryBackoff*time.Duration(min(attempt, 10))); err != nil {
				return unavailableErr(id, errors.Join(last, err), unknown)
			}
		}
		to, local := target(skip)
		if !local && to == "" {
			clear(skip)
			continue
		}
		done, hint, err := try(local, to)
		if !local {
			n.metrics.forward(err)
		}
		if done {
			if !local {
				n.hints.Store(id, to)
			}
			return nil
		}
		last = err
		who := to
		if local {
			who = n.cfg.NodeID
		}
		var te transportError
		switch {
		case errors.As(err, &te):
			if mutating {
				unknown = true
			}
			skip[to] = true
			n.hints.CompareAndDelete(id, to)
			n.logger.Debug("forward failed", "shard", id, "to", to, "err", err)
		case errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrNotLeader):
			if errors.Is(err, ErrUnknownOutcome) && mutating {
				unknown = true
			}
			skip[who] = true
			n.hints.CompareAndDelete(id, who)
			if hint != "" && hint != who && hint != n.cfg.NodeID {
				n.hints.Store(id, hint)
				delete(skip, hint)
			}
		case errors.Is(err, ErrUnavailable):
			if ctx.Err() != nil || n.isClosed() {
				return unavailableErr(id, err, unknown)
			}
		default:
			if unknown {
				return unavailableErr(id, err, true)
			}
			return err
		}
		if ctx.Err() != nil || n.isClosed() {
			cause := err
			if n.isClosed() {
				cause = errors.Join(err, ErrClosed)
			}
			return unavailableErr(id, cause, unknown)
		}
	}
}

// target picks where a call for shard id goes next: this node when it leads
// (or hosts a replica and no leader is known yet), else the node id believed
// to lead. "" when nothing is known.
func (n *Node) target(id int, skip map[string]bool) (string, bool) {
	me := n.cfg.NodeID
	s := n.hosted(id)
	if s != nil && s.group.Raft.State() == raft.Shutdown {
		s = nil // removed from the group; the map will catch up
	}
	if s != nil {
		if s.group.IsLeader() {
			return me, true
		}
		_, lid := s.group.Leader()
		switch {
		case lid == "" && !skip[me]:
			skip[me] = true // wait here once, then look elsewhere
			return me, true
		case lid != "" && string(lid) != me && !skip[string(lid)]:
			return string(lid), false
		}
	}
	// Gossip's view of who is up only orders the candidates: a busy node can
	// look dead to memberlist for a while and still answer, and a node that
	// does not answer is skipped for this call anyway.
	usable := func(node string) bool { return node != "" && node != me && !skip[node] }
	up := func(node string) bool { return n.members != nil && n.members.up(node) }
	if h, ok := n.hints.Load(id); ok && usable(h.(string)) {
		return h.(string), false
	}
	if n.members != nil {
		for node, st := range n.members.snapshot() {
			if st.alive && st.meta.leads(id) && usable(node) {
				return node, false
			}
		}
	}
	if m := n.view(); m != nil && id < len(m.Placement) {
		for _, wantUp := range []bool{true, false} {
			for _, r := range m.Placement[id].Replicas {
				if usable(r) && up(r) == wantUp {
					return r, false
				}
			}
		}
	}
	if s != nil && !skip[me] {
		skip[me] = true
		return me, true
	}
	return "", false
}

// leaderHint names the node this node believes leads shard id ("" unknown).
func (n *Node) leaderHint(id int) string {
	if s := n.hosted(id); s != nil {
		if _, lid := s.group.Leader(); lid != "" {
			return string(lid)
		}
	}
	if h, ok := n.hints.Load(id); ok {
		return h.(string)
	}
	if n.members != nil {
		for node, st := range n.members.snapshot() {
			if st.alive && st.meta.leads(id) {
				return node
			}
		}
	}
	return ""
}
