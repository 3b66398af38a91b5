package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config wires the API edge.
type Config struct {
	Backend Backend
	// Keys authenticates callers. Nil disables authentication (every caller is
	// an admin); the caller of NewMux is expected to have said so loudly.
	Keys   *Keys
	Logger *slog.Logger
	// Registry receives the edge's metrics (and the backend's, when it offers
	// a Collector, as *cluster.Node does) and is served on /metrics. Nil uses a
	// fresh registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Version (the build) is reported by AdminService.Status.
	Version string
	// RequestTimeout bounds calls whose client set no deadline (default
	// DefaultRequestTimeout).
	RequestTimeout time.Duration
}

// DefaultRequestTimeout bounds a call without a client deadline.
const DefaultRequestTimeout = 10 * time.Second

// MaxRequestBytes bounds every request message (a policy document is the
// largest thing anyone sends).
const MaxRequestBytes = 4 << 20

// ServiceNames are the capstan.v1 services, for health and reflection.
var ServiceNames = []string{
	capstanv1connect.LimiterServiceName,
	capstanv1connect.CustomerServiceName,
	capstanv1connect.PolicyServiceName,
	capstanv1connect.AdminServiceName,
	capstanv1connect.EventServiceName,
}

// NewMux returns a mux serving the capstan.v1 services, gRPC health
// (grpc.health.v1), gRPC reflection and /metrics. Health, reflection and
// metrics are open; the services need an API key.
func NewMux(cfg Config) (*http.ServeMux, error) {
	if cfg.Backend == nil {
		return nil, errors.New("rpc: no backend")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	}
	metrics, err := NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	if b, ok := cfg.Backend.(interface{ Collector() prometheus.Collector }); ok {
		if err := reg.Register(b.Collector()); err != nil {
			return nil, fmt.Errorf("register the backend's metrics: %w", err)
		}
	}
	interceptors := []connect.Interceptor{observeInterceptor{logger: cfg.Logger, metrics: metrics}}
	if cfg.Keys != nil {
		interceptors = append(interceptors, authInterceptor{keys: cfg.Keys})
	}
	opts := []connect.HandlerOption{
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(MaxRequestBytes),
		// Decisions are a few hundred bytes: gzip costs more CPU than it saves
		// (about an eighth of a loaded server's CPU in profiles). Large answers
		// (policies, cap lists, status) still compress.
		connect.WithCompressMinBytes(4096),
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	c := &core{backend: cfg.Backend, metrics: metrics, timeout: cfg.RequestTimeout}

	mux := http.NewServeMux()
	mux.Handle(capstanv1connect.NewLimiterServiceHandler(limiter{c}, opts...))
	mux.Handle(capstanv1connect.NewCustomerServiceHandler(customers{c}, opts...))
	mux.Handle(capstanv1connect.NewPolicyServiceHandler(policies{c}, opts...))
	mux.Handle(capstanv1connect.NewAdminServiceHandler(admin{core: c, version: cfg.Version}, opts...))
	if src, ok := cfg.Backend.(EventSource); ok {
		mux.Handle(capstanv1connect.NewEventServiceHandler(events{src: src}, opts...))
	}

	mux.Handle(grpchealth.NewHandler(healthChecker{backend: cfg.Backend}))
	reflector := grpcreflect.NewStaticReflector(ServiceNames...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux, nil
}

// healthChecker answers grpc.health.v1: SERVING once the node can serve (a
// standalone node: every shard has a leader; a cluster node: it has joined and
// knows a leader for every shard), NOT_SERVING otherwise. The whole server ("") and each
// capstan.v1 service report the same status.
type healthChecker struct{ backend Backend }

func (h healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	known := req.Service == ""
	for _, s := range ServiceNames {
		known = known || req.Service == s
	}
	if !known {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("unknown service "+req.Service))
	}
	if h.backend.Ready() != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}
