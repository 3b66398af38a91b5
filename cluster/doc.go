// Package cluster runs a Capstan node: the shards it hosts, each its own raft
// group (internal/raftgroup) over an fsm.FSM, all multiplexed on one node-to-node
// TCP port, and the routing of commands and reads to them.
//
// What it owns:
//
//   - Routing. A routing key (the customer id, or a key shared by customers
//     that must be decided together) belongs to shard jump(mix(fnv64a(key)),
//     Shards): a jump consistent hash, fixed forever once a data directory is
//     bootstrapped (node.json records the shard count and every open checks it).
//   - Proposals. Apply stamps the leader's clock (ms) and a request id when the
//     caller gave none, bounds in-flight proposals per shard, and retries while
//     the caller's context allows: a proposal that never reached the log is sent
//     again; one whose outcome is unknown is sent again with the same request id,
//     so the FSM's idempotency table answers the first outcome. What cannot be
//     resolved in time is ErrUnavailable (with ErrUnknownOutcome when it may still
//     commit).
//   - Reads. Linearizable by default: the shard's leader completes one Barrier per
//     term (so its FSM holds everything earlier leaders committed) and confirms
//     its leadership with a quorum (VerifyLeader) before reading under the FSM's
//     read lock. Stale reads skip both.
//   - Policy. SetPolicy validates a document and replicates it with one new
//     version through every shard's log; bootstrapping installs the configured
//     policy as version 1.
//   - The port. One listener carries every group: each connection starts with a
//     3-byte header (kind 1 = raft, 2-byte group id) that routes it to the
//     group's raft transport (see mux.go, after rqlite's tcp/mux). Remote peers
//     dial the same way, so multi-node groups need no change here; a
//     fault-injecting listener/dialer (internal/faultnet) plugs in through
//     Config.RaftListener and Config.RaftDial.
//
// Data directory layout (one per node):
//
//	DataDir/node.json                    node id and shard count, fixed at bootstrap
//	DataDir/shards/<id>/raft.db          raft log + stable store (bolt)
//	DataDir/shards/<id>/snapshots/       raft snapshots (package snapshot format)
//
// Not yet here: multi-node membership (memberlist), placement of shards on
// nodes, and forwarding to a shard's leader on another node (Apply and Read
// answer ErrNotLeader naming it). The Node keeps shards in a map by id and the
// mux already accepts remote peers, so those fit in without changing the API.
//
// What it never does: decide anything about customers (package engine), apply
// commands (package fsm) or speak the public API (package rpc).
package cluster
