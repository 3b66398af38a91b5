// Package linearize records the decisions a test workload gets from Capstan
// and checks them against a sequential model of a capped counter, one counter
// per customer: Allow(customer, amount) admits iff counter+amount <= cap, a
// denied allow changes nothing, and Read(customer) returns the counter.
//
// What this package owns:
//
//   - the porcupine model of that counter (Model), partitioned per customer;
//   - a concurrency-safe Recorder that stamps every operation's call and
//     return with a monotonic clock and keeps operations whose outcome is
//     unknown (timeouts, lost connections) with an open return time;
//   - Check, which runs porcupine per customer under a time budget, runs an
//     independent over-cap count that needs no search, and writes porcupine's
//     HTML visualisation when a customer's history is not linearizable.
//
// What this package never does: talk to Capstan. The workload calls the
// system and tells the Recorder what came back. Amounts are int64 units
// (whole micro-units or small integers in tests), never float64.
//
// Unknown outcomes are the expensive part of checking: an operation with an
// open return time is concurrent with everything after its call, so the
// search grows with each one. Keep them to tens per customer, not hundreds:
// spread load over more customers, move a workload to a fresh customer once
// one has collected a few dozen unknowns (Recorder.Unknowns), and resolve
// unknowns after the run by looking their request ids up in the dedupe table
// (History.Resolve).
package linearize
