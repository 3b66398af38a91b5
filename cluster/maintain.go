package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	clusterv1 "github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1"
	"github.com/capstanhq/capstan/internal/raftgroup"
)

// Housekeeping a cluster node does for the shards it leads:
//
//   - policy: a shard behind the map's policy version gets it through its log
//     (at once when leadership is won, then every MaintainInterval), so every
//     shard converges on the newest policy even when SetPolicy failed halfway;
//   - voters: replicas the map places on a shard are added and changed raft
//     addresses updated (checked first against the placement read through the
//     meta log, since this node's copy of the map may lag), nodes marked
//     removed are taken out, all through the group's log (never by editing
//     files);
//   - leadership: a leader outside the shard's home region hands leadership to
//     a home-region replica, and within the home region leadership moves from
//     a node leading more shards to a replica leading at least two fewer (one
//     transfer per node per interval, so the balance settles without
//     thrashing), except on shards whose leadership is on hold after an
//     operator's explicit transfer (see leadershipHold).

// leadershipLoop notices which shards this node leads (every 100ms), gossips
// the set and catches newly led shards up with the policy.
func (n *Node) leadershipLoop() {
	defer n.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.closed:
			return
		case <-t.C:
		}
		if n.retired.Load() {
			continue
		}
		var led []int
		now := map[int]bool{}
		for _, s := range n.sorted() {
			if s.group.IsLeader() {
				led = append(led, s.id)
				now[s.id] = true
				n.ledMu.Lock()
				won := !n.led[s.id]
				n.ledMu.Unlock()
				if won {
					n.metrics.leaderChanges.Inc()
					n.catchUpPolicy(s)
				}
			}
		}
		n.ledMu.Lock()
		n.led = now
		n.ledMu.Unlock()
		n.members.update(func(g *gossipMeta) { g.Leads = leadsBitmap(led) })
	}
}

func policyRequestID(version uint64) string {
	return "set-policy-v" + strconv.FormatUint(version, 10)
}

// catchUpPolicy runs ensurePolicy on s in the background (one at a time per
// shard), so a shard whose leadership was just won converges on the map's
// policy even when no call arrives to do it inline.
func (n *Node) catchUpPolicy(s *shard) {
	m := n.view()
	if m == nil || m.Policy.Version == 0 || s.fsm.PolicyVersion() >= m.Policy.Version {
		return
	}
	if _, busy := n.catchingUp.LoadOrStore(s.id, true); busy {
		return
	}
	n.wg.Go(func() {
		defer n.catchingUp.Delete(s.id)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.ensurePolicy(ctx, s) // logs its own outcome
	})
}

func (n *Node) maintainLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.MaintainInterval)
	defer t.Stop()
	for {
		select {
		case <-n.closed:
			return
		case <-t.C:
		}
		m := n.view()
		if m == nil || n.retired.Load() || n.members.localMeta().Leaving {
			continue // draining: leadership only moves away
		}
		for _, s := range n.sorted() {
			if s.group.IsLeader() && s.id < len(m.Placement) {
				n.catchUpPolicy(s)
				n.fixVoters(s, m)
			}
		}
		n.balance(m)
	}
}

// fixVoters makes s's raft configuration follow the map (see the file comment).
func (n *Node) fixVoters(s *shard, m *clusterMap) {
	f := s.group.Raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	conf := map[string]raft.Server{}
	for _, srv := range f.Configuration().Servers {
		conf[string(srv.ID)] = srv
	}
	for id, srv := range conf {
		if ni := m.Nodes[id]; ni != nil && ni.Removed {
			n.logger.Info("removing a removed node from a shard", "shard", s.id, "peer", id)
			if err := s.group.RemoveServer(string(srv.ID)); err != nil {
				n.logger.Warn("remove server", "shard", s.id, "peer", id, "err", err)
			}
		}
	}
	var add []string
	for _, r := range m.Placement[s.id].Replicas {
		addr := n.raftAddrOf(r)
		srv, ok := conf[r]
		if addr != "" && r != n.cfg.NodeID && ((!ok && n.members.up(r)) || (ok && string(srv.Address) != addr)) {
			add = append(add, r)
		}
	}
	if len(add) == 0 {
		return
	}
	// This node's copy of the map may lag the meta group: RemoveNode takes a
	// node out of the map and then out of the group, so a stale map would add
	// it straight back. Act only on the placement read through the meta log.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fresh, err := n.metaApply(ctx, &metaCommand{Op: metaRead, Shard: s.id})
	if err != nil || fresh.Err != "" {
		n.logger.Debug("reading the placement before changing voters", "shard", s.id, "err", err)
		return
	}
	for _, r := range add {
		if !slices.Contains(fresh.Replicas, r) {
			continue
		}
		addr := n.raftAddrOf(r)
		if _, ok := conf[r]; ok {
			n.logger.Info("updating a replica's raft address", "shard", s.id, "peer", r, "from", conf[r].Address, "to", addr)
		} else {
			n.logger.Info("adding a replica the map places on a shard", "shard", s.id, "peer", r)
		}
		if err := s.group.AddVoter(r, addr); err != nil {
			n.logger.Warn("add voter", "shard", s.id, "peer", r, "err", err)
		}
	}
}

// balance makes at most one leadership transfer (see the file comment).
func (n *Node) balance(m *clusterMap) {
	me := n.cfg.NodeID
	leads := map[string]int{}
	for id, st := range n.members.snapshot() {
		if st.alive {
			for i := 0; i+2 <= len(st.meta.Leads); i += 2 {
				b, _ := strconv.ParseUint(st.meta.Leads[i:i+2], 16, 8)
				leads[id] += bits.OnesCount8(uint8(b))
			}
		}
	}
	var mine []*shard
	for _, s := range n.sorted() {
		if s.group.IsLeader() && s.id < len(m.Placement) {
			mine = append(mine, s)
		}
	}
	leads[me] = len(mine)
	for _, s := range mine {
		home := m.Placement[s.id].Home
		if n.held(s, home) {
			continue
		}
		best := ""
		for _, r := range n.voters(s) {
			ni := m.Nodes[r]
			if r == me || ni == nil || ni.Removed || ni.Region != home || !n.members.up(r) || n.members.leaving(r) {
				continue
			}
			if best == "" || leads[r] < leads[best] {
				best = r
			}
		}
		if best == "" || (n.cfg.Region == home && leads[best]+1 >= leads[me]) {
			continue
		}
		n.logger.Info("moving leadership toward balance", "shard", s.id, "to", best, "home", home,
			"leads_here", leads[me], "leads_there", leads[best])
		if err := s.group.TransferLeadership(best, n.raftAddrOf(best)); err != nil {
			n.logger.Debug("leadership transfer", "shard", s.id, "to", best, "err", err)
		}
		return
	}
}

// leadershipHold keeps an operator's TransferLeadership from being undone at
// once: without it the new leader's balancer would move a shard taken out of
// its home region straight back (within one MaintainInterval, sometimes
// before the old leader even saw the new one). Just before the transfer the
// old leader asks the target (every other voter that is up when raft picks
// the target) to hold the shard; a voter that then leads it in a term up to
// the one the transfer's election starts leaves it where it is for
// Config.TransferHold, unless the shard's home region changes meanwhile
// (SetShardHome is the newer intent). A hold only pauses the balancer:
// draining on shutdown and elections move leadership as usual, and
// leadership won later in another term is not held.
type leadershipHold struct {
	term  uint64    // leadership won in a term up to this one is held
	until time.Time // then the balancer takes over again
	home  string    // the shard's home region when the hold was asked
}

// holdLeadership records a hold on shard id (see leadershipHold).
func (n *Node) holdLeadership(id int, term uint64) {
	home := ""
	if m := n.view(); m != nil && id >= 0 && id < len(m.Placement) {
		home = m.Placement[id].Home
	}
	n.holds.Store(id, leadershipHold{term: term, until: time.Now().Add(n.cfg.TransferHold), home: home})
	n.logger.Info("holding leadership after an explicit transfer", "shard", id, "term", term, "for", n.cfg.TransferHold)
}

// held reports whether the balancer must leave s, which this node leads,
// alone (home: the shard's home region now); it forgets a hold that ended.
func (n *Node) held(s *shard, home string) bool {
	v, ok := n.holds.Load(s.id)
	if !ok {
		return false
	}
	h := v.(leadershipHold)
	if time.Now().Before(h.until) && h.home == home && s.group.Raft.CurrentTerm() <= h.term {
		return true
	}
	n.holds.CompareAndDelete(s.id, v)
	return false
}

// holdAskTimeout bounds the wait for each voter's answer to askHold.
const holdAskTimeout = time.Second

// askHold asks voters to hold shard id's leadership should they win it in a
// term up to term: best effort, in parallel, each answer within
// holdAskTimeout. A voter that does not answer is only logged (the transfer
// goes ahead; its balancer may then move leadership back early).
func (n *Node) askHold(ctx context.Context, id int, voters []string, term uint64) {
	var wg sync.WaitGroup
	for _, v := range voters {
		if n.members != nil && !n.members.up(v) {
			continue // down: it cannot win the election
		}
		wg.Go(func() {
			err := func() error {
				c, err := n.fwd.client(v)
				if err != nil {
					return err
				}
				cctx, cancel := context.WithTimeout(ctx, holdAskTimeout)
				defer cancel()
				resp, err := c.ShardOp(cctx, connect.NewRequest(&clusterv1.ShardOpRequest{
					Group: uint32(id), Op: clusterv1.ShardOp_SHARD_OP_HOLD_LEADERSHIP, Term: term}))
				if err != nil {
					return err
				}
				if resp.Msg.Outcome != clusterv1.Outcome_OUTCOME_OK {
					return fmt.Errorf("%s: %s", resp.Msg.Outcome, resp.Msg.Message)
				}
				return nil
			}()
			if err != nil {
				n.logger.Warn("asking a voter to hold leadership after a transfer (its balancer may move leadership back early)",
					"shard", id, "peer", v, "err", err)
			}
		})
	}
	wg.Wait()
}

// transferSettle bounds how long a completed leadership transfer waits to
// hear who leads now.
const transferSettle = time.Second

// leaderAfterTransfer is the leader g knows after a transfer that raft
// confirmed (this node stepped down in a term after term0): the first leader
// heard of within transferSettle, possibly this node again if leadership came
// straight back in a later term; "" when none was heard of. It never waits
// for a leader other than itself to show up: one that hands leadership
// straight back may never be seen from here.
func (n *Node) leaderAfterTransfer(ctx context.Context, g *raftgroup.Group, term0 uint64) string {
	wctx, cancel := context.WithTimeout(ctx, transferSettle)
	defer cancel()
	for {
		if _, lid := g.Leader(); lid != "" && (string(lid) != g.ID() || g.Raft.CurrentTerm() > term0) {
			return string(lid)
		}
		if n.pause(wctx, 5*time.Millisecond) != nil {
			return ""
		}
	}
}

// voters are s's voters per its raft configuration.
func (n *Node) voters(s *shard) []string {
	f := s.group.Raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			out = append(out, string(srv.ID))
		}
	}
	return out
}

// transferTarget picks who takes over s when this node shuts down: a voter in
// the shard's home region that is up, else ("", "") for raft's choice.
func (n *Node) transferTarget(s *shard) (string, string) {
	if !n.cluster || n.members == nil {
		return "", ""
	}
	m := n.view()
	if m == nil || s.id >= len(m.Placement) {
		return "", ""
	}
	for _, r := range n.voters(s) {
		if ni := m.Nodes[r]; r != n.cfg.NodeID && ni != nil && ni.Region == m.Placement[s.id].Home && n.members.up(r) && !n.members.leaving(r) {
			return r, n.raftAddrOf(r)
		}
	}
	return "", ""
}

func (n *Node) groupOf(id int) *raftgroup.Group {
	if id == MetaGroup {
		return n.metaG
	}
	if s := n.hosted(id); s != nil {
		return s.group
	}
	return nil
}

// shardOpLocal runs a leadership or voter change on group id, which this node
// must lead. It answers the group's leader afterwards.
func (n *Node) shardOpLocal(ctx context.Context, id int, op clusterv1.ShardOp, node, addr string) (string, error) {
	g := n.groupOf(id)
	if g == nil {
		return n.leaderHint(id), fmt.Errorf("group %d: %w: not hosted here", id, ErrNotLeader)
	}
	if !g.IsLeader() {
		_, lid := g.Leader()
		return string(lid), fmt.Errorf("group %d: %w", id, ErrNotLeader)
	}
	var err error
	var term0 uint64 // the term before a leadership transfer
	switch op {
	case clusterv1.ShardOp_SHARD_OP_TRANSFER_LEADERSHIP:
		if node == g.ID() {
			return node, nil
		}
		var others []string
		addr = ""
		f := g.Raft.GetConfiguration()
		if f.Error() == nil {
			for _, srv := range f.Configuration().Servers {
				if srv.Suffrage == raft.Voter && string(srv.ID) != g.ID() {
					others = append(others, string(srv.ID))
					if string(srv.ID) == node {
						addr = string(srv.Address)
					}
				}
			}
		}
		switch {
		case node != "" && addr == "":
			return g.ID(), invalidCommand("to_node", "%s is not a voter of group %d", node, id)
		case len(others) == 0:
			return g.ID(), invalidCommand("shard", "group %d has no other voter to hand leadership to", id)
		case node != "":
			others = []string{node}
		}
		term0 = g.Raft.CurrentTerm()
		if n.cluster && id != MetaGroup {
			n.askHold(ctx, id, others, term0+1)
		}
		err = g.TransferLeadership(node, addr)
		if err != nil && g.Raft.CurrentTerm() > term0 {
			// Raft's wait for this node to step down ran out, but a later term
			// began: the transfer's election happened.
			n.logger.Debug("leadership transfer", "group", id, "err", err, "term", g.Raft.CurrentTerm())
			err = nil
		}
	case clusterv1.ShardOp_SHARD_OP_ADD_VOTER:
		if addr == "" {
			addr = n.raftAddrOf(node)
		}
		err = g.AddVoter(node, addr)
	case clusterv1.ShardOp_SHARD_OP_REMOVE_SERVER:
		err = g.RemoveServer(node)
	default:
		return g.ID(), invalidCommand("op", "unknown op %s", op)
	}
	if err != nil {
		_, lid := g.Leader()
		switch {
		case errors.Is(err, raftgroup.ErrNotLeader), errors.Is(err, raftgroup.ErrUnknownOutcome):
			return string(lid), fmt.Errorf("group %d: %w: %w", id, ErrNotLeader, err)
		}
		return string(lid), fmt.Errorf("group %d: %w: %w", id, ErrUnavailable, err)
	}
	if op != clusterv1.ShardOp_SHARD_OP_TRANSFER_LEADERSHIP {
		return g.ID(), nil
	}
	// Raft confirmed the hand-over: answer now, with whoever leads as far as
	// this node knows (see leaderAfterTransfer).
	return n.leaderAfterTransfer(ctx, g, term0), nil
}

// shardOp runs a leadership or voter change on group id's leader, wherever it
// is, and answers the group's leader afterwards.
func (n *Node) shardOp(ctx context.Context, id int, op clusterv1.ShardOp, node, addr string) (string, error) {
	target := func(skip map[string]bool) (string, bool) { return n.target(id, skip) }
	if id == MetaGroup {
		target = n.metaTarget
	}
	var leader string
	err := n.routeWith(ctx, id, false, target, func(local bool, to string) (bool, string, error) {
		if local {
			l, err := n.shardOpLocal(ctx, id, op, node, addr)
			leader = l
			return err == nil, l, err
		}
		c, err := n.fwd.client(to)
		if err != nil {
			return false, "", transportError{err}
		}
		resp, err := c.ShardOp(ctx, connect.NewRequest(&clusterv1.ShardOpRequest{Group: uint32(id), Op: op, NodeId: node, Address: addr}))
		if err != nil {
			return false, "", transportError{err}
		}
		m := resp.Msg
		switch m.Outcome {
		case clusterv1.Outcome_OUTCOME_OK:
			leader = m.LeaderId
			return true, "", nil
		case clusterv1.Outcome_OUTCOME_ERROR:
			if m.Error == nil { // a node from before ShardOpResponse.error
				return false, "", invalidCommand("", "%s", m.Message)
			}
			return false, "", remoteError(m.Outcome, m.Error, m.Message)
		}
		return false, m.LeaderId, outcomeError(m.Outcome, nil, m.Message)
	})
	if err == nil && leader != "" {
		n.hints.Store(id, leader)
	}
	return leader, err
}
