// Package raftgroup wires up exactly one hashicorp/raft group: its durable
// stores, its transport, its raft configuration and the small amount of
// glue callers need to talk to it safely.
//
// What this package owns:
//
//   - the on-disk layout of one group's data directory: raft.db (a
//     raft-boltdb/v2 file used as both the raft log store and the stable
//     store, fronted by an in-memory raft.LogCache) and snapshots/ (a
//     raft.FileSnapshotStore keeping at least two snapshots);
//   - the raft.Config tuning (timeouts, batching, snapshotting) with
//     documented defaults and validation in one place (Config.validate);
//   - bootstrapping a brand-new group, and only when no state exists;
//   - the lifecycle: Open, a graceful Close and a crash-like Kill for tests;
//   - mapping raft's errors onto outcome sentinels that tell a caller whether
//     a command is safe to retry elsewhere (ErrNotApplied) or may still
//     commit (ErrUnknownOutcome);
//   - an hclog -> slog adapter (NewHCLogger) so raft logs flow into the
//     process's structured logger tagged with group and node.
//
// What this package never does: business logic. It does not know what a
// command means, how customers are sharded onto groups, how requests are
// forwarded to a leader, or how many groups share a process or a port (the
// caller passes a raft.Transport for that). The FSM is supplied by the
// caller and passed to raft unchanged, so a raft.BatchingFSM (or a
// raft.ConfigurationStore) keeps its extra capabilities.
//
// Rules for FSMs used with this package (from the project's reliability
// notes):
//
//   - Apply/ApplyBatch must be deterministic. Never read raft.Log.AppendedAt:
//     it is the leader's wall clock, its wire/disk encoding has changed
//     between msgpack versions, and it is not part of the replicated state
//     machine's inputs as far as this project is concerned.
//   - Handle non-command entries: a BatchingFSM also receives
//     raft.LogConfiguration entries and must answer them (e.g. with nil).
//   - Restore must discard all previous state.
//
// Pinned versions: hashicorp/raft v1.8.0 with raft-boltdb/v2 v2.4.2. Raft is
// configured with NoLegacyTelemetry so metrics are not emitted twice.
// Raft's metrics go to the process-global go-metrics sink and are not
// labelled per group; per-group attribution is only available in logs
// (attributes "group" and "node").
package raftgroup
