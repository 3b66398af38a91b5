package cluster

import (
	"errors"
	"fmt"

	"github.com/capstanhq/capstan/fsm"
)

// ErrShardNotHosted: this node has no replica of the shard.
var ErrShardNotHosted = errors.New("shard not hosted on this node")

// ShardEvents reads shard id's event log from this node's replica. Every replica
// produces identical events at identical (index, seq) positions, so any replica can
// serve a consumer; a lagging follower simply has the newest ones a little later.
func (n *Node) ShardEvents(id int, after fsm.Cursor, max int, customer string) (fsm.EventsPage, error) {
	n.mu.RLock()
	s := n.shards[id]
	n.mu.RUnlock()
	if s == nil {
		return fsm.EventsPage{}, fmt.Errorf("shard %d: %w", id, ErrShardNotHosted)
	}
	return s.fsm.Events(after, max, customer), nil
}
