package rpc

import (
	"context"
	"errors"
	"strings"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/engine"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// policies serves capstan.v1.PolicyService.
type policies struct{ *core }

var _ capstanv1connect.PolicyServiceHandler = policies{}

func (s policies) GetPolicy(ctx context.Context, _ *connect.Request[capstanv1.GetPolicyRequest]) (*connect.Response[capstanv1.GetPolicyResponse], error) {
	text, format, ver := s.backend.Policy()
	return connect.NewResponse(&capstanv1.GetPolicyResponse{Text: text, Format: format, Version: ver}), nil
}

// loadPolicy validates a document; problems lists what is wrong with it.
func loadPolicy(text, format string) (*engine.Policy, []string) {
	p, err := engine.LoadPolicy(text, format)
	if err == nil {
		return p, nil
	}
	var ve *engine.ValidationError
	if errors.As(err, &ve) {
		return nil, append([]string(nil), ve.Problems...)
	}
	return nil, []string{err.Error()}
}

func checkPolicyRequest(text, format string) error {
	var ck check
	if text == "" {
		ck.fail("text", "required")
	}
	if len(text) > maxPolicyText {
		ck.fail("text", "longer than %d bytes", maxPolicyText)
	}
	ck.policyFormat("format", format)
	return ck.err()
}

func (s policies) ValidatePolicy(ctx context.Context, req *connect.Request[capstanv1.ValidatePolicyRequest]) (*connect.Response[capstanv1.ValidatePolicyResponse], error) {
	m := req.Msg
	if err := checkPolicyRequest(m.Text, m.Format); err != nil {
		return nil, err
	}
	p, problems := loadPolicy(m.Text, m.Format)
	out := &capstanv1.ValidatePolicyResponse{Valid: p != nil, Problems: problems}
	if p != nil {
		out.Credits = sortedKeys(p.Credits)
		out.Plans = append([]string(nil), p.PlanOrder...)
		if d := p.DefaultPlan(); d != nil {
			out.DefaultPlan = d.Name
		}
	}
	return connect.NewResponse(out), nil
}

func (s policies) SetPolicy(ctx context.Context, req *connect.Request[capstanv1.SetPolicyRequest]) (*connect.Response[capstanv1.SetPolicyResponse], error) {
	m := req.Msg
	if err := checkPolicyRequest(m.Text, m.Format); err != nil {
		return nil, err
	}
	var ck check
	ck.optID("idempotency_key", m.IdempotencyKey)
	if err := ck.err(); err != nil {
		return nil, err
	}
	if _, problems := loadPolicy(m.Text, m.Format); problems != nil {
		return nil, invalidArgument("text", "invalid policy: "+strings.Join(problems, "; "))
	}
	// Installing what is already in force changes nothing, so retries (with or
	// without the same key) never bump the version twice.
	if text, format, ver := s.backend.Policy(); text == m.Text && (format == m.Format || m.Format == "") {
		return connect.NewResponse(&capstanv1.SetPolicyResponse{Version: ver}), nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ver, err := s.backend.SetPolicy(ctx, m.Text, m.Format)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&capstanv1.SetPolicyResponse{Version: ver, Changed: true}), nil
}

func (s policies) TestPolicy(context.Context, *connect.Request[capstanv1.TestPolicyRequest]) (*connect.Response[capstanv1.TestPolicyResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New(
		"capstan.v1.PolicyService.TestPolicy is not implemented yet: run the cases locally with `capstanctl policy test DIR`"))
}
