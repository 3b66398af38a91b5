// Package fsm is one shard's replicated state machine: the Command/Result
// contract, their log encoding (protobuf capstan.fsm.v1, generated into
// internal/gen/capstan/fsm/v1), the idempotency table, and the raft.FSM /
// raft.BatchingFSM that applies commands to an engine.Engine.
//
// What it owns:
//
//   - Encoding. A log entry is one version byte (EncodingV1) and a
//     deterministically marshalled capstan.fsm.v1.Command. Amounts travel as
//     plain decimal strings and are bounded (length, exponent, digits) before any
//     parsing or formatting; no float64 ever carries an amount.
//   - Time. Apply uses max(command timestamp, FSM clock), so time never runs
//     backwards on a shard even when leadership moves to a node whose clock is
//     behind. raft.Log.AppendedAt is never read.
//   - Idempotency. A command with a RequestID is remembered with a fingerprint
//     (SHA-256 of its log bytes minus request id and timestamp) and its encoded
//     Result. The same id with the same fingerprint is answered from the table with
//     Duplicate=true and applied no second time; with another fingerprint it is
//     refused (CodeFailedPrecondition). Ids are forgotten after DedupeWindow of
//     command time (default 24h), or earlier when the table passes its entry or
//     byte bound; eviction runs inside Apply on command time, so every replica
//     forgets the same ids at the same index. The table is part of snapshots and
//     of the state hash.
//   - Policy. A SetPolicy command swaps the engine's policy (engine.LoadPolicy)
//     and sets the shard's policy version; versions only increase. A policy that
//     does not load is a refused command and changes nothing. Every Result records
//     the policy version it was decided under.
//   - Refusals. Engine refusals become Result.Err with a Code and Field; a panic
//     inside the engine is recovered, logged with its stack and answered with
//     CodeInternal, so bad input never takes a node down.
//   - Snapshots (via package snapshot) and StateHash, the per-shard digest that
//     replicas and restarts are compared by.
//
// What it never does: I/O besides the snapshot sink, reading the wall clock inside
// Apply, randomness, goroutines, iterating maps in Apply, or knowing how shards are
// placed or how commands reach the leader (package cluster does).
//
// Determinism caveat: replicas must run with the same Options dedupe settings,
// and a new command encoding version or operation must not be proposed before
// every replica can read it (an unreadable entry is refused on the old replica
// and applied on the new ones).
package fsm
