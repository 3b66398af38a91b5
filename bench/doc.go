// Package bench is Capstan's load harness: it measures decision latency under an
// open-loop arrival rate against the engine in-process, a single-node server, a
// 3-node cluster on 127.0.0.1, and Redis and etcd baselines that implement the same
// capped counter, and reports them side by side.
//
// # Open loop, no coordinated omission
//
// Every run pre-generates its schedule: the intended send time of each request
// (Poisson or evenly spaced arrivals at the offered rate) and the request itself
// (customer, kind, value, client region). A fixed pool of workers claims schedule
// slots in order; a worker sleeps until its slot's intended time and sends. Latency
// is measured from the intended time, not from when the request actually left, so a
// slow target cannot slow the generator down and hide its own queueing: when every
// worker is busy the next request is sent late and that lateness is counted. The
// generator's own lateness (actual minus intended send time) and CPU use are reported
// separately, together with a null target that measures the harness alone.
//
// # What it owns and what it never does
//
// The package owns the schedule, the recorder (HDR histograms, one set per worker
// shard and client region, merged at the end), the targets and the reports
// (markdown, JSON and an SVG plot written by hand). It starts and stops the server,
// Redis and etcd processes it measures, on free 127.0.0.1 ports with temporary data
// directories, and it never sends traffic anywhere but the loopback address.
// Benchmarks never run in `go test` beyond a smoke run of a couple of seconds.
package bench
