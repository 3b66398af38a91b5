package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDev runs `capstan dev`, reads the key and URL it prints and makes the
// calls its curl examples show.
func TestDev(t *testing.T) {
	listen, raftAddr := freeAddr(t), freeAddr(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	p := start(t, "http://"+listen, nil, "dev", "--data-dir", dataDir, "--listen", listen, "--raft-addr", raftAddr)

	// The banner is printed once the server listens; wait for it.
	var banner string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if banner = p.stdout.String(); strings.Contains(banner, "metrics at") {
			break
		}
	}
	key, err := os.ReadFile(filepath.Join(dataDir, devKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	k := strings.TrimSpace(string(key))
	for _, want := range []string{"http://" + listen, "API key:  " + k, "capstan.v1.LimiterService/Allow", "Authorization: Bearer " + k} {
		if !strings.Contains(banner, want) {
			t.Fatalf("banner lacks %q:\n%s", want, banner)
		}
	}
	// Run the curl examples' requests.
	bodies := regexp.MustCompile(`-d '([^']*)'`).FindAllStringSubmatch(banner, -1)
	procs := regexp.MustCompile(`/(capstan\.v1\.[A-Za-z]+/[A-Za-z]+) `).FindAllStringSubmatch(banner, -1)
	if len(bodies) != 2 || len(procs) != 2 {
		t.Fatalf("want two curl examples:\n%s", banner)
	}
	mustJSON(t, p.url, k, procs[0][1], bodies[0][1])
	out := mustJSON(t, p.url, k, procs[1][1], bodies[1][1])
	if str(out, "allowed") != "true" || str(out, "remaining") != "10247" {
		t.Fatalf("allow: %v", out)
	}
	// The default plan makes a customer without a plan work.
	mustJSON(t, p.url, k, "capstan.v1.CustomerService/CreateCustomer", `{"id":"planless"}`)
	out = mustJSON(t, p.url, k, "capstan.v1.LimiterService/Allow", `{"customer":"planless","entitlement":"ai_chat","value":"1001"}`)
	if str(out, "reason") != "limit" {
		t.Fatalf("free plan allow: %v", out)
	}
	p.stop()

	// A restart reuses the key.
	p = start(t, "http://"+listen, nil, "dev", "--data-dir", dataDir, "--listen", listen, "--raft-addr", raftAddr)
	mustJSON(t, p.url, k, "capstan.v1.CustomerService/GetCustomer", `{"id":"cus_123"}`)
	p.stop()
}
