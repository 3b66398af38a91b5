package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Etcd is the etcd baseline: one etcd member the harness starts (its WAL fsyncs
// every commit, as Capstan's log does), deciding the seed's capped counter with a
// compare-and-swap transaction on the key's mod revision, retried on conflict (see
// etcdClient.Do). It is driven through etcd's JSON
// gateway (/v3/kv/...) because the module carries no gRPC client; the gateway adds
// JSON and an in-process gRPC hop to every call.
type Etcd struct {
	Timeout time.Duration

	dir    string
	proc   *process
	base   string
	client *http.Client
	f      *Fixture
	cache  sync.Map // customer id -> etcdKV last seen
}

// maxCASAttempts bounds the retries of one decision under contention.
const maxCASAttempts = 100

func (t *Etcd) Name() string { return "etcd" }
func (t *Etcd) Describe() string {
	return "etcd 1 member (WAL fsync), txn compare-and-swap on mod_revision from the last value seen (one round trip unless contended), JSON gateway over HTTP/1.1"
}
func (t *Etcd) Regions() []string      { return []string{"local"} }
func (t *Etcd) Supports(k OpKind) bool { return k == OpAllow }

func (t *Etcd) Start(ctx context.Context) error {
	bin, err := lookBin("etcd", "apt-get install etcd-server")
	if err != nil {
		return err
	}
	if t.dir, err = os.MkdirTemp("", "capstan-bench-etcd-"); err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	t.base = client
	t.proc, err = startProcess(t.dir, "etcd", bin, []string{
		"--name", "bench", "--data-dir", t.dir + "/data",
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench=" + peer, "--log-level", "warn", "--logger", "zap",
	}, nil)
	if err != nil {
		return err
	}
	t.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}}
	err = waitFor(ctx, t.proc, 20*time.Second, func(ctx context.Context) error {
		var out struct {
			Header map[string]any `json:"header"`
		}
		return t.call(ctx, "/v3/kv/range", map[string]any{"key": b64("health")}, &out)
	})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	return nil
}

func (t *Etcd) Setup(ctx context.Context, f *Fixture) error {
	t.f = f
	ids := f.IDs()
	return parallel(ctx, len(ids), 16, func(ctx context.Context, i int) error {
		put := map[string]any{"key": b64(ids[i]), "value": b64(fmt.Sprintf("%d,0,%d", f.Prime, f.CapMicroUSD(i)))}
		var out json.RawMessage
		if err := t.call(ctx, "/v3/kv/put", put, &out); err != nil {
			return fmt.Errorf("etcd: setup %s: %w", ids[i], err)
		}
		return nil
	})
}

func (t *Etcd) Client(int, int) (Client, error) { return etcdClient{t}, nil }

func (t *Etcd) Close() error {
	t.proc.stop(5 * time.Second)
	if t.dir != "" {
		os.RemoveAll(t.dir)
	}
	return nil
}

type etcdClient struct{ t *Etcd }

type etcdKV struct {
	Value       string `json:"value"`
	ModRevision string `json:"mod_revision"`
}

type etcdRange struct {
	KVs []etcdKV `json:"kvs"`
}

type etcdTxnResp struct {
	Header struct {
		Revision string `json:"revision"`
	} `json:"header"`
	Succeeded bool `json:"succeeded"`
	Responses []struct {
		ResponseRange *etcdRange `json:"response_range"`
	} `json:"responses"`
}

// Do decides with one transaction in the common case: the last value this process
// saw for the key (cached; a range on a miss) is the guess, the transaction
// compares its mod revision and either writes the new counter (allowed) or, for a
// denial, only confirms the value was current — a denial decided on a stale value
// would not be linearizable. On a conflict the transaction's failure branch
// returns the current value and the decision is made again.
func (c etcdClient) Do(ctx context.Context, op *Op) (Outcome, error) {
	t := c.t
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(t.Timeout, 5*time.Second))
	defer cancel()
	id := t.f.ID(op.Customer)
	key := b64(id)
	add := t.f.Values[op.Value]
	var kv etcdKV
	if v, ok := t.cache.Load(id); ok {
		kv = v.(etcdKV)
	} else {
		var rng etcdRange
		if err := t.call(ctx, "/v3/kv/range", map[string]any{"key": key}, &rng); err != nil {
			return Failed, err
		}
		if len(rng.KVs) != 1 {
			return Failed, fmt.Errorf("etcd: customer %s not found", id)
		}
		kv = rng.KVs[0]
	}
	for attempt := 0; attempt < maxCASAttempts; attempt++ {
		u, o, capv, err := parseCounter(kv.Value)
		if err != nil {
			return Failed, err
		}
		cost := (max(0, u+add-SeedLimitTokens) - max(0, u-SeedLimitTokens)) * SeedPriceMicroUSD
		deny := o+cost > capv
		compare := []any{map[string]any{"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": kv.ModRevision}}
		read := []any{map[string]any{"request_range": map[string]any{"key": key}}}
		next := etcdKV{Value: b64(fmt.Sprintf("%d,%d,%d", u+add, o+cost, capv))}
		success := []any{map[string]any{"request_put": map[string]any{"key": key, "value": next.Value}}}
		if deny {
			success = read
		}
		var res etcdTxnResp
		if err := t.call(ctx, "/v3/kv/txn", map[string]any{"compare": compare, "success": success, "failure": read}, &res); err != nil {
			t.cache.Delete(id)
			return Failed, err
		}
		if res.Succeeded {
			if deny {
				return Denied, nil
			}
			next.ModRevision = res.Header.Revision
			t.cache.Store(id, next)
			return Allowed, nil
		}
		if len(res.Responses) != 1 || res.Responses[0].ResponseRange == nil || len(res.Responses[0].ResponseRange.KVs) != 1 {
			return Failed, fmt.Errorf("etcd: txn failed without the current value")
		}
		kv = res.Responses[0].ResponseRange.KVs[0] // someone else won: decide again on what they wrote
		t.cache.Store(id, kv)
	}
	return Failed, fmt.Errorf("etcd: %d compare-and-swap conflicts in a row", maxCASAttempts)
}

// parseCounter reads "usage,overage,cap" (base64 as etcd's gateway returns it).
func parseCounter(v string) (u, o, c int64, err error) {
	raw, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return 0, 0, 0, err
	}
	parts := strings.Split(string(raw), ",")
	if len(parts) != 3 {
		return 0, 0, 0, fmt.Errorf("etcd: bad counter %q", raw)
	}
	var n [3]int64
	for i, p := range parts {
		if n[i], err = strconv.ParseInt(p, 10, 64); err != nil {
			return 0, 0, 0, err
		}
	}
	return n[0], n[1], n[2], nil
}

func (t *Etcd) call(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// ServerCPU is the CPU time of the processes the target started.
func (t *Etcd) ServerCPU() time.Duration { return processesCPU(t.proc) }
