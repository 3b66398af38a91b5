package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/internal/conformance"
)

func init() {
	register("policy", "test", &command{
		summary: "run conformance cases (YAML files or directories) against the embedded engine",
		usage:   "[-run SUBSTR] PATH...",
		run:     policyTest,
	})
	register("policy", "validate", &command{
		summary: "validate a policy document locally (json, yaml, toml or stof) and list every problem",
		usage:   "[-format F] FILE",
		run:     policyValidate,
	})
}

type caseOutcome struct {
	Name    string `json:"name"`
	File    string `json:"file"`
	Pass    bool   `json:"pass"`
	Steps   int    `json:"steps"`
	Failure string `json:"failure,omitempty"`
}

func policyTest(g *globals, args []string) error {
	fs := subFlags(g, "policy", "test")
	filter := fs.String("run", "", "only cases whose name contains this")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageErr("give at least one case file or directory")
	}
	var cases []*conformance.Case
	for _, p := range fs.Args() {
		cs, err := conformance.LoadPath(p)
		if err != nil {
			return usageErr("%v", err)
		}
		cases = append(cases, cs...)
	}
	var outcomes []caseOutcome
	passed, failedN := 0, 0
	for _, c := range cases {
		if *filter != "" && !strings.Contains(c.Name, *filter) {
			continue
		}
		res := conformance.Run(c, conformance.NewEngineTarget())
		o := caseOutcome{Name: c.Name, File: c.File, Pass: res.Pass, Steps: res.Steps}
		if res.Failure != nil {
			o.Failure = res.Failure.Message
		}
		outcomes = append(outcomes, o)
		if res.Pass {
			passed++
		} else {
			failedN++
		}
		if g.output == "table" {
			if res.Pass {
				fmt.Fprintf(g.stdout, "PASS  %-40s %3d steps  %s\n", c.Name, res.Steps, filepath.Base(c.File))
			} else {
				fmt.Fprintf(g.stdout, "FAIL  %-40s %s\n", c.Name, o.Failure)
			}
		}
	}
	if g.output == "json" {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"passed": passed, "failed": failedN, "cases": outcomes}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(g.stdout, "\n%d passed, %d failed\n", passed, failedN)
	}
	if failedN > 0 {
		return failed("%d of %d cases failed", failedN, passed+failedN)
	}
	return nil
}

func policyValidate(g *globals, args []string) error {
	fs := subFlags(g, "policy", "validate")
	format := fs.String("format", "", "json, yaml, toml or stof (default: from the file extension, else detected)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("give exactly one policy file")
	}
	path := fs.Arg(0)
	text, err := os.ReadFile(path)
	if err != nil {
		return usageErr("%v", err)
	}
	f := *format
	if f == "" {
		f = formatFromExt(path)
	}
	p, err := engine.LoadPolicy(string(text), f)
	if err != nil {
		if g.output == "json" {
			_ = json.NewEncoder(g.stdout).Encode(map[string]any{"valid": false, "error": err.Error()})
		}
		return failed("%s: %v", path, err)
	}
	if g.output == "json" {
		return json.NewEncoder(g.stdout).Encode(map[string]any{"valid": true, "credits": len(p.Credits), "plans": len(p.Plans), "warnings": p.Warnings})
	}
	fmt.Fprintf(g.stdout, "%s: valid (%d credits, %d plans)\n", path, len(p.Credits), len(p.Plans))
	for _, w := range p.Warnings {
		fmt.Fprintf(g.stdout, "warning: %s\n", w)
	}
	return nil
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
