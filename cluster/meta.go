package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// The cluster map is the state of the meta raft group (group MetaGroup on the
// port): which nodes exist, where every shard's replicas live, which region
// its leadership prefers, and the policy every shard must run. Every node holds
// a replica of the meta group (voters up to metaVoters, the rest non-voters),
// so every node learns the map through raft; a copy is cached in
// DataDir/cluster.json so a restarted node can open its shards before the meta
// group has a leader again.

// MetaGroup is the raft group id of the meta group; shards use 0..Shards-1.
const MetaGroup = MaxGroups - 1

// MaxShards is the largest shard count (every id below MetaGroup).
const MaxShards = MetaGroup

// metaVoters is the number of meta group voters; further nodes replicate it as
// non-voters.
const metaVoters = 5

const mapCacheFile = "cluster.json"

// clusterMap is the replicated description of the cluster. It is only ever
// changed by applying a metaCommand, so every replica holds the same map.
type clusterMap struct {
	ClusterID string               `json:"cluster_id"`
	Shards    int                  `json:"shards"`
	Replicas  int                  `json:"replicas"`
	Nodes     map[string]*nodeInfo `json:"nodes"`
	Placement []*placement         `json:"placement"`
	Policy    policyDoc            `json:"policy"`
	// Index is the meta log index of the last change.
	Index uint64 `json:"index"`
}

// nodeInfo is one node as the map knows it.
type nodeInfo struct {
	ID     string `json:"id"`
	Region string `json:"region"`
	API    string `json:"api"`
	Raft   string `json:"raft"`
	Gossip string `json:"gossip"`
	// Removed nodes were taken out of every group by RemoveNode and may not
	// come back under the same id.
	Removed bool `json:"removed,omitempty"`
}

// placement is one shard's replica set.
type placement struct {
	Replicas []string `json:"replicas"`
	Home     string   `json:"home"`
	// Epoch counts replica-set changes since formation. Only epoch 0 replicas
	// bootstrap the group (all with the same configuration); later ones join it
	// empty and are added by the leader.
	Epoch int `json:"epoch"`
}

type policyDoc struct {
	Text    string `json:"text"`
	Format  string `json:"format"`
	Version uint64 `json:"version"`
}

func (m *clusterMap) clone() *clusterMap {
	if m == nil {
		return nil
	}
	b, _ := json.Marshal(m)
	var c clusterMap
	_ = json.Unmarshal(b, &c)
	return &c
}

func (m *clusterMap) hosts(node string, shard int) bool {
	return shard < len(m.Placement) && slices.Contains(m.Placement[shard].Replicas, node)
}

// liveNodes are the nodes not removed, sorted by id.
func (m *clusterMap) liveNodes() []*nodeInfo {
	var out []*nodeInfo
	for _, id := range sortedKeys(m.Nodes) {
		if n := m.Nodes[id]; !n.Removed {
			out = append(out, n)
		}
	}
	return out
}

// Meta commands. JSON keeps them readable in logs; they are rare (membership,
// placement and policy changes), never on the decision path.
const (
	metaForm        = "form"
	metaAddNode     = "add_node"
	metaRemoveNode  = "remove_node"
	metaSetReplicas = "set_replicas"
	metaSetHome     = "set_home"
	metaSetPolicy   = "set_policy"
	// metaRead changes nothing: through the log it answers a shard's
	// placement as of now (a linearizable read of the map).
	metaRead = "read"
)

type metaCommand struct {
	Op       string      `json:"op"`
	Map      *clusterMap `json:"map,omitempty"`
	Node     *nodeInfo   `json:"node,omitempty"`
	NodeID   string      `json:"node_id,omitempty"`
	Shard    int         `json:"shard,omitempty"`
	Replicas []string    `json:"replicas,omitempty"`
	Region   string      `json:"region,omitempty"`
	Policy   *policyDoc  `json:"policy,omitempty"`
}

type metaResult struct {
	Err           string   `json:"err,omitempty"`
	PolicyVersion uint64   `json:"policy_version,omitempty"`
	Replicas      []string `json:"replicas,omitempty"` // read
	Epoch         int      `json:"epoch,omitempty"`    // read
}

// metaFSM applies meta commands to the cluster map.
type metaFSM struct {
	mu       sync.RWMutex
	m        *clusterMap // nil until formed
	onChange func()
}

var _ raft.FSM = (*metaFSM)(nil)

func (f *metaFSM) current() *clusterMap {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.m
}

func (f *metaFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	var cmd metaCommand
	if err := json.Unmarshal(l.Data, &cmd); err != nil {
		return &metaResult{Err: "decode meta command: " + err.Error()}
	}
	f.mu.Lock()
	next, res := applyMeta(f.m, &cmd)
	if next != nil {
		next.Index = l.Index
		f.m = next
	}
	f.mu.Unlock()
	if next != nil && f.onChange != nil {
		f.onChange()
	}
	return res
}

// applyMeta returns the map after cmd (nil when nothing changed) and the
// command's result. It never modifies cur: readers hold it without a lock.
func applyMeta(cur *clusterMap, cmd *metaCommand) (*clusterMap, *metaResult) {
	fail := func(format string, args ...any) (*clusterMap, *metaResult) {
		return nil, &metaResult{Err: fmt.Sprintf(format, args...)}
	}
	if cmd.Op == metaForm {
		switch {
		case cmd.Map == nil:
			return fail("form: no map")
		case cur != nil && cur.ClusterID == cmd.Map.ClusterID:
			return nil, &metaResult{} // a retried formation
		case cur != nil:
			return fail("form: cluster %s already formed", cur.ClusterID)
		}
		return cmd.Map.clone(), &metaResult{}
	}
	if cur == nil {
		return fail("%s: the cluster has not formed yet", cmd.Op)
	}
	if cmd.Op == metaRead {
		if cmd.Shard < 0 || cmd.Shard >= len(cur.Placement) {
			return fail("read: no shard %d", cmd.Shard)
		}
		p := cur.Placement[cmd.Shard]
		return nil, &metaResult{Replicas: slices.Clone(p.Replicas), Epoch: p.Epoch}
	}
	next := cur.clone()
	shardOK := cmd.Shard >= 0 && cmd.Shard < len(next.Placement)
	switch cmd.Op {
	case metaAddNode:
		in := cmd.Node
		if in == nil || in.ID == "" {
			return fail("add_node: no node")
		}
		old := next.Nodes[in.ID]
		if old != nil && old.Removed {
			return fail("add_node: node %s was removed from the cluster and cannot rejoin under that id", in.ID)
		}
		if old != nil && *old == *in {
			return nil, &metaResult{}
		}
		n := *in
		n.Removed = false
		next.Nodes[in.ID] = &n
	case metaRemoveNode:
		n := next.Nodes[cmd.NodeID]
		if n == nil {
			return fail("remove_node: unknown node %s", cmd.NodeID)
		}
		if n.Removed {
			return nil, &metaResult{}
		}
		n.Removed = true
	case metaSetReplicas:
		if !shardOK {
			return fail("set_replicas: no shard %d", cmd.Shard)
		}
		for _, id := range cmd.Replicas {
			if n := next.Nodes[id]; n == nil || n.Removed {
				return fail("set_replicas: shard %d: node %s is not a member", cmd.Shard, id)
			}
		}
		p := next.Placement[cmd.Shard]
		if slices.Equal(p.Replicas, cmd.Replicas) {
			return nil, &metaResult{}
		}
		p.Replicas = slices.Clone(cmd.Replicas)
		p.Epoch++
	case metaSetHome:
		if !shardOK {
			return fail("set_home: no shard %d", cmd.Shard)
		}
		next.Placement[cmd.Shard].Home = cmd.Region
	case metaSetPolicy:
		if cmd.Policy == nil {
			return fail("set_policy: no policy")
		}
		next.Policy = policyDoc{Text: cmd.Policy.Text, Format: cmd.Policy.Format, Version: cur.Policy.Version + 1}
		return next, &metaResult{PolicyVersion: next.Policy.Version}
	default:
		return fail("unknown meta command %q", cmd.Op)
	}
	return next, &metaResult{}
}

func (f *metaFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(f.m)
	if err != nil {
		return nil, err
	}
	return metaSnapshot(b), nil
}

func (f *metaFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return fmt.Errorf("meta restore: %w", err)
	}
	var m *clusterMap
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("meta restore: %w", err)
	}
	f.mu.Lock()
	f.m = m
	f.mu.Unlock()
	if f.onChange != nil {
		f.onChange()
	}
	return nil
}

type metaSnapshot []byte

func (s metaSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s metaSnapshot) Release() {}

// loadMapCache reads DataDir/cluster.json (nil when there is none).
func loadMapCache(dir string) (*clusterMap, error) {
	b, err := os.ReadFile(filepath.Join(dir, mapCacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m clusterMap
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", mapCacheFile, err)
	}
	return &m, nil
}

func saveMapCache(dir string, m *clusterMap) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, mapCacheFile), append(b, '\n'))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
