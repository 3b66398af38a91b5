// Package faultnet injects network faults between Capstan nodes inside the
// project's own connection layer: added one-way latency and partitions
// between nodes or regions, changed at runtime. The kernel here has no tc
// netem and one Docker network cannot cut a region from another, so the
// node-to-node port wraps its dialer and listener with this package; Docker
// stays the tool for killing, pausing and disconnecting whole nodes.
//
// What this package owns:
//
//   - Rules: per-link latency and partitions keyed by node or region names
//     (and "*"), safe to change while connections are open, with a small
//     spec language ("us-east<->eu-west=40ms,us-east<->ap=drop");
//   - Dialer and Listener wrappers whose connections apply the rules, and a
//     short preamble a Dialer sends so the remote Listener knows which node
//     and region a connection comes from;
//   - breaking live connections when their link is partitioned.
//
// What this package never does: decide which faults to inject, know about
// raft or the port's multiplexing, or touch connections it cannot label
// (those pass through untouched, so clients and unwrapped peers keep
// working on a wrapped port).
//
// Latency is applied where bytes are written: each Write is queued and
// delivered in order once its delay has passed, without holding the writer.
// Both ends of a link should therefore be wrapped for both directions to be
// delayed; a dial also waits one round trip, like a TCP handshake.
package faultnet
