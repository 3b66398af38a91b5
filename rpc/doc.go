// Package rpc is Capstan's API edge: the Connect handlers for capstan.v1's
// LimiterService, CustomerService, PolicyService and AdminService, the
// interceptors around them (API-key auth, request logging, Prometheus metrics),
// gRPC health and reflection.
//
// Handlers are thin. Each one validates its request completely (ids, amounts,
// durations, schedules, timestamps; errors name the proto field), translates it
// into one fsm.Command or one read, hands that to the Backend, and translates
// the answer back. Errors are mapped to Connect codes in one place (errors.go).
// The package never holds customer state, never decides anything itself and
// never talks to raft: the Backend (cluster.Node) does. The one exception is
// PolicyService.TestPolicy, which runs conformance cases on a sandbox engine of
// its own per case, never on the shards' state.
package rpc
