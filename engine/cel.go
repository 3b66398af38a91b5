package engine

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/shopspring/decimal"
)

// Where Limitr runs Stof functions (a credit's overhead() cost function, a
// notification's matches()), Capstan evaluates a CEL expression: sandboxed (no I/O,
// no clock, bounded cost) and deterministic, so every replica computes the same value.

// celCostLimit bounds the work one evaluation may do.
const celCostLimit = 10_000

// costProgram computes a call's provider overhead in runes from `units` (the call's
// value, a double) and `context` (the call's event data, a map; {} when absent).
type costProgram struct {
	prg cel.Program
}

func compileCost(expr string) (*costProgram, error) {
	env, err := cel.NewEnv(
		cel.Variable("units", cel.DoubleType),
		cel.Variable("context", cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("CEL: %v", iss.Err())
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit))
	if err != nil {
		return nil, fmt.Errorf("CEL: %v", err)
	}
	return &costProgram{prg: prg}, nil
}

// eval returns the overhead, or false on any error or non-numeric result (the caller
// then falls back to units * overhead_cost, as Limitr does). CEL computes in doubles;
// the result is rounded to 12 decimal places before it enters state.
func (p *costProgram) eval(units decimal.Decimal, eventData string) (decimal.Decimal, bool) {
	ctx := map[string]any{}
	if eventData != "" {
		if err := json.Unmarshal([]byte(eventData), &ctx); err != nil {
			ctx = map[string]any{}
		}
	}
	u, _ := units.Float64()
	out, _, err := p.prg.Eval(map[string]any{"units": u, "context": ctx})
	if err != nil {
		return decimal.Zero, false
	}
	var f float64
	switch v := out.(type) {
	case types.Double:
		f = float64(v)
	case types.Int:
		f = float64(v)
	case types.Uint:
		f = float64(v)
	case types.String:
		d, err := decimal.NewFromString(string(v))
		if err != nil || d.IsNegative() {
			return decimal.Zero, false
		}
		return d, true
	default:
		return decimal.Zero, false
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e15 {
		return decimal.Zero, false
	}
	return decimal.NewFromFloat(f).Round(12), true
}

// matchProgram decides whether a notification matches an event: `name` (the event
// name; Limitr's `type`, which CEL reserves) and `event` (its payload as a map, with
// the name also under event.type).
type matchProgram struct {
	prg cel.Program
}

func compileMatch(expr string) (*matchProgram, error) {
	env, err := cel.NewEnv(
		cel.Variable("name", cel.StringType),
		cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("CEL: %v", iss.Err())
	}
	if !ast.OutputType().IsExactType(cel.BoolType) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("CEL: matches must be a bool expression, got %v", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit))
	if err != nil {
		return nil, fmt.Errorf("CEL: %v", err)
	}
	return &matchProgram{prg: prg}, nil
}

func (p *matchProgram) match(typ string, event map[string]any) bool {
	out, _, err := p.prg.Eval(map[string]any{"name": typ, "event": event})
	if err != nil {
		return false
	}
	b, ok := out.(types.Bool)
	return ok && bool(b)
}
