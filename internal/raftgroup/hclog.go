package raftgroup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// LevelTrace is the slog level used for hclog's Trace (below slog.LevelDebug).
const LevelTrace = slog.LevelDebug - 4

// nameKey is the attribute carrying the hclog logger name ("raft",
// "raft.net", ...).
const nameKey = "logger"

// NewHCLogger returns an hclog.Logger that writes to l, so raft's logs end
// up in the process's structured logger.
//
// Levels are kept (hclog Info -> slog Info; Trace -> LevelTrace, below
// Debug); filter with l's handler, or additionally with SetLevel on the
// returned logger (shared by loggers derived via With/Named, as in hclog).
// Named/ResetNamed set the "logger" attribute; With adds attributes that
// every derived logger keeps. Call sites are reported as raft's, not the
// adapter's, for handlers with AddSource.
func NewHCLogger(l *slog.Logger, name string) hclog.Logger {
	if l == nil {
		l = slog.Default()
	}
	h := &hcLogger{root: l, name: name, level: new(atomic.Int32)}
	h.level.Store(int32(hclog.NoLevel))
	h.rebuild()
	return h
}

type hcLogger struct {
	root    *slog.Logger // as passed to NewHCLogger
	name    string
	implied []any         // hclog-style key/value pairs from With
	level   *atomic.Int32 // extra hclog.Level filter; NoLevel = none
	out     *slog.Logger  // root + name + implied
}

func (h *hcLogger) rebuild() {
	out := h.root
	if h.name != "" {
		out = out.With(nameKey, h.name)
	}
	if len(h.implied) > 0 {
		out = out.With(attrsAny(h.implied)...)
	}
	h.out = out
}

func (h *hcLogger) derive(name string, implied []any) *hcLogger {
	d := &hcLogger{root: h.root, name: name, implied: implied, level: h.level}
	d.rebuild()
	return d
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return LevelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default: // Info, NoLevel, DefaultLevel
		return slog.LevelInfo
	}
}

func hclogLevel(l slog.Level) hclog.Level {
	switch {
	case l <= LevelTrace:
		return hclog.Trace
	case l <= slog.LevelDebug:
		return hclog.Debug
	case l <= slog.LevelInfo:
		return hclog.Info
	case l <= slog.LevelWarn:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (h *hcLogger) enabled(l hclog.Level) bool {
	if l == hclog.Off {
		return false
	}
	if min := hclog.Level(h.level.Load()); min != hclog.NoLevel && l < min {
		return false
	}
	return h.out.Enabled(context.Background(), slogLevel(l))
}

// emit must be called directly from the exported method so that skip=3
// (runtime.Callers, emit, exported method) lands on the caller.
func (h *hcLogger) emit(l hclog.Level, msg string, args []any) {
	if !h.enabled(l) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:])
	r := slog.NewRecord(time.Now(), slogLevel(l), msg, pcs[0])
	r.AddAttrs(attrs(args)...)
	_ = h.out.Handler().Handle(context.Background(), r)
}

func (h *hcLogger) Log(l hclog.Level, msg string, args ...any) { h.emit(l, msg, args) }
func (h *hcLogger) Trace(msg string, args ...any)              { h.emit(hclog.Trace, msg, args) }
func (h *hcLogger) Debug(msg string, args ...any)              { h.emit(hclog.Debug, msg, args) }
func (h *hcLogger) Info(msg string, args ...any)               { h.emit(hclog.Info, msg, args) }
func (h *hcLogger) Warn(msg string, args ...any)               { h.emit(hclog.Warn, msg, args) }
func (h *hcLogger) Error(msg string, args ...any)              { h.emit(hclog.Error, msg, args) }

func (h *hcLogger) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hcLogger) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hcLogger) IsError() bool { return h.enabled(hclog.Error) }

func (h *hcLogger) ImpliedArgs() []any { return append([]any(nil), h.implied...) }

func (h *hcLogger) With(args ...any) hclog.Logger {
	if len(args) == 0 {
		return h
	}
	implied := make([]any, 0, len(h.implied)+len(args))
	implied = append(implied, h.implied...)
	implied = append(implied, args...)
	return h.derive(h.name, implied)
}

func (h *hcLogger) Name() string { return h.name }

func (h *hcLogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.derive(name, h.implied)
}

func (h *hcLogger) ResetNamed(name string) hclog.Logger { return h.derive(name, h.implied) }

func (h *hcLogger) SetLevel(l hclog.Level) { h.level.Store(int32(l)) }

func (h *hcLogger) GetLevel() hclog.Level {
	if l := hclog.Level(h.level.Load()); l != hclog.NoLevel {
		return l
	}
	// Report the most verbose level the handler accepts.
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if h.out.Enabled(context.Background(), slogLevel(l)) {
			return l
		}
	}
	return hclog.Off
}

func (h *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hcLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{h: h, infer: opts.InferLevels, force: opts.ForceLevel}
}

// stdWriter turns standard-library log lines into records.
type stdWriter struct {
	h     *hcLogger
	infer bool
	force hclog.Level
}

var stdPrefixes = []struct {
	prefix string
	level  hclog.Level
}{
	{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
	{"[WARN]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error},
}

func (w *stdWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(bytes.TrimRight(p, "\n")))
	level := hclog.Info
	for _, sp := range stdPrefixes {
		if rest, ok := strings.CutPrefix(line, sp.prefix); ok {
			line = strings.TrimSpace(rest)
			if w.infer {
				level = sp.level
			}
			break
		}
	}
	if w.force != hclog.NoLevel {
		level = w.force
	}
	if w.h.enabled(level) {
		r := slog.NewRecord(time.Now(), slogLevel(level), line, 0)
		_ = w.h.out.Handler().Handle(context.Background(), r)
	}
	return len(p), nil
}

// attrs converts hclog key/value pairs to slog attributes, rendering
// hclog's formatting helpers the way hclog would.
func attrs(args []any) []slog.Attr {
	if len(args) == 0 {
		return nil
	}
	out := make([]slog.Attr, 0, len(args)/2+1)
	if len(args)%2 == 1 {
		last := args[len(args)-1]
		args = args[:len(args)-1]
		if st, ok := last.(hclog.CapturedStacktrace); ok {
			out = append(out, slog.String("stacktrace", string(st)))
		} else {
			out = append(out, slog.Any("EXTRA_VALUE_AT_END", hcValue(last)))
		}
	}
	for i := 0; i < len(args); i += 2 {
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		out = append(out, slog.Any(key, hcValue(args[i+1])))
	}
	return out
}

func attrsAny(args []any) []any {
	as := attrs(args)
	out := make([]any, len(as))
	for i, a := range as {
		out[i] = a
	}
	return out
}

func hcValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) > 0 {
			if f, ok := v[0].(string); ok {
				return fmt.Sprintf(f, v[1:]...)
			}
		}
		return fmt.Sprint(v...)
	case hclog.Hex:
		return "0x" + strconv.FormatInt(int64(v), 16)
	case hclog.Octal:
		return "0" + strconv.FormatInt(int64(v), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatInt(int64(v), 2)
	case hclog.Quote:
		return strconv.Quote(string(v))
	case hclog.CapturedStacktrace:
		return string(v)
	default:
		return v
	}
}
