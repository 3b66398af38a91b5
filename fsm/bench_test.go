package fsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/capstanhq/capstan/engine"
)

// BenchmarkApplyBatch64 measures the FSM's cost per command (decode, fingerprint,
// dedupe lookup and insert, engine allow, result encoding) when raft hands it
// batches of 64 entries. Every command carries a unique request id, so the
// idempotency table works at its bound as in production. ns/op is per command.
func BenchmarkApplyBatch64(b *testing.B) {
	a := newApplier(b, Options{})
	a.ok(t0, setPolicy(1, testPolicy))
	const customers = 1024
	for i := range customers {
		a.ok(t0, &Command{CreateCustomer: &engine.CreateCustomerRequest{ID: fmt.Sprint("cus_", i)}})
		a.ok(t0, &Command{ApplyTopup: &TopupOp{Customer: fmt.Sprint("cus_", i), Topup: "promo"}})
		a.ok(t0, &Command{AddCap: &engine.AddCapRequest{Customer: fmt.Sprint("cus_", i), Value: dec("1000000000"), OverageOnly: true, ResetSch: "monthly:1"}})
	}
	// Pre-encode the commands (the proposer's work, not the FSM's).
	logs := make([]raft.Log, b.N)
	for i := range logs {
		cmd := &Command{RequestID: fmt.Sprintf("req-%d", i), Timestamp: t0 + int64(i),
			Allow: &engine.AllowRequest{Customer: fmt.Sprint("cus_", i%customers), Entitlement: "chat", Value: dec("10")}}
		data, err := EncodeCommand(cmd)
		if err != nil {
			b.Fatal(err)
		}
		logs[i] = raft.Log{Index: a.index + 1 + uint64(i), Type: raft.LogCommand, Term: 1, Data: data}
	}
	batch := make([]*raft.Log, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		batch = batch[:0]
		for ; len(batch) < 64 && i < b.N; i++ {
			batch = append(batch, &logs[i])
		}
		for _, r := range a.f.ApplyBatch(batch) {
			if res := r.(*Result); res.Err != nil || res.Duplicate || res.Decision == nil || !res.Decision.Allowed {
				b.Fatalf("unexpected result %+v", res)
			}
		}
	}
}

// BenchmarkSnapshotCapture100k measures the pause Apply sees while Snapshot
// captures a shard of 100k customers (encoding them under the read lock).
func BenchmarkSnapshotCapture100k(b *testing.B) {
	a := newApplier(b, Options{})
	a.ok(t0, setPolicy(1, testPolicy))
	for i := range 100_000 {
		id := fmt.Sprintf("cus_%06d", i)
		a.ok(t0, &Command{CreateCustomer: &engine.CreateCustomerRequest{ID: id}})
		a.ok(t0, &Command{Allow: &engine.AllowRequest{Customer: id, Entitlement: "chat", Value: dec("10")}})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s, err := a.f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		s.Release()
	}
}
