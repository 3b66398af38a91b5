// Package e2e is Capstan's end-to-end fault-injection suite. It runs only
// with the e2e build tag (make e2e): it brings up the repository's
// docker-compose cluster (5 nodes in 3 regions), drives capped workloads from
// clients in every region while it kills, pauses, disconnects, restarts,
// removes and adds nodes, then checks what the clients saw.
//
// What this package owns:
//
//   - the compose harness: up/down, waiting for Docker health, the faults
//     (docker kill/start, pause/unpause, network disconnect/connect,
//     docker-compose restart, AdminService.RemoveNode plus a spare node);
//   - the workload: one client group per node's API port, every operation
//     recorded in internal/linearize's Recorder, unknown outcomes included;
//   - the checks: linearizability per customer (porcupine), no acknowledged
//     decision lost, no request id applied twice, no cap admitted past its
//     value, and equal state hashes on every replica once the cluster heals;
//   - a proof that the checker can fail (a broken server, or a recorded
//     history with one decision flipped).
//
// What it never does: start nodes in-process, or inject latency or
// partitions between regions (the nodes do that on their node-to-node port,
// configured by --region-latency in docker-compose.yml).
//
// A failed check leaves the history, porcupine's HTML visualisation and every
// container's log under e2e/out/.
package e2e
