package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// capstanBin is the capstan binary built once for the package's tests.
var capstanBin string

const testVersion = "v0.0.0-e2e"

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "capstan-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	capstanBin = filepath.Join(dir, "capstan")
	build := exec.Command("go", "build", "-o", capstanBin,
		"-ldflags", "-X github.com/capstanhq/capstan/internal/version.Version="+testVersion, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build capstan: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a process's output for failure reports.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one running capstan process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	client *http.Client // for health checks
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	err    error
}

// start runs the binary with args and env, and waits until its gRPC health
// check answers SERVING at url.
func start(t *testing.T, url string, env []string, args ...string) *proc {
	t.Helper()
	return startWith(t, http.DefaultClient, url, env, args...)
}

// startWith is start with the HTTP client the health checks use.
func startWith(t *testing.T, client *http.Client, url string, env []string, args ...string) *proc {
	t.Helper()
	p := launch(t, client, url, env, args...)
	p.waitHealthy()
	return p
}

// launch starts the binary without waiting for it to be healthy.
func launch(t *testing.T, client *http.Client, url string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, url: url, client: client, done: make(chan struct{})}
	p.cmd = exec.Command(capstanBin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if dir := t.TempDir(); dir != "" {
		p.cmd.Dir = dir
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("capstan %s stderr:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	return p
}

func (p *proc) waitHealthy() {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			p.t.Fatalf("capstan exited before it was healthy: %v\nstderr:\n%s", p.err, p.stderr.String())
		default:
		}
		status, _ := healthJSONWith(p.client, p.url)
		if serving(status) {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("capstan not healthy after 60s (last status %q)\nstderr:\n%s", status, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("capstan did not stop within 30s of SIGTERM\nstderr:\n%s", p.stderr.String())
	}
	if p.err != nil {
		p.t.Fatalf("capstan exited with %v\nstderr:\n%s", p.err, p.stderr.String())
	}
}

// serving reads a HealthCheckResponse status in JSON: grpchealth's proto
// names the enum values SERVING_STATUS_*.
func serving(status string) bool { return status == "SERVING" || status == "SERVING_STATUS_SERVING" }

// healthJSON asks grpc.health.v1 over the Connect protocol with JSON.
func healthJSON(url string) (string, error) { return healthJSONWith(http.DefaultClient, url) }

func healthJSONWith(client *http.Client, url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/grpc.health.v1.Health/Check", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct{ Status string }
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return "", err
	}
	return out.Status, nil
}

// callJSON POSTs a Connect unary call with a JSON body and decodes the JSON
// answer (an error answer is {"code", "message"}).
func callJSON(t *testing.T, url, key, procedure, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("POST", url+"/"+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: response is not JSON (%d): %s", procedure, res.StatusCode, raw)
	}
	return res.StatusCode, out
}

// mustJSON is callJSON that expects 200.
func mustJSON(t *testing.T, url, key, procedure, body string) map[string]any {
	t.Helper()
	code, out := callJSON(t, url, key, procedure, body)
	if code != http.StatusOK {
		t.Fatalf("%s %s: %d %v", procedure, body, code, out)
	}
	return out
}

// str reads a string field of a decoded JSON answer ("" when absent).
func str(m map[string]any, path ...string) string {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[k]
	}
	switch v := cur.(type) {
	case string:
		return v
	case bool:
		return fmt.Sprint(v)
	case float64:
		return fmt.Sprint(v)
	case nil:
		return ""
	}
	b, _ := json.Marshal(cur)
	return string(b)
}
