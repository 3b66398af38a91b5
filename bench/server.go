package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// ServerConfig is how the harness runs `capstan serve`.
type ServerConfig struct {
	// Bin is the capstan binary; empty looks beside this executable, then on PATH.
	Bin string `json:"bin,omitempty"`
	// Shards is --shards (raft groups); 0 leaves the server's default.
	Shards int `json:"shards"`
	// Regions are the nodes' regions; node i gets Regions[i % len].
	Regions []string `json:"regions"`
	// Latency is the simulated one-way delay between regions (see RegionLatency),
	// passed to the nodes when they have the hook.
	Latency string `json:"latency,omitempty"`
	// Conns is the number of HTTP/2 connections per node the workers spread over.
	Conns   int           `json:"conns"`
	Timeout time.Duration `json:"timeout_ns"`
	// Pprof serves /debug/pprof on every node, to profile it during a run.
	Pprof bool `json:"pprof,omitempty"`
	// KeepData leaves the nodes' data directories and logs behind.
	KeepData bool `json:"keep_data,omitempty"`
}

// benchKey is the admin API key the harness gives its servers (CAPSTAN_API_KEYS);
// the server wants keys of 16 characters or more.
const benchKey = "benchkey-capstan-bench-0001"

// Server is Capstan itself: `capstan serve` processes the harness starts on free
// 127.0.0.1 ports with temporary data directories, one (single-node) or three
// (3-node, which needs a multi-node mode), driven through the Connect API.
type Server struct {
	cfg   ServerConfig
	nodes int
	name  string

	dir     string
	bin     string
	procs   []*process
	urls    []string
	regions []string
	notes   []string

	limiters  [][]capstanv1connect.LimiterServiceClient // [node][conn]
	customers capstanv1connect.CustomerServiceClient
	f         *Fixture
}

// NewServer returns a target of n capstan nodes.
func NewServer(cfg ServerConfig, n int) *Server {
	if len(cfg.Regions) == 0 {
		cfg.Regions = []string{"local"}
	}
	cfg.Conns = cmp.Or(cfg.Conns, 4)
	cfg.Timeout = cmp.Or(cfg.Timeout, 5*time.Second)
	s := &Server{cfg: cfg, nodes: n}
	for i := 0; i < n; i++ {
		s.regions = append(s.regions, cfg.Regions[i%len(cfg.Regions)])
	}
	return s
}

func (s *Server) Name() string {
	if s.name != "" {
		return s.name
	}
	if s.nodes == 1 {
		return "single-node"
	}
	return fmt.Sprintf("%d-node", s.nodes)
}

func (s *Server) Describe() string {
	shards := "the server's default shards"
	if s.cfg.Shards > 0 {
		shards = fmt.Sprintf("%d shards", s.cfg.Shards)
	}
	d := fmt.Sprintf("capstan serve, %d node(s) on 127.0.0.1, %s (raft groups, boltdb fsync), Connect binary protobuf over h2c with an API key",
		s.nodes, shards)
	if len(s.notes) > 0 {
		d += "; " + strings.Join(s.notes, "; ")
	}
	return d
}

func (s *Server) Regions() []string    { return s.regions }
func (s *Server) Supports(OpKind) bool { return true }

// findBin locates the capstan binary: the configured path, beside this
// executable (make build puts both in ./bin), or on PATH.
func (s *Server) findBin() (string, error) {
	if s.cfg.Bin != "" {
		return s.cfg.Bin, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "capstan")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("capstan"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: no capstan binary beside capstan-bench or on PATH (make build)", ErrNotAvailable)
}

// serveFlags lists the flags `capstan serve -h` prints.
func serveFlags(bin string) (map[string]bool, error) {
	out, _ := exec.Command(bin, "serve", "-h").CombinedOutput()
	flags := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "-") {
			flags[strings.TrimLeft(f[0], "-")] = true
		}
	}
	if !flags["listen"] {
		return nil, fmt.Errorf("%w: %s serve -h lists no --listen flag:\n%s", ErrNotAvailable, bin, out)
	}
	return flags, nil
}

// Start starts the nodes. A cluster follows docs/cluster-contract.md: every node
// gets its own API, raft and gossip ports; the first starts without --join, the
// others join its gossip address; all say --bootstrap-expect so the cluster forms
// (shards placed across the nodes' regions) once every node is in.
func (s *Server) Start(ctx context.Context) error {
	bin, err := s.findBin()
	if err != nil {
		return err
	}
	s.bin = bin
	flags, err := serveFlags(bin)
	if err != nil {
		return err
	}
	if s.nodes > 1 {
		for _, f := range []string{"join", "gossip-addr", "bootstrap-expect"} {
			if !flags[f] {
				return fmt.Errorf("%w: capstan serve has no --%s flag yet (no multi-node mode to start)", ErrNotAvailable, f)
			}
		}
	}
	var latency RegionLatency
	if s.cfg.Latency != "" && s.nodes > 1 {
		if latency, err = ParseRegionLatency(s.cfg.Latency); err != nil {
			return err
		}
		if flags["region-latency"] {
			s.notes = append(s.notes, "one-way latency injected between regions: "+latency.String())
		} else {
			s.notes = append(s.notes, "region latency NOT injected (capstan serve has no --region-latency flag yet)")
			latency = nil
		}
	}
	if s.dir, err = os.MkdirTemp("", "capstan-bench-server-"); err != nil {
		return err
	}
	policy := filepath.Join(s.dir, "seed.stof")
	if err := os.WriteFile(policy, []byte(SeedPolicy), 0o644); err != nil {
		return err
	}
	const portsPerNode = 3 // API, raft, gossip
	ports, err := freePorts(portsPerNode * s.nodes)
	if err != nil {
		return err
	}
	addr := func(node, kind int) string { return fmt.Sprintf("127.0.0.1:%d", ports[portsPerNode*node+kind]) }
	env := []string{"CAPSTAN_API_KEYS=" + benchKey + ":admin", "CAPSTAN_CLUSTER_KEY=" + benchKey + "-cluster"}
	for i := 0; i < s.nodes; i++ {
		id := fmt.Sprintf("n%d", i+1)
		args := []string{"serve", "--node-id", id, "--data-dir", filepath.Join(s.dir, id), "--listen", addr(i, 0),
			"--raft-addr", addr(i, 1), "--region", s.regions[i], "--policy", policy, "--log-level", "warn"}
		if s.cfg.Shards > 0 {
			args = append(args, "--shards", strconv.Itoa(s.cfg.Shards))
		}
		switch {
		case s.nodes == 1:
			args = append(args, "--bootstrap")
		default:
			args = append(args, "--gossip-addr", addr(i, 2), "--bootstrap-expect", strconv.Itoa(s.nodes))
			if flags["replicas"] {
				args = append(args, "--replicas", strconv.Itoa(min(3, s.nodes)))
			}
			if i > 0 {
				args = append(args, "--join", addr(0, 2))
			}
		}
		if latency != nil {
			args = append(args, "--region-latency", latency.String())
		}
		if s.cfg.Pprof {
			args = append(args, "--pprof")
		}
		p, err := startProcess(s.dir, id, bin, args, env)
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		s.urls = append(s.urls, "http://"+addr(i, 0))
	}
	for i, p := range s.procs {
		if err := waitFor(ctx, p, 90*time.Second, func(ctx context.Context) error { return healthy(ctx, s.urls[i]) }); err != nil {
			return fmt.Errorf("%s: node %d: %w", s.Name(), i+1, err)
		}
	}
	s.connect()
	return nil
}

// healthy asks grpc.health.v1 over the Connect protocol (JSON) for SERVING.
func healthy(ctx context.Context, base string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct{ Status string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || (out.Status != "SERVING" && out.Status != "SERVING_STATUS_SERVING") {
		return fmt.Errorf("health: %s %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// h2c returns an HTTP client speaking plain-text HTTP/2 (one connection).
func h2c() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 16}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}
}

func (s *Server) connect() {
	s.limiters = make([][]capstanv1connect.LimiterServiceClient, s.nodes)
	for i, u := range s.urls {
		for c := 0; c < s.cfg.Conns; c++ {
			s.limiters[i] = append(s.limiters[i], capstanv1connect.NewLimiterServiceClient(h2c(), u))
		}
	}
	s.customers = capstanv1connect.NewCustomerServiceClient(h2c(), s.urls[0])
}

func authed[T any](msg *T) *connect.Request[T] {
	r := connect.NewRequest(msg)
	r.Header().Set("Authorization", "Bearer "+benchKey)
	return r
}

// Setup creates every customer with its caps through the API and primes it to
// its plan limit, 128 at a time (a raft-backed server batches what arrives together).
func (s *Server) Setup(ctx context.Context, f *Fixture) error {
	s.f = f
	ids := f.IDs()
	lim := s.limiters[0][0]
	prime := strconv.FormatInt(f.Prime, 10)
	return parallel(ctx, len(ids), 128, func(ctx context.Context, i int) error {
		id := ids[i]
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := s.customers.CreateCustomer(ctx, authed(&capstanv1.CreateCustomerRequest{Id: id, Plan: SeedPlan})); err != nil {
			return fmt.Errorf("create %s: %w", id, err)
		}
		for _, c := range f.CapsOf(i) {
			req := &capstanv1.AddCapRequest{Customer: id, CapId: c.ID, Value: strconv.FormatInt(c.USD, 10),
				OverageOnly: true, IgnoreGrants: true, ResetSch: c.ResetSch}
			if _, err := s.customers.AddCap(ctx, authed(req)); err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
				return fmt.Errorf("cap %s on %s: %w", c.ID, id, err)
			}
		}
		if f.Prime > 0 {
			if _, err := lim.Allow(ctx, authed(&capstanv1.AllowRequest{Customer: id, Entitlement: SeedEntitlement, Value: prime})); err != nil {
				return fmt.Errorf("prime %s: %w", id, err)
			}
		}
		return nil
	})
}

// CPUProfile fetches a CPU profile of the first node over d (it needs Pprof).
func (s *Server) CPUProfile(ctx context.Context, d time.Duration) ([]byte, error) {
	if !s.cfg.Pprof {
		return nil, fmt.Errorf("pprof is off")
	}
	secs := max(1, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", s.urls[0], secs), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("pprof: %s", resp.Status)
	}
	return b, err
}

func (s *Server) Client(w, region int) (Client, error) {
	conns := s.limiters[region]
	return &serverClient{s: s, lim: conns[w%len(conns)]}, nil
}

func (s *Server) Close() error {
	for _, p := range s.procs {
		p.stop(10 * time.Second)
	}
	if s.dir != "" && !s.cfg.KeepData {
		os.RemoveAll(s.dir)
	}
	return nil
}

// serverClient is one worker's caller; it reuses its request messages.
type serverClient struct {
	s       *Server
	lim     capstanv1connect.LimiterServiceClient
	allow   capstanv1.AllowRequest
	reserve capstanv1.ReserveRequest
	settle  capstanv1.SettleRequest
}

func (c *serverClient) Do(ctx context.Context, op *Op) (Outcome, error) {
	f := c.s.f
	ctx, cancel := context.WithTimeout(ctx, c.s.cfg.Timeout)
	defer cancel()
	id := f.ID(op.Customer)
	if op.Kind == OpAllow {
		c.allow.Customer, c.allow.Entitlement, c.allow.Value = id, SeedEntitlement, f.ValueString(op.Value)
		resp, err := c.lim.Allow(ctx, authed(&c.allow))
		if err != nil {
			return Failed, err
		}
		return allowedOr(resp.Msg.Allowed), nil
	}
	c.reserve.Customer, c.reserve.Entitlement, c.reserve.Value = id, SeedEntitlement, f.ValueString(op.Value)
	r, err := c.lim.Reserve(ctx, authed(&c.reserve))
	if err != nil {
		return Failed, err
	}
	if !r.Msg.Allowed {
		return Denied, nil
	}
	c.settle.Customer, c.settle.Entitlement, c.settle.HoldId, c.settle.Value = id, SeedEntitlement, r.Msg.HoldId, f.ValueString(op.Settle)
	st, err := c.lim.Settle(ctx, authed(&c.settle))
	if err != nil {
		return Failed, err
	}
	return allowedOr(st.Msg.Allowed), nil
}

func allowedOr(ok bool) Outcome {
	if ok {
		return Allowed
	}
	return Denied
}

// ServerCPU is the CPU time of the processes the target started.
func (s *Server) ServerCPU() time.Duration { return processesCPU(s.procs...) }
