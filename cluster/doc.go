// Package cluster runs a Capstan node: the shards it hosts, each its own raft
// group (internal/raftgroup) over an fsm.FSM, all multiplexed on one node-to-node
// TCP port, and the routing of commands and reads to them. A node is either
// standalone (Config.Bootstrap: it hosts every shard as their only voter) or a
// member of a cluster (Config.GossipAddr: docs/cluster-contract.md).
//
// What it owns:
//
//   - Routing. A routing key (the customer id, or a key shared by customers
//     that must be decided together) belongs to shard jump(mix(fnv64a(key)),
//     Shards): a jump consistent hash, fixed forever once a data directory is
//     bootstrapped (node.json records the shard count and every open checks it).
//     Customers that reference each other — refs, entitlements scoped to an
//     org (a customer type up the refs), caps shared with referring customers —
//     must be called with one routing key (the org id, say): the engine resolves
//     refs inside one shard's state, so only then is a decision over an org and
//     its users made atomically, by one raft group. Under their own ids the
//     users would land on other shards, where their org does not exist.
//   - Proposals. Apply sets a request id on the command before anything is sent
//     (when the caller gave none), the shard's leader stamps its clock (ms),
//     in-flight proposals are bounded per shard, and Apply retries while the
//     caller's context allows: a proposal that never reached the log is sent
//     again (here or to a new leader); one whose outcome is unknown (leadership
//     lost, a forwarded call cut off after sending) is sent again with the same
//     request id, so the FSM's idempotency table answers the first outcome.
//     What cannot be resolved in time is ErrUnavailable (with ErrUnknownOutcome
//     when it may still commit).
//   - Reads. Linearizable by default: the shard's leader completes one Barrier
//     per term (so its FSM holds everything earlier leaders committed) and
//     confirms its leadership with a quorum (VerifyLeader) before reading under
//     the FSM's read lock. Stale reads skip both and answer from a replica
//     (Answer.Stale says so). Reads that can run on another node are registered
//     queries (Config.Queries, Node.Query); Read runs a closure here only.
//   - Policy. SetPolicy validates a document and replicates it, with one new
//     version, through every shard's log; every decision records the version it
//     ran under and a shard only moves to newer versions.
//   - The port. One listener carries every group: each connection starts with a
//     3-byte header (kind 1 = raft, 2-byte group id) that routes it to the
//     group's raft transport (see mux.go, after rqlite's tcp/mux). A
//     fault-injecting listener/dialer (internal/faultnet) wraps it in cluster
//     mode, and plugs in through Config.RaftListener and Config.RaftDial.
//
// Cluster mode adds:
//
//   - Membership (membership.go). memberlist gossip: nodes find each other
//     through any seed (Config.Join) and gossip their id, region, API and raft
//     addresses and the shards they lead; memberlist detects dead nodes.
//     Gossip is advisory — where to look first — never the source of truth.
//   - The cluster map (meta.go): nodes, each shard's replicas and home region,
//     and the policy, replicated by the meta raft group (group MetaGroup on the
//     same port; up to 5 voters, every other node a non-voter), so every node
//     learns it; DataDir/cluster.json caches it for restarts.
//   - Formation (clusternode.go). With BootstrapExpect N, once N nodes know
//     each other the lowest id places every shard (placement.go: replicas over
//     distinct regions first, then the least loaded nodes; home regions
//     round-robin), bootstraps the meta group and commits the map. Each shard's
//     initial replicas bootstrap its group with the same configuration. Later
//     nodes join through gossip: the meta leader registers them and adds them to
//     the meta group. A restarted node reopens its shards from node.json and the
//     cached map and rejoins without help.
//   - Forwarding (route.go, forward.go). Any node accepts any call: when
//     another node leads the shard, the call goes to it over
//     capstan.cluster.v1.ForwardService on its API address (cluster key), the
//     leader it names is cached and retried on NOT_LEADER, and the receiving
//     node never forwards again. Connections go through faultnet, so simulated
//     region latency and partitions apply to forwarded calls.
//   - Housekeeping by each shard's leader (maintain.go): policy catch-up,
//     voters following the map, leadership moving to the shard's home region
//     and evening out across its nodes. Drain and Close hand leadership away
//     first.
//   - Admin (admin.go): cluster-wide Status, Members, TransferLeadership,
//     SetShardHome and RemoveNode (voter removal through each group's log, a
//     replacement replica, then the node leaves; it may not rejoin by that id).
//   - Operator snapshots (snapshot.go): CompactShards (every replica takes a
//     raft snapshot and truncates its log; nothing is proposed) and
//     SaveSnapshot (the leader streams a linearized copy of a shard's state in
//     package snapshot's format).
//
// Data directory layout (one per node):
//
//	DataDir/node.json                    node id, shard count, mode, cluster id
//	DataDir/cluster.json                 cached cluster map (cluster mode)
//	DataDir/meta/                        the meta group's raft.db and snapshots
//	DataDir/shards/<id>/raft.db          raft log + stable store (bolt)
//	DataDir/shards/<id>/snapshots/       raft snapshots (package snapshot format)
//
// What it never does: decide anything about customers (package engine), apply
// commands (package fsm), speak the public API (package rpc), or edit raft
// configurations by hand: every membership change goes through a group's log.
package cluster
