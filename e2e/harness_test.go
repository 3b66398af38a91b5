//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// Settings shared with docker-compose.yml.
const (
	project  = "capstan" // docker-compose -p, also used by the Makefile
	network  = "capstan-net"
	adminKey = "e2e-admin-key-0123456789"
	// entitlement is the e2e plan's hard-capped entitlement in e2e/testdata/policy.stof.
	plan        = "e2e"
	entitlement = "calls"
)

// node is one compose service, as docker-compose.yml defines it.
type node struct {
	ID        string // node id and compose service name
	Container string
	Region    string
	IP        string // fixed address on the compose network
	Port      int    // host port of its API
	Spare     bool   // profile "spare": started only when the suite adds a node
}

// nodes mirrors docker-compose.yml.
var nodes = []node{
	{ID: "n1", Container: "capstan-n1", Region: "us-east", IP: "172.28.70.11", Port: 17070},
	{ID: "n2", Container: "capstan-n2", Region: "us-east", IP: "172.28.70.12", Port: 17071},
	{ID: "n3", Container: "capstan-n3", Region: "eu-west", IP: "172.28.70.13", Port: 17072},
	{ID: "n4", Container: "capstan-n4", Region: "eu-west", IP: "172.28.70.14", Port: 17073},
	{ID: "n5", Container: "capstan-n5", Region: "ap-south", IP: "172.28.70.15", Port: 17074},
	{ID: "n6", Container: "capstan-n6", Region: "eu-west", IP: "172.28.70.16", Port: 17075, Spare: true},
}

func nodeByID(id string) (node, bool) {
	for _, n := range nodes {
		if n.ID == id {
			return n, true
		}
	}
	return node{}, false
}

// api is one node's Connect clients.
type api struct {
	node      node
	limiter   capstanv1connect.LimiterServiceClient
	customers capstanv1connect.CustomerServiceClient
	admin     capstanv1connect.AdminServiceClient
}

// harness drives the compose cluster.
type harness struct {
	t     testing.TB
	root  string   // the repository: docker-compose's project directory
	files []string // compose files, relative to root
	start time.Time
	apis  map[string]*api

	mu     sync.Mutex
	events []string
}

func newHarness(t testing.TB, files ...string) *harness {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker-compose.yml")); err != nil {
		t.Fatalf("no docker-compose.yml in %s: %v", root, err)
	}
	if len(files) == 0 {
		files = []string{"docker-compose.yml"}
	}
	h := &harness{t: t, root: root, files: files, start: time.Now(), apis: map[string]*api{}}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}}
	auth := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+adminKey)
			return next(ctx, req)
		}
	}))
	for _, n := range nodes {
		url := fmt.Sprintf("http://127.0.0.1:%d", n.Port)
		h.apis[n.ID] = &api{
			node:      n,
			limiter:   capstanv1connect.NewLimiterServiceClient(hc, url, auth),
			customers: capstanv1connect.NewCustomerServiceClient(hc, url, auth),
			admin:     capstanv1connect.NewAdminServiceClient(hc, url, auth),
		}
	}
	return h
}

// logf records a timestamped event; the timeline goes into the summary and
// the test log.
func (h *harness) logf(format string, args ...any) {
	msg := fmt.Sprintf("%7.1fs  ", time.Since(h.start).Seconds()) + fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.events = append(h.events, msg)
	h.mu.Unlock()
	h.t.Log(msg)
}

func (h *harness) timeline() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// run runs a command in the repository and returns its combined output.
func (h *harness) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = h.root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// compose runs docker-compose on the suite's project with the spare profile
// enabled (so down and restart also reach the spare node).
func (h *harness) compose(ctx context.Context, args ...string) (string, error) {
	full := []string{"-p", project, "--profile", "spare"}
	for _, f := range h.files {
		full = append(full, "-f", f)
	}
	return h.run(ctx, "docker-compose", append(full, args...)...)
}

func (h *harness) docker(ctx context.Context, args ...string) (string, error) {
	return h.run(ctx, "docker", args...)
}

// up starts a fresh cluster of the given nodes: down -v first (docker-compose
// 1.29 can fail recreating containers), then up -d.
func (h *harness) up(ctx context.Context, ids ...string) error {
	if err := h.down(ctx); err != nil {
		return err
	}
	if _, err := h.compose(ctx, append([]string{"up", "-d", "--no-build"}, ids...)...); err != nil {
		return err
	}
	h.logf("docker-compose up -d %s", strings.Join(ids, " "))
	return nil
}

func (h *harness) down(ctx context.Context) error {
	_, err := h.compose(ctx, "down", "-v", "--remove-orphans", "--timeout", "5")
	return err
}

// health is a container's Docker health status ("healthy", "unhealthy",
// "starting"), or its state when it is not running.
func (h *harness) health(ctx context.Context, n node) string {
	out, err := h.docker(ctx, "inspect", "-f",
		"{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", n.Container)
	if err != nil {
		return "missing"
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return strings.TrimSpace(out)
	}
	if f[0] != "running" {
		return f[0]
	}
	return f[1]
}

// waitHealthy waits until every given node's Docker health check passes and
// its Status shows a leader for every shard.
func (h *harness) waitHealthy(ctx context.Context, timeout time.Duration, ids ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	begin := time.Now()
	for {
		var waiting []string
		for _, id := range ids {
			n, _ := nodeByID(id)
			if s := h.health(ctx, n); s != "healthy" {
				waiting = append(waiting, id+":"+s)
				continue
			}
			if err := h.leadersKnown(ctx, id); err != nil {
				waiting = append(waiting, id+":"+err.Error())
			}
		}
		if len(waiting) == 0 {
			h.logf("healthy: %s (after %.1fs)", strings.Join(ids, " "), time.Since(begin).Seconds())
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes not healthy after %s: %s", timeout, strings.Join(waiting, ", "))
		case <-time.After(time.Second):
		}
	}
}

// leadersKnown checks that node id sees a leader for every shard.
func (h *harness) leadersKnown(ctx context.Context, id string) error {
	st, err := h.status(ctx, id)
	if err != nil {
		return errors.New("status: " + connect.CodeOf(err).String())
	}
	if len(st.Shards) == 0 {
		return errors.New("no shards")
	}
	for _, sh := range st.Shards {
		if sh.Leader == "" {
			return fmt.Errorf("shard %d has no leader", sh.Shard)
		}
	}
	return nil
}

func (h *harness) status(ctx context.Context, id string) (*capstanv1.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	res, err := h.apis[id].admin.Status(ctx, connect.NewRequest(&capstanv1.StatusRequest{}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// dumpLogs saves every container's log under dir.
func (h *harness) dumpLogs(dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Logf("logs: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range nodes {
		out, err := h.docker(ctx, "logs", "--timestamps", n.Container)
		if err != nil && strings.Contains(err.Error(), "No such container") {
			continue
		}
		_ = os.WriteFile(filepath.Join(dir, n.ID+".log"), []byte(out), 0o644)
	}
	if out, err := h.compose(ctx, "ps"); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "compose-ps.txt"), []byte(out), 0o644)
	}
}

// waitMember waits until node via lists node id in state ("left" and
// "removed" also match a node no longer listed).
func (h *harness) waitMember(ctx context.Context, via, id, state string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		res, err := h.apis[via].admin.Members(cctx, connect.NewRequest(&capstanv1.MembersRequest{}))
		cancel()
		if err != nil {
			last = err.Error()
		} else {
			last = "not listed"
			for _, m := range res.Msg.Members {
				if m.NodeId == id {
					last = m.State
				}
			}
			// A node that left or was removed may also be dropped from the list.
			if last == state || ((state == "left" || state == "removed") && last == "not listed") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("member %s via %s: %s after %s, want %s", id, via, last, timeout, state)
		}
		sleep(ctx, time.Second)
	}
}

// removeNode calls AdminService.RemoveNode on node via, retrying while the
// cluster answers unavailable.
func (h *harness) removeNode(ctx context.Context, via, id string, timeout time.Duration) (*capstanv1.RemoveNodeResponse, error) {
	deadline := time.Now().Add(timeout)
	for attempt := 0; ; attempt++ {
		// It moves every replica the node holds through raft: give it time.
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		res, err := h.apis[via].admin.RemoveNode(cctx, connect.NewRequest(&capstanv1.RemoveNodeRequest{NodeId: id}))
		cancel()
		if err == nil {
			return res.Msg, nil
		}
		h.logf("RemoveNode %s via %s: %v (attempt %d)", id, via, err, attempt+1)
		if definite(err) && attempt > 0 {
			// An earlier attempt without an answer may have done it.
			if h.waitMember(ctx, via, id, "removed", 5*time.Second) == nil {
				h.logf("RemoveNode %s: an earlier attempt removed it (%v)", id, err)
				return &capstanv1.RemoveNodeResponse{}, nil
			}
		}
		if definite(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("RemoveNode %s via %s: %w", id, via, err)
		}
		sleep(ctx, time.Second)
	}
}
