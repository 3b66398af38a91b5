package raftgroup

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogger(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: LevelTrace, AddSource: true}))
	l := NewHCLogger(base.With("group", "g1"), "raft")

	l.Info("hello", "peer", "n2", "index", 7)
	out := buf.String()
	for _, want := range []string{"level=INFO", "msg=hello", "group=g1", "logger=raft", "peer=n2", "index=7", "hclog_test.go"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in %q", want, out)
		}
	}

	buf.Reset()
	sub := l.Named("net").With("local", "a:1")
	sub.With("conn", 3).Warn("w", "x", hclog.Hex(255))
	out = buf.String()
	for _, want := range []string{"level=WARN", "logger=raft.net", "local=a:1", "conn=3", "x=0xff", "group=g1"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in %q", want, out)
		}
	}
	if sub.Name() != "raft.net" || len(sub.ImpliedArgs()) != 2 {
		t.Errorf("Name=%q ImpliedArgs=%v", sub.Name(), sub.ImpliedArgs())
	}
	if got := l.ResetNamed("other").Name(); got != "other" {
		t.Errorf("ResetNamed: %q", got)
	}

	buf.Reset()
	l.Trace("t")
	l.Debug("d", "odd")
	out = buf.String()
	if !strings.Contains(out, "level=DEBUG-4") || !strings.Contains(out, "EXTRA_VALUE_AT_END=odd") {
		t.Errorf("trace/odd args: %q", out)
	}

	// SetLevel filters on top of the handler and is shared with derived loggers.
	buf.Reset()
	l.SetLevel(hclog.Warn)
	sub.Info("dropped")
	l.Debug("dropped")
	if buf.Len() != 0 || sub.IsInfo() || !sub.IsWarn() || l.GetLevel() != hclog.Warn {
		t.Errorf("SetLevel not applied: %q", buf.String())
	}
	l.SetLevel(hclog.NoLevel)
	if l.GetLevel() != hclog.Trace {
		t.Errorf("GetLevel from handler = %v", l.GetLevel())
	}

	// Handler level is respected.
	buf.Reset()
	quiet := NewHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), "raft")
	quiet.Info("dropped")
	if buf.Len() != 0 || quiet.IsInfo() || quiet.GetLevel() != hclog.Warn {
		t.Errorf("handler level ignored: %q", buf.String())
	}

	// Standard logger with level inference.
	buf.Reset()
	std := l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	std.Printf("[ERR] boom %d", 1)
	if out := buf.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, `msg="boom 1"`) {
		t.Errorf("std logger: %q", out)
	}
}
