package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstanhq/capstan/engine"
)

func TestOptionPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "capstan.yaml")
	if err := os.WriteFile(cfg, []byte("data-dir: /from/config\nregion: config-region\nshards: 8\nbootstrap: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CAPSTAN_REGION": "env-region", "CAPSTAN_NODE_ID": "env-node"}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o options
	o.flags(fs, serveDefaults())
	err := parseOptions(fs, []string{"--config", cfg, "--node-id", "flag-node"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.nodeID != "flag-node" || o.region != "env-region" || o.dataDir != "/from/config" || o.shards != 8 || !o.bootstrap || o.listen != "127.0.0.1:7070" {
		t.Fatalf("options = %+v", o)
	}
}

func TestOptionErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "capstan.yaml")
	if err := os.WriteFile(cfg, []byte("data-dri: typo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--config", cfg}, nil, `unknown setting "data-dri"`},
		{nil, map[string]string{"CAPSTAN_SHARDS": "many"}, "CAPSTAN_SHARDS"},
		{[]string{"extra"}, nil, "unexpected arguments"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var o options
		o.flags(fs, serveDefaults())
		err := parseOptions(fs, tc.args, func(k string) string { return tc.env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) || !isUsage(err) {
			t.Errorf("%v %v: err = %v, want a usage error containing %q", tc.args, tc.env, err, tc.want)
		}
	}
	o := serveDefaults()
	o.logLevel, o.logFormat = "info", "text"
	o.tlsCert = "cert.pem"
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Errorf("tls cert without key: %v", err)
	}
}

func TestDevPolicy(t *testing.T) {
	p, err := engine.LoadPolicy(devPolicy, "stof")
	if err != nil {
		t.Fatal(err)
	}
	if d := p.DefaultPlan(); d == nil || d.Name != "free" {
		t.Fatalf("default plan = %v", d)
	}
	if p.Plans["starter"] == nil || p.Credits["claude_sonnet_4"] == nil {
		t.Fatal("the seed's starter plan or credit is missing")
	}
}

func TestFormatOf(t *testing.T) {
	for in, want := range map[string]string{"p.json": "json", "p.YML": "yaml", "p.toml": "toml", "p.stof": "stof", "p.txt": "", "p": ""} {
		if got := formatOf(in, ""); got != want {
			t.Errorf("formatOf(%q) = %q, want %q", in, got, want)
		}
	}
	if formatOf("p.json", "yaml") != "yaml" {
		t.Error("the flag does not win")
	}
}
