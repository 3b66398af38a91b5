package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/internal/conformance"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
	"gopkg.in/yaml.v3"
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

// Bounds on TestPolicy. The cases are parsed and run in the handler, so a
// request is bounded in files and bytes, and only a few run at once so that
// policy tests never starve the limiter of CPU.
const (
	maxTestFiles     = 200
	maxTestFileText  = 1 << 20
	maxTestFileName  = 256
	maxTestPolicyRun = 2 // concurrent TestPolicy calls per server
)

var testPolicySlots = make(chan struct{}, maxTestPolicyRun)

func (s policies) TestPolicy(ctx context.Context, req *connect.Request[capstanv1.TestPolicyRequest]) (*connect.Response[capstanv1.TestPolicyResponse], error) {
	m := req.Msg
	var ck check
	if len(m.Files) == 0 {
		ck.fail("files", "required: send at least one case file")
	}
	if len(m.Files) > maxTestFiles {
		ck.fail("files", "%d files, more than %d: send them in several requests", len(m.Files), maxTestFiles)
	}
	for i, f := range m.Files {
		field := fmt.Sprintf("files[%d]", i)
		if len(f.Name) > maxTestFileName {
			ck.fail(field+".name", "longer than %d bytes", maxTestFileName)
		}
		if !utf8.ValidString(f.Name) || strings.ContainsFunc(f.Name, unicode.IsControl) {
			ck.fail(field+".name", "want UTF-8 text without control characters")
		}
		if f.Text == "" {
			ck.fail(field+".text", "required")
		}
		if len(f.Text) > maxTestFileText {
			ck.fail(field+".text", "longer than %d bytes", maxTestFileText)
		}
	}
	if len(m.Run) > maxTextLen {
		ck.fail("run", "longer than %d bytes", maxTextLen)
	}
	if err := ck.err(); err != nil {
		return nil, err
	}

	// Parse every file before running any, so a bad file costs no CPU.
	text, format, ver := s.backend.Policy()
	usedServerPolicy := false
	cases := make([]*conformance.Case, 0, len(m.Files))
	for i, f := range m.Files {
		field := fmt.Sprintf("files[%d].text", i)
		name := f.Name
		if name == "" {
			name = fmt.Sprintf("files[%d]", i)
		}
		data, borrowed, err := withPolicy([]byte(f.Text), text, format)
		if err != nil {
			return nil, invalidArgument(field, name+": "+err.Error())
		}
		c, err := conformance.Parse(name, data)
		if err != nil {
			return nil, invalidArgument(field, err.Error())
		}
		if m.Run != "" && !strings.Contains(c.Name, m.Run) {
			continue
		}
		usedServerPolicy = usedServerPolicy || borrowed
		cases = append(cases, c)
	}

	ctx, cancel := s.bound(ctx)
	defer cancel()
	select {
	case testPolicySlots <- struct{}{}:
		defer func() { <-testPolicySlots }()
	case <-ctx.Done():
		return nil, toConnect(ctx.Err())
	}
	out := &capstanv1.TestPolicyResponse{}
	if usedServerPolicy {
		out.PolicyVersion = ver
	}
	for _, c := range cases {
		if err := ctx.Err(); err != nil {
			return nil, toConnect(err)
		}
		// A fresh sandbox engine per case: the live shards are never touched.
		res := conformance.Run(c, conformance.NewEngineTarget())
		r := &capstanv1.TestPolicyResult{Name: c.Name, File: c.File, Passed: res.Pass, Steps: uint32(res.Steps)}
		if res.Failure != nil {
			r.Failure = res.Failure.Message
		}
		if res.Pass {
			out.Passed++
		} else {
			out.Failed++
		}
		out.Results = append(out.Results, r)
	}
	return connect.NewResponse(out), nil
}

// withPolicy gives a case without a policy the server's policy (text,
// format), reporting whether it did. The policy is appended as top-level
// keys after the case's own lines, so the line numbers in failure messages
// still point into the file as sent. Text that is not a YAML mapping is
// returned unchanged for conformance.Parse to report.
func withPolicy(data []byte, text, format string) ([]byte, bool, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) != 1 {
		return data, false, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return data, false, nil
	}
	hasFormat := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch root.Content[i].Value {
		case "policy":
			return data, false, nil
		case "format":
			hasFormat = true
		}
	}
	if text == "" {
		return nil, false, errors.New("the case has no policy and the server has none installed: add a policy to the case")
	}
	if hasFormat {
		return nil, false, errors.New("the case gives a format but no policy: drop format to run under the server's policy")
	}
	if root.Style&yaml.FlowStyle != 0 {
		// A flow mapping ({name: x, steps: [...]}) cannot take appended keys;
		// re-encode it (its line numbers move).
		root.Content = append(root.Content, scalar("policy"), scalar(text))
		if format != "" {
			root.Content = append(root.Content, scalar("format"), scalar(format))
		}
		root.Style = 0
		b, err := yaml.Marshal(&doc)
		return b, err == nil, err
	}
	var b bytes.Buffer
	b.Grow(len(data) + len(text) + 64)
	b.Write(data)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		b.WriteByte('\n')
	}
	// A JSON string is a valid YAML double-quoted scalar.
	q, err := json.Marshal(text)
	if err != nil {
		return nil, false, err
	}
	b.WriteString("policy: ")
	b.Write(q)
	b.WriteByte('\n')
	if format != "" {
		fmt.Fprintf(&b, "format: %s\n", format)
	}
	return b.Bytes(), true, nil
}

func scalar(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
}
