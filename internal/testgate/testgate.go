// Package testgate holds the one switch shared by the multi-node tests in
// cluster/, cmd/capstan and cmd/capstanctl.
package testgate

import (
	"os"
	"testing"
)

// RequireCluster gates a multi-node test (in-process clusters or several real
// processes): skipped with -short, and when CAPSTAN_CLUSTER_TESTS=0 (an escape
// hatch for a machine too loaded to run them). `make test` runs them; the
// tests hold their own ports and wait on conditions with generous deadlines,
// so a busy machine slows them down rather than failing them.
func RequireCluster(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-node cluster test (skipped with -short)")
	}
	if os.Getenv("CAPSTAN_CLUSTER_TESTS") == "0" {
		t.Skip("multi-node cluster test: CAPSTAN_CLUSTER_TESTS=0")
	}
}
