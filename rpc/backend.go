package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/cluster"
	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
)

// Backend is what the handlers need from the cluster; *cluster.Node is the
// real one. Customer-scoped calls name the routing key (the request's
// routing_key, else its customer id): any node accepts them and the backend
// takes them to the shard's leader.
type Backend interface {
	// Apply proposes one command for the shard that owns key.
	Apply(ctx context.Context, key string, cmd *fsm.Command) (*fsm.Result, error)
	// Query runs a registered read (see Queries) for the shard that owns key.
	Query(ctx context.Context, key string, stale bool, kind string, args []byte) (cluster.Answer, error)
	SetPolicy(ctx context.Context, text, format string) (uint64, error)
	Policy() (text, format string, version uint64)
	Status(ctx context.Context) (cluster.Status, error)
	// Ready is nil when the node can serve (health).
	Ready() error
	Members(ctx context.Context) ([]cluster.Member, error)
	TransferLeadership(ctx context.Context, shard int, to string) (string, error)
	RemoveNode(ctx context.Context, id string) ([]int, map[int]string, error)
	SetShardHome(ctx context.Context, shard int, region string) error
	// CompactShards snapshots every replica of the shards (all when none)
	// and truncates their logs, keeping the newest keep entries.
	CompactShards(ctx context.Context, shards []int, keep uint64) ([]cluster.ReplicaCompaction, error)
	// SaveSnapshot streams a consistent snapshot of one shard to sink.
	SaveSnapshot(ctx context.Context, shard int, sink cluster.SnapshotSink) error
}

// routeKey is the routing key of a customer-scoped request.
func routeKey(routingKey, customer string) string {
	if routingKey != "" {
		return routingKey
	}
	return customer
}

var _ Backend = (*cluster.Node)(nil)

// core is what every service shares.
type core struct {
	backend Backend
	metrics *Metrics
	timeout time.Duration // bounds calls whose client set no deadline

	mu      sync.Mutex
	polVer  uint64
	polText string
	pol     *engine.Policy
}

// policy returns the policy in force, parsed (cached per version), for edge
// checks of credit and plan names. nil when it cannot be parsed; the engine
// checks again anyway when a command applies.
func (c *core) policy() *engine.Policy {
	text, format, ver := c.backend.Policy()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pol != nil && c.polVer == ver && c.polText == text {
		return c.pol
	}
	p, err := engine.LoadPolicy(text, format)
	if err != nil {
		return nil
	}
	c.pol, c.polVer, c.polText = p, ver, text
	return p
}

func (c *core) policyVersion() uint64 {
	_, _, v := c.backend.Policy()
	return v
}

// apply proposes cmd with the request's idempotency key (one is made up when
// the caller sent none) and maps a refusal to a Connect error.
func (c *core) apply(ctx context.Context, customer, key string, cmd *fsm.Command, rename map[string]string) (*fsm.Result, error) {
	if key == "" {
		key = newKey()
	}
	cmd.RequestID = key
	ctx, cancel := c.bound(ctx)
	defer cancel()
	res, err := c.backend.Apply(ctx, customer, cmd)
	if err != nil {
		ce := asConnectError(toConnect(err))
		// The key a retry must use, also when the server made it up.
		ce.Meta().Set(keyHeader, key)
		return nil, ce
	}
	if res == nil {
		return nil, connect.NewError(connect.CodeInternal, errorString("the cluster answered no result"))
	}
	if res.Err != nil {
		return nil, fromFSM(res.Err, rename)
	}
	return res, nil
}

// bound gives a call without a client deadline the server's default one, so a
// shard without a leader answers UNAVAILABLE instead of hanging.
func (c *core) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// keyHeader carries the idempotency key on errors of mutating calls.
const keyHeader = "Capstan-Idempotency-Key"

func asConnectError(err error) *connect.Error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	return connect.NewError(connect.CodeUnknown, err)
}

// newKey makes an idempotency key for a caller that sent none: retries of
// such a call are new calls.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "auto-" + hex.EncodeToString(b[:])
}
