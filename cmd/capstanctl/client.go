package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
	"github.com/capstanhq/capstan/internal/version"
)

// api holds a Connect client per capstan.v1 service, all to one server.
type api struct {
	lim capstanv1connect.LimiterServiceClient
	cus capstanv1connect.CustomerServiceClient
	pol capstanv1connect.PolicyServiceClient
	adm capstanv1connect.AdminServiceClient
	evt capstanv1connect.EventServiceClient
}

// client returns the API clients for --server, built on first use.
func (g *globals) client() (*api, error) {
	if g.api != nil {
		return g.api, nil
	}
	base, err := serverURL(g.server.url)
	if err != nil {
		return nil, err
	}
	g.server.url = base
	opt := connect.WithInterceptors(newBearer(g.apiKey))
	hc := &http.Client{}
	g.api = &api{
		lim: capstanv1connect.NewLimiterServiceClient(hc, base, opt),
		cus: capstanv1connect.NewCustomerServiceClient(hc, base, opt),
		pol: capstanv1connect.NewPolicyServiceClient(hc, base, opt),
		adm: capstanv1connect.NewAdminServiceClient(hc, base, opt),
		evt: capstanv1connect.NewEventServiceClient(hc, base, opt),
	}
	return g.api, nil
}

// serverURL checks --server; a bare host:port means http.
func serverURL(s string) (string, error) {
	if s == "" {
		return "", usageErr("--server is empty: give the API's URL, e.g. http://127.0.0.1:7070")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usageErr("--server %q: want an http:// or https:// URL, e.g. http://127.0.0.1:7070", s)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// bearer sends the API key on every call, unary or streaming (none when key
// is empty, so a server running --no-auth still answers).
type bearer struct{ key, ua string }

func newBearer(key string) bearer { return bearer{key: key, ua: "capstanctl/" + version.Version} }

func (b bearer) set(h http.Header) {
	if b.key != "" {
		h.Set("Authorization", "Bearer "+b.key)
	}
	h.Set("User-Agent", b.ua)
}

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		b.set(req.Header())
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		b.set(conn.RequestHeader())
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// ctx bounds one call by --timeout.
func (g *globals) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

// callErr turns a failed call into the CLI's error, printed as
// `<code>: <message>`: exit 1 when the server judged the request and refused
// it, exit 2 when there was no usable answer.
func (g *globals) callErr(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return &exitError{code: 2, err: err}
	}
	msg := fmt.Sprintf("%s: %s", ce.Code(), ce.Message())
	code := 2
	switch ce.Code() {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeAlreadyExists,
		connect.CodeFailedPrecondition, connect.CodePermissionDenied, connect.CodeOutOfRange,
		connect.CodeResourceExhausted, connect.CodeAborted:
		code = 1
	case connect.CodeUnauthenticated:
		if g.apiKey == "" {
			msg += " (no API key given: set --api-key or CAPSTAN_API_KEY)"
		}
	case connect.CodeUnavailable:
		var ne net.Error
		var oe *net.OpError
		if errors.As(err, &oe) || errors.As(err, &ne) {
			msg += fmt.Sprintf(" (is capstan serving at %s? set --server or CAPSTAN_SERVER)", g.server.url)
		}
		if key := ce.Meta().Get("Capstan-Idempotency-Key"); key != "" {
			msg += fmt.Sprintf(" (safe to retry with --idempotency-key %s)", key)
		}
	case connect.CodeUnimplemented:
		msg += fmt.Sprintf(" (is %s a Capstan API of the same version as capstanctl %s?)", g.server.url, version.Version)
	}
	return &exitError{code: code, err: errors.New(msg)}
}
