package cluster

import (
	"os"
	"testing"
)

// requireClusterTests gates the in-process multi-node clusters (3 and 5 nodes with
// leader kills, partitions and linearizability checks). They pass on a quiet
// machine but miss election deadlines and race for ports when the 2-core machine is
// saturated, so `make test` (and CI) leaves them out until they are hardened;
// `make test-cluster` runs them. Tracked in issue #4.
func requireClusterTests(t *testing.T) {
	t.Helper()
	if os.Getenv("CAPSTAN_CLUSTER_TESTS") == "" {
		t.Skip("multi-node cluster test: run with CAPSTAN_CLUSTER_TESTS=1 (make test-cluster)")
	}
}
