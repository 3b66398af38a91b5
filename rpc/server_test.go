package rpc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	adminKey  = "admin-key-0123456789"
	clientKey = "client-key-0123456789"
)

// seedPolicy is the seed's spend-caps policy (shared/conformance/seed-spend-caps.yaml).
const seedPolicy = `
policy: {
credits: {
claude_sonnet_4: {
description: 'Claude Sonnet 4 token'
overhead_cost: 1.5e-7
price: { amount: 0.0003 }
}
}
plans: {
starter: {
label: 'Starter Plan'
entitlements: {
ai_chat: {
description: 'AI chat feature'
limit: {
credit: 'claude_sonnet_4'
mode: 'soft'
value: 16667
resets: true
reset_sch: 'monthly:1'
}
}
}
}
}
}`

type testEnv struct {
	b   *fakeBackend
	url string
	lim capstanv1connect.LimiterServiceClient
	cus capstanv1connect.CustomerServiceClient
	pol capstanv1connect.PolicyServiceClient
	adm capstanv1connect.AdminServiceClient
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	b := newFake(t, seedPolicy, "stof")
	keys := NewKeys()
	if err := keys.ParseKeys("test", adminKey+":admin,"+clientKey+":client"); err != nil {
		t.Fatal(err)
	}
	mux, err := NewMux(Config{Backend: b, Keys: keys, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	opt := connect.WithInterceptors(bearer(adminKey))
	return &testEnv{
		b: b, url: srv.URL,
		lim: capstanv1connect.NewLimiterServiceClient(srv.Client(), srv.URL, opt),
		cus: capstanv1connect.NewCustomerServiceClient(srv.Client(), srv.URL, opt),
		pol: capstanv1connect.NewPolicyServiceClient(srv.Client(), srv.URL, opt),
		adm: capstanv1connect.NewAdminServiceClient(srv.Client(), srv.URL, opt),
	}
}

// bearer sets the Authorization header on every call ("" sends none).
func bearer(key string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if key != "" {
				req.Header().Set("Authorization", "Bearer "+key)
			}
			return next(ctx, req)
		}
	}
}

func timeAt(s string) time.Time {
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return tm
}

func asConnect(err error, ce **connect.Error) bool { return errors.As(err, ce) }

func wantCode(t *testing.T, err error, code connect.Code, contains string) {
	t.Helper()
	var ce *connect.Error
	if !asConnect(err, &ce) {
		t.Fatalf("err = %v, want %v", err, code)
	}
	if ce.Code() != code || !strings.Contains(ce.Message(), contains) {
		t.Fatalf("err = %v (%v), want %v containing %q", ce.Message(), ce.Code(), code, contains)
	}
}

func eventTypes(evs []*capstanv1.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// TestSeedSpendCaps plays the seed's spend-caps case through the API.
func TestSeedSpendCaps(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	if _, err := env.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{
		Id: "cus_123", Plan: "starter", Type: "user", Label: "Jane Doe", Metadata: map[string]string{"email": "jane@example.com"},
	})); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*capstanv1.AddCapRequest{
		{Customer: "cus_123", Value: "20", CapId: "ai_overage_cap", OverageOnly: true, IgnoreGrants: true, ResetSch: "monthly:1"},
		{Customer: "cus_123", Value: "15", CapId: "ai_weekly_guardrail", OverageOnly: true, IgnoreGrants: true, ResetSch: "weekly:mon"},
	} {
		res, err := env.cus.AddCap(ctx, connect.NewRequest(c))
		if err != nil {
			t.Fatal(err)
		}
		if res.Msg.Cap.CapId != c.CapId || res.Msg.Cap.Value != c.Value {
			t.Fatalf("cap = %v", res.Msg.Cap)
		}
	}
	allow := func(v string) *capstanv1.AllowResponse {
		t.Helper()
		res, err := env.lim.Allow(ctx, connect.NewRequest(&capstanv1.AllowRequest{Customer: "cus_123", Entitlement: "ai_chat", Value: v}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	capValue := func(id string) string {
		t.Helper()
		res, err := env.lim.GetCustomerCap(ctx, connect.NewRequest(&capstanv1.GetCustomerCapRequest{Customer: "cus_123", CapId: id}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Cap.MeterValue
	}
	usage := func() *capstanv1.Usage {
		t.Helper()
		res, err := env.lim.GetUsage(ctx, connect.NewRequest(&capstanv1.GetUsageRequest{Customer: "cus_123", Entitlement: "ai_chat"}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Usage
	}

	if d := allow("6420"); !d.Allowed || !slices.Equal(eventTypes(d.Events), []string{"meter-changed"}) || d.PolicyVersion != 1 {
		t.Fatalf("first allow = %v", d)
	}
	allow("6420")
	if v := capValue("ai_overage_cap"); v != "0" {
		t.Fatalf("overage cap = %s", v)
	}
	d := allow("6420")
	if !d.Allowed || d.Events[0].Type != "meter-overage" || d.Events[0].Overage != "2593" {
		t.Fatalf("third allow = %v", d)
	}
	if d.ResetsAt.AsTime() != timeAt("2026-04-01T00:00:00Z") {
		t.Fatalf("resets_at = %v", d.ResetsAt.AsTime())
	}
	if v := capValue("ai_weekly_guardrail"); v != "0.7779" {
		t.Fatalf("weekly cap = %s", v)
	}
	d = allow("50000")
	if d.Allowed || d.Reason != "cap" || d.CapId != "ai_weekly_guardrail" || !slices.Equal(eventTypes(d.Events), []string{"cap-limit"}) {
		t.Fatalf("denied allow = %v", d)
	}
	if u := usage(); u.Value != "19260" || u.Remaining != "0" && u.Remaining != "-2593" {
		t.Fatalf("usage = %v", u)
	}
	allow("40000")
	if d := allow("10000"); d.Allowed || d.CapId != "ai_weekly_guardrail" {
		t.Fatalf("allow = %v", d)
	}
	env.b.setNow(at(t, "2026-03-09T00:00:01Z"))
	if v := capValue("ai_weekly_guardrail"); v != "0" {
		t.Fatalf("weekly cap after monday = %s", v)
	}
	if v := capValue("ai_overage_cap"); v != "12.7779" {
		t.Fatalf("overage cap = %s", v)
	}
	allow("10000")
	if d := allow("20000"); d.Allowed || d.CapId != "ai_overage_cap" {
		t.Fatalf("allow = %v", d)
	}
	env.b.setNow(at(t, "2026-04-01T00:00:01Z"))
	if u := usage(); u.Value != "0" {
		t.Fatalf("usage after reset = %v", u)
	}
	if d := allow("16667"); !d.Allowed || !slices.Equal(eventTypes(d.Events), []string{"meter-reset", "meter-changed"}) {
		t.Fatalf("allow after reset = %v", d)
	}

	// An override answers the customer's new limit.
	ov, err := env.cus.CreateOverride(ctx, connect.NewRequest(&capstanv1.CreateOverrideRequest{
		Customer: "cus_123", Entitlement: "ai_chat", Value: "20000", ExpiresOn: timestamppb.New(timeAt("2026-05-01T00:00:00Z")),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if l := ov.Msg.Limit; l.Value != "20000" || l.Mode != "soft" || l.Credit != "claude_sonnet_4" || l.ResetSch != "monthly:1" || l.ExpiresOn.AsTime() != timeAt("2026-05-01T00:00:00Z") {
		t.Fatalf("override limit = %v", l)
	}
	if _, err := env.cus.RemoveOverride(ctx, connect.NewRequest(&capstanv1.RemoveOverrideRequest{Customer: "cus_123", Entitlement: "ai_chat"})); err != nil {
		t.Fatal(err)
	}

	// Check decides like Allow without metering.
	chk, err := env.lim.Check(ctx, connect.NewRequest(&capstanv1.CheckRequest{Customer: "cus_123", Entitlement: "ai_chat", Value: "1"}))
	if err != nil || !chk.Msg.Allowed || chk.Msg.PolicyVersion != 1 {
		t.Fatalf("check = %v, %v", chk, err)
	}
	if u := usage(); u.Value != "16667" {
		t.Fatalf("check metered: %v", u)
	}

	// The customer read carries usage and caps.
	cu, err := env.cus.GetCustomer(ctx, connect.NewRequest(&capstanv1.GetCustomerRequest{Id: "cus_123"}))
	if err != nil {
		t.Fatal(err)
	}
	if c := cu.Msg.Customer; c.Plan != "starter" || c.Metadata["email"] != "jane@example.com" || len(c.Caps) != 2 || len(c.Usage) != 1 || c.Usage[0].Value != "16667" {
		t.Fatalf("customer = %v", c)
	}
}

// TestDeniedIsNotAnError: every deny reason is a normal answer.
func TestDeniedIsNotAnError(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	res, err := env.lim.Allow(ctx, connect.NewRequest(&capstanv1.AllowRequest{Customer: "nobody", Entitlement: "ai_chat", Value: "1"}))
	if err != nil || res.Msg.Allowed || res.Msg.Reason != "unknown_customer" {
		t.Fatalf("allow = %v, %v", res, err)
	}
	u, err := env.lim.GetUsage(ctx, connect.NewRequest(&capstanv1.GetUsageRequest{Customer: "nobody", Entitlement: "ai_chat"}))
	if err != nil || u.Msg.Usage.Found || u.Msg.Usage.Reason != "unknown_customer" {
		t.Fatalf("usage = %v, %v", u, err)
	}
}

type badCase struct {
	name  string
	call  func(ctx context.Context, env *testEnv) error
	field string
}

// TestBadInput: every bad request is INVALID_ARGUMENT naming the field, and
// nothing reaches the state machine or changes state.
func TestBadInput(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	if _, err := env.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: "u1", Plan: "starter"})); err != nil {
		t.Fatal(err)
	}
	if _, err := env.lim.Allow(ctx, connect.NewRequest(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "60"})); err != nil {
		t.Fatal(err)
	}
	allow := func(r *capstanv1.AllowRequest) func(context.Context, *testEnv) error {
		return func(ctx context.Context, env *testEnv) error {
			_, err := env.lim.Allow(ctx, connect.NewRequest(r))
			return err
		}
	}
	addCap := func(r *capstanv1.AddCapRequest) func(context.Context, *testEnv) error {
		return func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.AddCap(ctx, connect.NewRequest(r))
			return err
		}
	}
	cases := []badCase{
		{"empty customer", allow(&capstanv1.AllowRequest{Entitlement: "ai_chat", Value: "1"}), "customer"},
		{"customer with space", allow(&capstanv1.AllowRequest{Customer: "u 1", Entitlement: "ai_chat", Value: "1"}), "customer"},
		{"long customer", allow(&capstanv1.AllowRequest{Customer: strings.Repeat("u", 257), Entitlement: "ai_chat", Value: "1"}), "customer"},
		{"control char entitlement", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai\x01chat", Value: "1"}), "entitlement"},
		{"huge exponent", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "1e2000000000"}), "value"},
		{"letters", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "abc"}), "value"},
		{"too precise", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "0.0000000000000000001"}), "value"},
		{"negative overhead", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "1", Overhead: "-5"}), "overhead"},
		{"bad unit", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "1", Unit: "furlongs"}), "unit"},
		{"event data not object", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "1", EventData: "[]"}), "event_data"},
		{"call cap unknown credit", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "1", Caps: map[string]string{"doubloons": "1"}}), "caps.doubloons"},
		{"call cap negative", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "1", Caps: map[string]string{"rune": "-5"}}), "caps.rune"},
		{"bad idempotency key", allow(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "1", IdempotencyKey: "a b"}), "idempotency_key"},
		{"cap unknown credit", addCap(&capstanv1.AddCapRequest{Customer: "u1", Value: "5", Credit: "no_such_credit"}), "credit"},
		{"cap bad schedule", addCap(&capstanv1.AddCapRequest{Customer: "u1", Value: "5", ResetSch: "fortnightly:3"}), "reset_sch"},
		{"cap negative", addCap(&capstanv1.AddCapRequest{Customer: "u1", Value: "-5"}), "value"},
		{"cap bad duration", addCap(&capstanv1.AddCapRequest{Customer: "u1", Value: "5", ResetInc: "fortnight"}), "reset_inc"},
		{"cap inc and sch", addCap(&capstanv1.AddCapRequest{Customer: "u1", Value: "5", ResetInc: "7days", ResetSch: "weekly:mon"}), "reset_sch"},
		{"cap bad scope", addCap(&capstanv1.AddCapRequest{Customer: "u1", Value: "5", Scope: []string{"ok", ""}}), "scope[1]"},
		{"cap expires at epoch", addCap(&capstanv1.AddCapRequest{Customer: "u1", Value: "5", ExpiresOn: &timestamppb.Timestamp{}}), "expires_on"},
		{"cap duplicate id (engine)", addCap(&capstanv1.AddCapRequest{Customer: "u1", Value: "5", CapId: "dup"}), ""},
		{"reserve negative", func(ctx context.Context, env *testEnv) error {
			_, err := env.lim.Reserve(ctx, connect.NewRequest(&capstanv1.ReserveRequest{Customer: "u1", Entitlement: "ai_chat", Value: "-5"}))
			return err
		}, "value"},
		{"reserve quantile 1.5", func(ctx context.Context, env *testEnv) error {
			_, err := env.lim.Reserve(ctx, connect.NewRequest(&capstanv1.ReserveRequest{Customer: "u1", Entitlement: "ai_chat", Quantile: "1.5"}))
			return err
		}, "quantile"},
		{"settle bad segment", func(ctx context.Context, env *testEnv) error {
			_, err := env.lim.Settle(ctx, connect.NewRequest(&capstanv1.SettleRequest{Customer: "u1", Entitlement: "ai_chat", HoldId: "hold-1", Value: "1", Segment: "has space"}))
			return err
		}, "segment"},
		{"reserve bad ttl", func(ctx context.Context, env *testEnv) error {
			_, err := env.lim.Reserve(ctx, connect.NewRequest(&capstanv1.ReserveRequest{Customer: "u1", Entitlement: "ai_chat", Ttl: "forever"}))
			return err
		}, "ttl"},
		{"grant zero", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.Grant(ctx, connect.NewRequest(&capstanv1.GrantRequest{Customer: "u1", Credit: "claude_sonnet_4", Value: "0"}))
			return err
		}, "value"},
		{"grant unknown credit", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.Grant(ctx, connect.NewRequest(&capstanv1.GrantRequest{Customer: "u1", Credit: "gold", Value: "1"}))
			return err
		}, "credit"},
		{"grant in the past (engine)", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.Grant(ctx, connect.NewRequest(&capstanv1.GrantRequest{Customer: "u1", Credit: "claude_sonnet_4", Value: "1", ExpiresOn: timestamppb.New(timeAt("2001-01-01T00:00:00Z"))}))
			return err
		}, "expires_on"},
		{"credit remaining unknown credit", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.CreditRemaining(ctx, connect.NewRequest(&capstanv1.CreditRemainingRequest{Customer: "u1", Credit: "gold"}))
			return err
		}, "credit"},
		{"create unknown plan", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: "u2", Plan: "platinum"}))
			return err
		}, "plan"},
		{"create without plan, no default plan (engine)", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: "u2"}))
			return err
		}, "plan"},
		{"create bad alt", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: "u2", Plan: "starter", AltIds: []string{"ok", "not ok"}}))
			return err
		}, "alt_ids[1]"},
		{"override bad mode", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.CreateOverride(ctx, connect.NewRequest(&capstanv1.CreateOverrideRequest{Customer: "u1", Entitlement: "ai_chat", Mode: "strict"}))
			return err
		}, "mode"},
		{"override unknown entitlement (engine)", func(ctx context.Context, env *testEnv) error {
			_, err := env.cus.CreateOverride(ctx, connect.NewRequest(&capstanv1.CreateOverrideRequest{Customer: "u1", Entitlement: "nope", Value: "5"}))
			return err
		}, "entitlement"},
		{"set policy junk", func(ctx context.Context, env *testEnv) error {
			_, err := env.pol.SetPolicy(ctx, connect.NewRequest(&capstanv1.SetPolicyRequest{Text: "policy: {", Format: "stof"}))
			return err
		}, "text"},
		{"set policy format", func(ctx context.Context, env *testEnv) error {
			_, err := env.pol.SetPolicy(ctx, connect.NewRequest(&capstanv1.SetPolicyRequest{Text: seedPolicy, Format: "xml"}))
			return err
		}, "format"},
	}
	// The duplicate-id case needs the cap to exist.
	if _, err := env.cus.AddCap(ctx, connect.NewRequest(&capstanv1.AddCapRequest{Customer: "u1", Value: "5", CapId: "dup"})); err != nil {
		t.Fatal(err)
	}
	before := snapshotState(t, env)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			applied := env.b.appliedCount()
			err := tc.call(ctx, env)
			var ce *connect.Error
			if !asConnect(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			t.Logf("%s", ce.Message())
			if tc.field != "" {
				if !strings.HasPrefix(ce.Message(), tc.field+": ") || ce.Meta().Get(fieldHeader) != tc.field {
					t.Fatalf("message %q (field header %q) does not name %q", ce.Message(), ce.Meta().Get(fieldHeader), tc.field)
				}
			}
			if !strings.Contains(tc.name, "(engine)") && env.b.appliedCount() != applied {
				t.Fatalf("a refused request reached the state machine")
			}
		})
	}
	if after := snapshotState(t, env); after != before {
		t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
	}
}

// snapshotState reads u1 back through the API.
func snapshotState(t *testing.T, env *testEnv) string {
	t.Helper()
	res, err := env.cus.GetCustomer(context.Background(), connect.NewRequest(&capstanv1.GetCustomerRequest{Id: "u1"}))
	if err != nil {
		t.Fatal(err)
	}
	_, _, ver := env.b.Policy()
	return res.Msg.Customer.String() + " policy=" + string(rune('0'+ver))
}

func TestErrorCodes(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	if _, err := env.cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: "u1", Plan: "starter"})); err != nil {
		t.Fatal(err)
	}
	_, err := env.cus.GetCap(ctx, connect.NewRequest(&capstanv1.GetCapRequest{Customer: "u1", CapId: "nope"}))
	wantCode(t, err, connect.CodeNotFound, "nope")
	_, err = env.cus.DeleteCustomer(ctx, connect.NewRequest(&capstanv1.DeleteCustomerRequest{Id: "ghost"}))
	wantCode(t, err, connect.CodeNotFound, "ghost")
	_, err = env.cus.GetCustomer(ctx, connect.NewRequest(&capstanv1.GetCustomerRequest{Id: "ghost"}))
	wantCode(t, err, connect.CodeNotFound, "ghost")

	// Idempotency: same key and parameters replays; other parameters refuse.
	req := &capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "5", IdempotencyKey: "req-1"}
	first, err := env.lim.Allow(ctx, connect.NewRequest(req))
	if err != nil || first.Msg.Duplicate {
		t.Fatalf("first = %v, %v", first, err)
	}
	again, err := env.lim.Allow(ctx, connect.NewRequest(req))
	if err != nil || !again.Msg.Duplicate || again.Msg.Remaining != first.Msg.Remaining {
		t.Fatalf("again = %v, %v", again, err)
	}
	req.Value = "6"
	_, err = env.lim.Allow(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodeFailedPrecondition, "different parameters")

	env.b.mu.Lock()
	env.b.unavailable = true
	env.b.mu.Unlock()
	_, err = env.lim.Allow(ctx, connect.NewRequest(&capstanv1.AllowRequest{Customer: "u1", Entitlement: "ai_chat", Value: "1"}))
	wantCode(t, err, connect.CodeUnavailable, "")
	_, err = env.lim.GetUsage(ctx, connect.NewRequest(&capstanv1.GetUsageRequest{Customer: "u1", Entitlement: "ai_chat"}))
	wantCode(t, err, connect.CodeUnavailable, "")
}

func TestAuth(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	client := func(key string) (capstanv1connect.LimiterServiceClient, capstanv1connect.CustomerServiceClient) {
		opt := connect.WithInterceptors(bearer(key))
		return capstanv1connect.NewLimiterServiceClient(http.DefaultClient, env.url, opt),
			capstanv1connect.NewCustomerServiceClient(http.DefaultClient, env.url, opt)
	}
	allowReq := func() *connect.Request[capstanv1.AllowRequest] {
		return connect.NewRequest(&capstanv1.AllowRequest{Customer: "x", Entitlement: "ai_chat", Value: "1"})
	}
	lim, cus := client("")
	_, err := lim.Allow(ctx, allowReq())
	wantCode(t, err, connect.CodeUnauthenticated, "missing API key")
	lim, _ = client("wrong-key-0123456789")
	_, err = lim.Allow(ctx, allowReq())
	wantCode(t, err, connect.CodeUnauthenticated, "invalid API key")
	lim, cus = client(clientKey)
	if _, err := lim.Allow(ctx, allowReq()); err != nil {
		t.Fatalf("client key on Limiter: %v", err)
	}
	_, err = cus.CreateCustomer(ctx, connect.NewRequest(&capstanv1.CreateCustomerRequest{Id: "x", Plan: "starter"}))
	wantCode(t, err, connect.CodePermissionDenied, "admin")
	_, err = capstanv1connect.NewAdminServiceClient(http.DefaultClient, env.url, connect.WithInterceptors(bearer(clientKey))).
		Status(ctx, connect.NewRequest(&capstanv1.StatusRequest{}))
	wantCode(t, err, connect.CodePermissionDenied, "admin")
	_, err = capstanv1connect.NewPolicyServiceClient(http.DefaultClient, env.url, connect.WithInterceptors(bearer(clientKey))).
		GetPolicy(ctx, connect.NewRequest(&capstanv1.GetPolicyRequest{}))
	wantCode(t, err, connect.CodePermissionDenied, "admin")
	if env.b.appliedCount() != 2 { // the policy and the one allowed call
		t.Fatalf("applied = %d", env.b.appliedCount())
	}
	// Metrics and health stay open.
	for _, path := range []string{"/metrics"} {
		res, err := http.Get(env.url + path)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, res, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(body), `capstan_decisions_total{method="Allow",reason="unknown_customer",result="denied"} 1`) {
			t.Fatalf("metrics lack the decision:\n%s", body)
		}
		if !strings.Contains(string(body), `capstan_request_duration_seconds_count{code="unauthenticated",procedure="/capstan.v1.LimiterService/Allow"} 2`) {
			t.Fatalf("metrics lack the refused calls:\n%s", body)
		}
	}
}

func TestPolicyService(t *testing.T) {
	env := newEnv(t)
	ctx := context.Background()
	got, err := env.pol.GetPolicy(ctx, connect.NewRequest(&capstanv1.GetPolicyRequest{}))
	if err != nil || got.Msg.Version != 1 || got.Msg.Format != "stof" || got.Msg.Text != seedPolicy {
		t.Fatalf("get = %v, %v", got, err)
	}
	v, err := env.pol.ValidatePolicy(ctx, connect.NewRequest(&capstanv1.ValidatePolicyRequest{Text: `{"policy": {"credits": {"a": {"bogus": 1}}}}`}))
	if err != nil || v.Msg.Valid || len(v.Msg.Problems) == 0 {
		t.Fatalf("validate = %v, %v", v, err)
	}
	v, err = env.pol.ValidatePolicy(ctx, connect.NewRequest(&capstanv1.ValidatePolicyRequest{Text: seedPolicy, Format: "stof"}))
	if err != nil || !v.Msg.Valid || !slices.Equal(v.Msg.Plans, []string{"starter"}) || !slices.Equal(v.Msg.Credits, []string{"claude_sonnet_4"}) {
		t.Fatalf("validate = %v, %v", v, err)
	}
	same, err := env.pol.SetPolicy(ctx, connect.NewRequest(&capstanv1.SetPolicyRequest{Text: seedPolicy, Format: "stof"}))
	if err != nil || same.Msg.Changed || same.Msg.Version != 1 {
		t.Fatalf("set same = %v, %v", same, err)
	}
	next := strings.Replace(seedPolicy, "value: 16667", "value: 20000", 1)
	set, err := env.pol.SetPolicy(ctx, connect.NewRequest(&capstanv1.SetPolicyRequest{Text: next, Format: "stof"}))
	if err != nil || !set.Msg.Changed || set.Msg.Version != 2 {
		t.Fatalf("set = %v, %v", set, err)
	}
}

// TestConnectJSON: a plain JSON POST works, amounts are strings, and the
// error body names the field.
func TestConnectJSON(t *testing.T) {
	env := newEnv(t)
	post := func(procedure, body string) (int, string) {
		req, _ := http.NewRequest("POST", env.url+"/"+procedure, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+adminKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := post("capstan.v1.CustomerService/CreateCustomer", `{"id":"cus_1","plan":"starter"}`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	code, body := post("capstan.v1.LimiterService/Allow", `{"customer":"cus_1","entitlement":"ai_chat","value":"6420"}`)
	if code != 200 || !strings.Contains(body, `"allowed":`) || !strings.Contains(body, `"10247"`) {
		t.Fatalf("%d %s", code, body)
	}
	code, body = post("capstan.v1.LimiterService/Allow", `{"customer":"cus_1","entitlement":"ai_chat","value":"1e2000000000"}`)
	if code != 400 || !strings.Contains(body, `"invalid_argument"`) || !strings.Contains(body, "value: ") {
		t.Fatalf("%d %s", code, body)
	}
}
