package cluster

import (
	"os"
	"testing"
)

// requireClusterTests gates the in-process multi-node clusters (3 and 5 nodes
// with leader kills, partitions and linearizability checks): skipped with
// -short, and when CAPSTAN_CLUSTER_TESTS=0 (an escape hatch for a machine too
// loaded to run them). They hold their own ports, size fsm's event ring down
// and wait on conditions with generous deadlines, so a busy 2-core machine
// slows them down rather than failing them.
func requireClusterTests(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-node cluster test (skipped with -short)")
	}
	if os.Getenv("CAPSTAN_CLUSTER_TESTS") == "0" {
		t.Skip("multi-node cluster test: CAPSTAN_CLUSTER_TESTS=0")
	}
}
