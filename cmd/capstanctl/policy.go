package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/internal/conformance"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
)

func init() {
	register("policy", "test", &command{
		group:   "policy",
		summary: "run conformance cases (YAML files or directories) locally or on the server",
		usage:   "[--remote | --server URL] [--run SUBSTR] PATH...",
		about: `Runs policy conformance cases: each *.yaml / *.yml file is one case (a policy and
steps with expectations; see the conformance README). Directories are read one
level deep, in name order.

Where the cases run:
  default                 locally, on capstanctl's embedded engine (no server needed)
  --remote                on the server at --server / CAPSTAN_SERVER (PolicyService.TestPolicy)
  --server URL            on that server (naming a server on the command line implies --remote)

On the server each case runs on a sandbox engine of its own, never on the
cluster's state; a case without a policy of its own runs under the policy in
force there (locally such a case is an error). Many files are sent in batches
of at most 200 files / 3 MiB.

Prints PASS/FAIL per case and "N passed, N failed"; exits 1 when any case
failed, 2 when a file cannot be read or is not a valid case.`,
		run: policyTest,
	})
	register("policy", "validate", &command{
		group:   "policy",
		summary: "validate a policy document locally (json, yaml, toml or stof) and list every problem",
		usage:   "[--format F] FILE",
		run:     policyValidate,
	})
	register("policy", "get", &command{
		group:   "policy",
		summary: "print the policy in force (text on stdout, version and format on stderr)",
		run:     policyGet,
	})
	register("policy", "set", &command{
		group:   "policy",
		summary: "install a policy document on every shard (customer state is kept)",
		usage:   "[--format F] [--idempotency-key K] FILE",
		about: `Sends FILE to PolicyService.SetPolicy. The server validates it first; an invalid
document is refused (exit 1) with every problem and its path. Installing the
document already in force changes nothing and keeps its version.`,
		run: policySet,
	})
}

// Client-side batch bounds, under the server's (200 files, 4 MiB a request).
const (
	batchFiles = 200
	batchBytes = 3 << 20
	maxCaseLen = 1 << 20
)

func policyTest(g *globals, args []string) error {
	fs := subFlags(g, "policy", "test")
	filter := fs.String("run", "", "only cases whose name contains this")
	remote := fs.Bool("remote", false, "run the cases on the server (--server) instead of the embedded engine")
	paths, err := parseN(g, fs, args, 1, -1)
	if err != nil {
		return err
	}
	var out *capstanv1.TestPolicyResponse
	if *remote || g.server.set {
		out, err = testRemote(g, paths, *filter)
	} else {
		out, err = testLocal(paths, *filter)
	}
	if err != nil {
		return err
	}
	if g.json() {
		if err := g.printJSON(out); err != nil {
			return err
		}
	} else {
		for _, r := range out.Results {
			if r.Passed {
				fmt.Fprintf(g.stdout, "PASS  %-40s %3d steps  %s\n", r.Name, r.Steps, filepath.Base(r.File))
			} else {
				fmt.Fprintf(g.stdout, "FAIL  %-40s %s\n", r.Name, r.Failure)
			}
		}
		fmt.Fprintf(g.stdout, "\n%d passed, %d failed\n", out.Passed, out.Failed)
		if out.PolicyVersion != 0 {
			fmt.Fprintf(g.stderr, "cases without a policy ran under the server's policy version %d\n", out.PolicyVersion)
		}
	}
	if out.Failed > 0 {
		return failed("%d of %d cases failed", out.Failed, out.Passed+out.Failed)
	}
	return nil
}

func testLocal(paths []string, filter string) (*capstanv1.TestPolicyResponse, error) {
	var cases []*conformance.Case
	for _, p := range paths {
		cs, err := conformance.LoadPath(p)
		if err != nil {
			if strings.Contains(err.Error(), "missing policy") {
				return nil, usageErr("%v\n(a case without a policy runs only on a server, under its policy: add --remote)", err)
			}
			return nil, usageErr("%v", err)
		}
		cases = append(cases, cs...)
	}
	out := &capstanv1.TestPolicyResponse{}
	for _, c := range cases {
		if filter != "" && !strings.Contains(c.Name, filter) {
			continue
		}
		res := conformance.Run(c, conformance.NewEngineTarget())
		r := &capstanv1.TestPolicyResult{Name: c.Name, File: c.File, Passed: res.Pass, Steps: uint32(res.Steps)}
		if res.Failure != nil {
			r.Failure = res.Failure.Message
		}
		out.Results = append(out.Results, r)
		if res.Pass {
			out.Passed++
		} else {
			out.Failed++
		}
	}
	return out, nil
}

// caseFiles lists the case files of paths the way conformance.LoadPath does:
// a file as given, a directory's *.yaml and *.yml files in name order.
func caseFiles(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		var names []string
		for _, e := range entries {
			n := e.Name()
			if !e.IsDir() && !strings.HasPrefix(n, ".") && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return nil, usageErr("%s: no *.yaml or *.yml case files", p)
		}
		sort.Strings(names)
		for _, n := range names {
			files = append(files, filepath.Join(p, n))
		}
	}
	return files, nil
}

func testRemote(g *globals, paths []string, filter string) (*capstanv1.TestPolicyResponse, error) {
	files, err := caseFiles(paths)
	if err != nil {
		return nil, err
	}
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	out := &capstanv1.TestPolicyResponse{}
	send := func(batch []*capstanv1.CaseFile) error {
		ctx, cancel := g.ctx()
		defer cancel()
		res, err := c.pol.TestPolicy(ctx, connect.NewRequest(&capstanv1.TestPolicyRequest{Files: batch, Run: filter}))
		if err != nil {
			return g.callErr(err)
		}
		out.Results = append(out.Results, res.Msg.Results...)
		out.Passed += res.Msg.Passed
		out.Failed += res.Msg.Failed
		out.PolicyVersion = max(out.PolicyVersion, res.Msg.PolicyVersion)
		return nil
	}
	var batch []*capstanv1.CaseFile
	size := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, usageErr("%v", err)
		}
		if len(b) > maxCaseLen {
			return nil, usageErr("%s: %d bytes, more than the server's %d per case file", f, len(b), maxCaseLen)
		}
		if len(batch) == batchFiles || (len(batch) > 0 && size+len(b) > batchBytes) {
			if err := send(batch); err != nil {
				return nil, err
			}
			batch, size = nil, 0
		}
		// The name is the path as given, so failures read as they do locally.
		batch = append(batch, &capstanv1.CaseFile{Name: f, Text: string(b)})
		size += len(b)
	}
	if err := send(batch); err != nil {
		return nil, err
	}
	return out, nil
}

func policyValidate(g *globals, args []string) error {
	fs := subFlags(g, "policy", "validate")
	format := fs.String("format", "", "json, yaml, toml or stof (default: from the file extension, else detected)")
	pos, err := parseN(g, fs, args, 1, 1)
	if err != nil {
		return err
	}
	path := pos[0]
	text, err := os.ReadFile(path)
	if err != nil {
		return usageErr("%v", err)
	}
	f := *format
	if f == "" {
		f = formatFromExt(path)
	}
	// The same answer PolicyService.ValidatePolicy gives.
	out := &capstanv1.ValidatePolicyResponse{}
	p, err := engine.LoadPolicy(string(text), f)
	if err != nil {
		var ve *engine.ValidationError
		if errors.As(err, &ve) {
			out.Problems = append(out.Problems, ve.Problems...)
		} else {
			out.Problems = []string{err.Error()}
		}
	} else {
		out.Valid = true
		for name := range p.Credits {
			out.Credits = append(out.Credits, name)
		}
		sort.Strings(out.Credits)
		out.Plans = append(out.Plans, p.PlanOrder...)
		if d := p.DefaultPlan(); d != nil {
			out.DefaultPlan = d.Name
		}
	}
	if g.json() {
		if err := g.printJSON(out); err != nil {
			return err
		}
	}
	if !out.Valid {
		return failed("%s: %v", path, err)
	}
	if !g.json() {
		fmt.Fprintf(g.stdout, "%s: valid (%d credits, %d plans)\n", path, len(out.Credits), len(out.Plans))
		for _, w := range p.Warnings {
			fmt.Fprintf(g.stdout, "warning: %s\n", w)
		}
	}
	return nil
}

func policyGet(g *globals, args []string) error {
	if _, err := parseN(g, subFlags(g, "policy", "get"), args, 0, 0); err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.pol.GetPolicy(ctx, connect.NewRequest(&capstanv1.GetPolicyRequest{}))
	if err != nil {
		return g.callErr(err)
	}
	m := res.Msg
	if g.json() {
		return g.printJSON(m)
	}
	if m.Text == "" {
		return failed("no policy installed yet: set one with capstanctl policy set FILE")
	}
	fmt.Fprintf(g.stderr, "# policy version %d, format %s\n", m.Version, orUnknown(m.Format))
	fmt.Fprint(g.stdout, m.Text)
	if !strings.HasSuffix(m.Text, "\n") {
		fmt.Fprintln(g.stdout)
	}
	return nil
}

func policySet(g *globals, args []string) error {
	fs := subFlags(g, "policy", "set")
	format := fs.String("format", "", "json, yaml, toml or stof (default: from the file extension, else detected by the server)")
	key := fs.String("idempotency-key", "", "`key` that makes a retry of this call safe")
	pos, err := parseN(g, fs, args, 1, 1)
	if err != nil {
		return err
	}
	text, err := os.ReadFile(pos[0])
	if err != nil {
		return usageErr("%v", err)
	}
	f := *format
	if f == "" {
		f = formatFromExt(pos[0])
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.pol.SetPolicy(ctx, connect.NewRequest(&capstanv1.SetPolicyRequest{Text: string(text), Format: f, IdempotencyKey: *key}))
	if err != nil {
		return g.callErr(err)
	}
	if g.json() {
		return g.printJSON(res.Msg)
	}
	if res.Msg.Changed {
		fmt.Fprintf(g.stdout, "policy version %d installed\n", res.Msg.Version)
	} else {
		fmt.Fprintf(g.stdout, "policy unchanged: already in force as version %d\n", res.Msg.Version)
	}
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "detected"
	}
	return s
}

func formatFromExt(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return "json"
	case ".yaml", ".yml":
		return "yaml"
	case ".toml":
		return "toml"
	case ".stof":
		return "stof"
	}
	return ""
}
