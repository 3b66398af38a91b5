package rpc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the edge's Prometheus collectors.
type Metrics struct {
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

// NewMetrics registers the edge's collectors with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "capstan",
			Name:      "decisions_total",
			Help:      "Decisions answered, by method, result (allowed or denied) and deny reason.",
		}, []string{"method", "result", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "capstan",
			Name:      "request_duration_seconds",
			Help:      "API request latency, by procedure and Connect code.",
			Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"procedure", "code"}),
	}
	for _, c := range []prometheus.Collector{m.decisions, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) decision(method string, allowed bool, reason string) {
	if m == nil {
		return
	}
	result := "denied"
	if allowed {
		result = "allowed"
	}
	m.decisions.WithLabelValues(method, result, reason).Inc()
}

// callInfo travels in the context so inner interceptors (auth) can tell the
// outer one (logging) who called.
type callInfo struct{ role Role }

type callInfoKey struct{}

func callInfoFrom(ctx context.Context) *callInfo {
	info, _ := ctx.Value(callInfoKey{}).(*callInfo)
	return info
}

// observeInterceptor logs every call and measures its latency. It is the
// outermost interceptor, so refused calls (bad keys, bad input) are seen too.
// OK calls log at Info, client errors at Warn, server errors at Error, so
// --log-level=warn keeps only the trouble.
type observeInterceptor struct {
	logger  *slog.Logger
	metrics *Metrics
}

func (o observeInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		info := &callInfo{}
		ctx = context.WithValue(ctx, callInfoKey{}, info)
		start := time.Now()
		res, err := next(ctx, req)
		o.done(ctx, req.Spec().Procedure, req.Peer().Addr, req.Peer().Protocol, info, start, err)
		return res, err
	}
}

func (o observeInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o observeInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		info := &callInfo{}
		ctx = context.WithValue(ctx, callInfoKey{}, info)
		start := time.Now()
		err := next(ctx, conn)
		o.done(ctx, conn.Spec().Procedure, conn.Peer().Addr, conn.Peer().Protocol, info, start, err)
		return err
	}
}

func (o observeInterceptor) done(ctx context.Context, procedure, peer, protocol string, info *callInfo, start time.Time, err error) {
	elapsed := time.Since(start)
	code := "ok"
	level := slog.LevelInfo
	if err != nil {
		c := connect.CodeOf(err)
		code = c.String()
		level = slog.LevelWarn
		switch c {
		case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss, connect.CodeUnavailable, connect.CodeDeadlineExceeded:
			level = slog.LevelError
		}
	}
	if o.metrics != nil {
		o.metrics.latency.WithLabelValues(procedure, code).Observe(elapsed.Seconds())
	}
	if o.logger == nil || !o.logger.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("procedure", procedure),
		slog.String("code", code),
		slog.Duration("duration", elapsed),
		slog.String("peer", peer),
		slog.String("protocol", protocol),
	}
	if info.role != "" {
		attrs = append(attrs, slog.String("role", string(info.role)))
	}
	if err != nil {
		var ce *connect.Error
		msg := err.Error()
		if errors.As(err, &ce) {
			msg = ce.Message()
		}
		attrs = append(attrs, slog.String("error", msg))
	}
	o.logger.LogAttrs(ctx, level, "request", attrs...)
}
