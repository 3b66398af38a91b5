package cluster

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// scrape fetches url and returns every sample as "name{labels}" -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestNodeMetrics(t *testing.T) {
	n := openNode(t, testConfig(t, t.TempDir(), "127.0.0.1:0"))
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.Collector())
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	const allows = 5
	for i := range allows {
		mustApply(t, n, "cus_m", allow("cus_m", fmt.Sprintf("m-%d", i), 1))
	}
	id, err := n.shardID("cus_m")
	if err != nil {
		t.Fatal(err)
	}

	m := scrape(t, srv.URL)
	leaders, shards := 0.0, 0
	for k, v := range m {
		if strings.HasPrefix(k, "capstan_shard_is_leader{") {
			leaders += v
			shards++
		}
	}
	if shards != n.Shards() || leaders != float64(n.Shards()) {
		t.Errorf("capstan_shard_is_leader: %d series summing to %v, want %d each", shards, leaders, n.Shards())
	}
	sh := fmt.Sprintf(`{shard="%d"}`, id)
	if v := m["capstan_shard_applied_index"+sh]; v <= 0 {
		t.Errorf("capstan_shard_applied_index%s = %v, want > 0", sh, v)
	}
	if a, l := m["capstan_shard_applied_index"+sh], m["capstan_shard_last_log_index"+sh]; l < a {
		t.Errorf("shard %d: last log index %v < applied index %v", id, l, a)
	}
	if _, ok := m["capstan_shard_customers"+sh]; !ok {
		t.Errorf("no capstan_shard_customers%s", sh)
	}
	if v := m["capstan_shard_policy_version"+sh]; v != 1 {
		t.Errorf("capstan_shard_policy_version%s = %v, want 1", sh, v)
	}
	if v := m[`capstan_proposals_total{outcome="ok"}`]; v < allows {
		t.Errorf(`capstan_proposals_total{outcome="ok"} = %v, want >= %d`, v, allows)
	}
	if v := m["capstan_proposal_duration_seconds_count"]; v < allows {
		t.Errorf("capstan_proposal_duration_seconds_count = %v, want >= %d", v, allows)
	}
	if v := m[`capstan_forwarded_total{outcome="ok"}`]; v != 0 {
		t.Errorf("a standalone node forwarded %v calls", v)
	}
	if v := m[`capstan_cluster_members{state="alive"}`]; v != 1 {
		t.Errorf(`capstan_cluster_members{state="alive"} = %v, want 1`, v)
	}
	if _, ok := m["capstan_leader_changes_total"]; !ok {
		t.Error("no capstan_leader_changes_total")
	}
}
