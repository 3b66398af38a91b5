package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/capstanhq/capstan/fsm"
	"github.com/capstanhq/capstan/internal/faultnet"
	clusterv1 "github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/cluster/v1/clusterv1connect"
)

// Forwarding rides on every node's public API address (docs/cluster-contract.md):
// capstan.internal.v1.ForwardService, authenticated by the cluster key. Its
// connections are dialled through internal/faultnet like the raft port's, so
// simulated region latency and partitions apply to forwarded calls too.

// ClusterKeyHeader carries the cluster key on node-to-node calls.
const ClusterKeyHeader = "Capstan-Cluster-Key"

// maxForwardBytes bounds a forwarded message (a policy document is the largest).
const maxForwardBytes = 8 << 20

type forwarder struct {
	n      *Node
	hc     *http.Client
	scheme string

	mu      sync.Mutex
	clients map[string]clusterv1connect.ForwardServiceClient // by API address
}

func newForwarder(n *Node) *forwarder {
	d := &faultnet.Dialer{Rules: n.cfg.Faults, Local: n.local, Resolve: n.resolve}
	t := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     time.Minute,
		Protocols:           new(http.Protocols),
	}
	scheme := "http"
	if n.cfg.ForwardTLS != nil {
		t.TLSClientConfig = n.cfg.ForwardTLS.Clone()
		t.Protocols.SetHTTP2(true)
		scheme = "https"
	} else {
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return &forwarder{n: n, hc: &http.Client{Transport: t}, scheme: scheme, clients: map[string]clusterv1connect.ForwardServiceClient{}}
}

// client returns a ForwardService client for node id.
func (f *forwarder) client(id string) (clusterv1connect.ForwardServiceClient, error) {
	addr := f.n.apiAddrOf(id)
	if addr == "" {
		return nil, fmt.Errorf("no API address known for node %s", id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.clients[addr]
	if c == nil {
		c = clusterv1connect.NewForwardServiceClient(f.hc, f.scheme+"://"+addr,
			connect.WithInterceptors(sendClusterKey{f.n.cfg.ClusterKey}),
			connect.WithReadMaxBytes(maxForwardBytes))
		f.clients[addr] = c
	}
	return c, nil
}

// sendClusterKey puts the cluster key on every forwarded call, unary and
// streaming.
type sendClusterKey struct{ key string }

func (k sendClusterKey) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set(ClusterKeyHeader, k.key)
		return next(ctx, req)
	}
}

func (k sendClusterKey) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set(ClusterKeyHeader, k.key)
		return conn
	}
}

func (k sendClusterKey) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// checkClusterKey refuses every call, unary or streaming, without the
// cluster key (every call when this node has none).
type checkClusterKey struct {
	set bool
	sum [32]byte
}

func (k checkClusterKey) check(h http.Header) error {
	if !k.set {
		return connect.NewError(connect.CodePermissionDenied, errors.New("this node has no cluster key: node-to-node calls are refused"))
	}
	got := sha256.Sum256([]byte(h.Get(ClusterKeyHeader)))
	if subtle.ConstantTimeCompare(got[:], k.sum[:]) != 1 {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("bad or missing cluster key"))
	}
	return nil
}

func (k checkClusterKey) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := k.check(req.Header()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (k checkClusterKey) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (k checkClusterKey) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := k.check(conn.RequestHeader()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

func (f *forwarder) close() {
	if t, ok := f.hc.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// InternalHandler returns the path and handler of the node-to-node forwarding
// service (capstan.internal.v1.ForwardService), to be served on the node's API
// address next to the public services. Every call must carry the cluster key;
// without one configured every call is refused.
func (n *Node) InternalHandler() (string, http.Handler) {
	auth := checkClusterKey{set: n.cfg.ClusterKey != "", sum: sha256.Sum256([]byte(n.cfg.ClusterKey))}
	return clusterv1connect.NewForwardServiceHandler(forwardServer{n},
		connect.WithInterceptors(auth), connect.WithReadMaxBytes(maxForwardBytes))
}

// outcomeOf classifies a local error for the wire.
func outcomeOf(err error) (clusterv1.Outcome, *clusterv1.Error) {
	var fe *fsm.Error
	var ce *connect.Error
	switch {
	case err == nil:
		return clusterv1.Outcome_OUTCOME_OK, nil
	case errors.As(err, &fe):
		return clusterv1.Outcome_OUTCOME_ERROR, &clusterv1.Error{FsmCode: uint32(fe.Code), Field: fe.Field, Message: fe.Message}
	case errors.Is(err, fsm.ErrNoPolicy):
		return clusterv1.Outcome_OUTCOME_NO_POLICY, nil
	case errors.Is(err, ErrUnknownOutcome):
		return clusterv1.Outcome_OUTCOME_UNKNOWN, nil
	case errors.Is(err, ErrNotLeader):
		return clusterv1.Outcome_OUTCOME_NOT_LEADER, nil
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return clusterv1.Outcome_OUTCOME_UNAVAILABLE, nil
	case errors.As(err, &ce):
		return clusterv1.Outcome_OUTCOME_ERROR, &clusterv1.Error{ConnectCode: uint32(ce.Code()), Message: ce.Message()}
	}
	return clusterv1.Outcome_OUTCOME_ERROR, &clusterv1.Error{ConnectCode: uint32(connect.CodeInternal), Message: err.Error()}
}

// remoteError rebuilds an OUTCOME_ERROR / OUTCOME_NO_POLICY answer.
func remoteError(out clusterv1.Outcome, e *clusterv1.Error, msg string) error {
	if out == clusterv1.Outcome_OUTCOME_NO_POLICY {
		return fsm.ErrNoPolicy
	}
	if e == nil {
		return connect.NewError(connect.CodeInternal, errors.New(msg))
	}
	if e.FsmCode != 0 {
		return &fsm.Error{Code: fsm.ErrorCode(e.FsmCode), Field: e.Field, Message: e.Message}
	}
	return connect.NewError(connect.Code(e.ConnectCode), errors.New(e.Message))
}

// forwardServer answers other nodes. It never forwards again: a call this node
// cannot answer comes back as OUTCOME_NOT_LEADER naming the leader it knows.
type forwardServer struct{ n *Node }

var _ clusterv1connect.ForwardServiceHandler = forwardServer{}

func (h forwardServer) Apply(ctx context.Context, req *connect.Request[clusterv1.ApplyRequest]) (*connect.Response[clusterv1.ApplyResponse], error) {
	n, m := h.n, req.Msg
	out := &clusterv1.ApplyResponse{}
	s := n.hosted(int(m.Shard))
	if s == nil {
		out.Outcome, out.LeaderId, out.Message = clusterv1.Outcome_OUTCOME_NOT_LEADER, n.leaderHint(int(m.Shard)), "shard not hosted here"
		return connect.NewResponse(out), nil
	}
	cmd, err := fsm.DecodeCommand(m.Command)
	if err != nil {
		out.Outcome, out.Error = outcomeOf(err)
		return connect.NewResponse(out), nil
	}
	res, err := n.applyShard(ctx, s, cmd)
	if err != nil {
		out.Outcome, out.Error = outcomeOf(err)
		out.LeaderId, out.Message = n.leaderHint(s.id), err.Error()
		return connect.NewResponse(out), nil
	}
	if out.Result, err = fsm.EncodeResult(res); err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	out.Outcome = clusterv1.Outcome_OUTCOME_OK
	return connect.NewResponse(out), nil
}

func (h forwardServer) Query(ctx context.Context, req *connect.Request[clusterv1.QueryRequest]) (*connect.Response[clusterv1.QueryResponse], error) {
	n, m := h.n, req.Msg
	out := &clusterv1.QueryResponse{NodeId: n.cfg.NodeID}
	s := n.hosted(int(m.Shard))
	fn := n.cfg.Queries[m.Kind]
	switch {
	case fn == nil:
		out.Outcome, out.Error = clusterv1.Outcome_OUTCOME_ERROR, &clusterv1.Error{ConnectCode: uint32(connect.CodeUnimplemented), Message: "unknown query " + m.Kind}
		return connect.NewResponse(out), nil
	case s == nil:
		out.Outcome, out.LeaderId, out.Message = clusterv1.Outcome_OUTCOME_NOT_LEADER, n.leaderHint(int(m.Shard)), "shard not hosted here"
		return connect.NewResponse(out), nil
	}
	a, err := n.queryShard(ctx, s, m.Stale, fn, m.Args)
	if err != nil {
		out.Outcome, out.Error = outcomeOf(err)
		out.LeaderId, out.Message = n.leaderHint(s.id), err.Error()
		return connect.NewResponse(out), nil
	}
	out.Outcome, out.Result, out.PolicyVersion, out.AppliedIndex, out.Stale = clusterv1.Outcome_OUTCOME_OK, a.Result, a.PolicyVersion, a.AppliedIndex, a.Stale
	return connect.NewResponse(out), nil
}

func (h forwardServer) Lookup(ctx context.Context, req *connect.Request[clusterv1.LookupRequest]) (*connect.Response[clusterv1.LookupResponse], error) {
	n, m := h.n, req.Msg
	out := &clusterv1.LookupResponse{}
	s := n.hosted(int(m.Shard))
	if s == nil {
		out.Outcome, out.LeaderId = clusterv1.Outcome_OUTCOME_NOT_LEADER, n.leaderHint(int(m.Shard))
		return connect.NewResponse(out), nil
	}
	if err := n.linearize(ctx, s); err != nil {
		out.Outcome, _ = outcomeOf(err)
		out.LeaderId, out.Message = n.leaderHint(s.id), err.Error()
		return connect.NewResponse(out), nil
	}
	out.Outcome = clusterv1.Outcome_OUTCOME_OK
	if r, ok := s.fsm.LookupRequest(m.RequestId); ok {
		b, err := fsm.EncodeResult(r)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		out.Found, out.Result = true, b
	}
	return connect.NewResponse(out), nil
}

func (h forwardServer) MetaApply(ctx context.Context, req *connect.Request[clusterv1.MetaApplyRequest]) (*connect.Response[clusterv1.MetaApplyResponse], error) {
	n := h.n
	out := &clusterv1.MetaApplyResponse{}
	res, err := n.metaApplyLocal(ctx, req.Msg.Command)
	if err != nil {
		out.Outcome, _ = outcomeOf(err)
		out.LeaderId, out.Message = n.metaLeader(), err.Error()
		return connect.NewResponse(out), nil
	}
	out.Outcome, out.Result = clusterv1.Outcome_OUTCOME_OK, res
	return connect.NewResponse(out), nil
}

func (h forwardServer) ShardOp(ctx context.Context, req *connect.Request[clusterv1.ShardOpRequest]) (*connect.Response[clusterv1.ShardOpResponse], error) {
	n, m := h.n, req.Msg
	out := &clusterv1.ShardOpResponse{}
	if m.Op == clusterv1.ShardOp_SHARD_OP_HOLD_LEADERSHIP {
		// Asked of a voter, not the leader (see leadershipHold).
		if g := int(m.Group); g < MetaGroup && n.hosted(g) != nil {
			n.holdLeadership(g, m.Term)
		}
		out.Outcome = clusterv1.Outcome_OUTCOME_OK
		return connect.NewResponse(out), nil
	}
	leader, err := n.shardOpLocal(ctx, int(m.Group), m.Op, m.NodeId, m.Address)
	out.LeaderId = leader
	if err != nil {
		out.Outcome, out.Error = outcomeOf(err)
		out.Message = err.Error()
		var fe *fsm.Error
		if errors.As(err, &fe) {
			out.Message = fe.Message
		}
		return connect.NewResponse(out), nil
	}
	out.Outcome = clusterv1.Outcome_OUTCOME_OK
	return connect.NewResponse(out), nil
}

func (h forwardServer) NodeStatus(ctx context.Context, _ *connect.Request[clusterv1.NodeStatusRequest]) (*connect.Response[clusterv1.NodeStatusResponse], error) {
	st, err := h.n.localStatus(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	out := &clusterv1.NodeStatusResponse{NodeId: st.NodeID, Region: st.Region}
	for _, sh := range st.Shards {
		out.Replicas = append(out.Replicas, &clusterv1.Replica{
			Shard: uint32(sh.Shard), State: sh.State, LeaderId: sh.Leader, LeaderAddress: sh.LeaderAddr,
			AppliedIndex: sh.AppliedIndex, LastIndex: sh.LastIndex, StateHash: sh.StateHash, HashIndex: sh.HashIndex,
			PolicyVersion: sh.PolicyVersion, Customers: uint64(sh.Customers),
		})
	}
	return connect.NewResponse(out), nil
}

func (h forwardServer) Leave(ctx context.Context, req *connect.Request[clusterv1.LeaveRequest]) (*connect.Response[clusterv1.LeaveResponse], error) {
	h.n.logger.Warn("removed from the cluster", "reason", req.Msg.Reason)
	go h.n.retire()
	return connect.NewResponse(&clusterv1.LeaveResponse{}), nil
}
