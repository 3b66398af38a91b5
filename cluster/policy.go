package cluster

import (
	"context"
	"fmt"
	"sync"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
)

// SetPolicy validates a policy document and replicates it, with one new version
// number, through every shard's log. It returns the version. On a cluster node
// the version is assigned by the meta group (so concurrent updates from
// different nodes get distinct versions, and shards keep the newest), and each
// shard's leader is sent the update wherever it is. Every decision records the
// version it ran under; a shard applies versions in increasing order only.
// When some shards fail, the others already run the new version: a cluster
// node's leaders catch the rest up by themselves, and calling SetPolicy again
// makes a newer version everywhere.
func (n *Node) SetPolicy(ctx context.Context, text, format string) (uint64, error) {
	if _, err := engine.LoadPolicy(text, format); err != nil {
		return 0, invalidCommand("text", "%v", err)
	}
	if len(text) >= fsm.MaxCommandSize-1024 {
		return 0, invalidCommand("text", "policy document of %d bytes is too large", len(text))
	}
	n.policyMu.Lock()
	defer n.policyMu.Unlock()
	if n.cluster {
		return n.setPolicyCluster(ctx, text, format)
	}
	// Every shard's FSM must have caught up before its version is trusted.
	if err := n.eachShard(func(s *shard) error { return n.linearize(ctx, s) }); err != nil {
		return 0, err
	}
	_, _, cur := n.Policy()
	version := cur + 1
	err := n.eachShard(func(s *shard) error {
		res, err := n.applyShard(ctx, s, &fsm.Command{
			RequestID: policyRequestID(version),
			SetPolicy: &fsm.PolicyOp{Text: text, Format: format, Version: version},
		})
		if err == nil && res.Err != nil {
			err = res.Err
		}
		if err != nil {
			return fmt.Errorf("shard %d: %w", s.id, err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cluster: policy version %d not applied everywhere: %w", version, err)
	}
	n.logger.Info("policy updated", "version", version)
	return version, nil
}

func (n *Node) setPolicyCluster(ctx context.Context, text, format string) (uint64, error) {
	if n.view() == nil {
		return 0, fmt.Errorf("%w: not joined a cluster yet", ErrUnavailable)
	}
	res, err := n.metaApply(ctx, &metaCommand{Op: metaSetPolicy, Policy: &policyDoc{Text: text, Format: format}})
	if err != nil {
		return 0, fmt.Errorf("cluster: assign a policy version: %w", err)
	}
	if res.Err != "" {
		return 0, fmt.Errorf("cluster: assign a policy version: %s", res.Err)
	}
	version := res.PolicyVersion
	op := fsm.PolicyOp{Text: text, Format: format, Version: version}
	sem := make(chan struct{}, openParallelism*2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []error
	for id := range n.Shards() {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cmd := &fsm.Command{RequestID: policyRequestID(version), SetPolicy: &op}
			res, err := n.applyRouted(ctx, id, "", cmd)
			if err == nil && res.Err != nil && res.Err.Code != fsm.CodeFailedPrecondition {
				err = res.Err // FailedPrecondition: the shard already runs a newer version
			}
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Errorf("shard %d: %w", id, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		return version, fmt.Errorf("cluster: policy version %d reached %d of %d shards (their leaders catch the rest up): %w",
			version, n.Shards()-len(failed), n.Shards(), failed[0])
	}
	n.logger.Info("policy updated", "version", version)
	return version, nil
}

// Policy returns the policy in force: on a cluster node the newest the cluster
// map holds, on a standalone node the newest any shard runs (version 0: none
// yet).
func (n *Node) Policy() (text, format string, version uint64) {
	if n.cluster {
		if m := n.view(); m != nil {
			return m.Policy.Text, m.Policy.Format, m.Policy.Version
		}
		return "", "", 0
	}
	for _, s := range n.sorted() {
		if t, f, v := s.fsm.Policy(); v > version {
			text, format, version = t, f, v
		}
	}
	return text, format, version
}
