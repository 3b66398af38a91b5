package linearize

import (
	"fmt"
	"sort"

	"github.com/anishathalye/porcupine"
)

// Kind says which operation an Input is.
type Kind uint8

const (
	KindAllow Kind = iota + 1
	KindRead
)

// Input is the call half of an operation.
type Input struct {
	Kind     Kind
	Customer string
	// Amount is what an allow asks to admit; unused by reads.
	Amount int64
	// RequestID is the idempotency key the workload sent, if any. The model
	// ignores it; History.Resolve uses it to settle unknown outcomes.
	RequestID string
}

// Allow is the input of allow(customer, amount).
func Allow(customer string, amount int64) Input {
	return Input{Kind: KindAllow, Customer: customer, Amount: amount}
}

// Read is the input of a linearizable read of customer's counter.
func Read(customer string) Input {
	return Input{Kind: KindRead, Customer: customer}
}

// Output is the return half of an operation. The zero Output means the
// outcome is unknown.
type Output struct {
	// Known is false when the workload cannot tell whether the operation
	// took effect (a timeout, a dropped connection, ErrLeadershipLost).
	Known bool
	// Allowed is an allow's decision.
	Allowed bool
	// Value is a read's result.
	Value int64
}

// Decision is the output of an allow that came back with a decision.
func Decision(allowed bool) Output { return Output{Known: true, Allowed: allowed} }

// ReadValue is the output of a read that came back with v.
func ReadValue(v int64) Output { return Output{Known: true, Value: v} }

// Unknown is the output of an operation whose outcome is not known.
func Unknown() Output { return Output{} }

// Model is the porcupine model of one capped counter per customer, starting
// at zero. Every customer in a checked history needs an entry in caps (Check
// validates that; a customer without a cap makes every step illegal).
//
// An allow with an unknown outcome steps like the real system would (admit
// iff it fits) and always succeeds. Together with its open return time that
// covers "it never happened": porcupine can place it after every other
// operation, where its effect is unobservable.
func Model(caps map[string]int64) porcupine.Model {
	return porcupine.Model{
		Partition: partitionByCustomer,
		Init:      func() interface{} { return int64(0) },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			in, out := input.(Input), output.(Output)
			capacity, ok := caps[in.Customer]
			if !ok {
				return false, state
			}
			return step(capacity, state.(int64), in, out)
		},
		DescribeOperation: func(input, output interface{}) string {
			return describe(input.(Input), output.(Output))
		},
		DescribeState: func(state interface{}) string {
			return fmt.Sprintf("%d", state.(int64))
		},
	}
}

func step(capacity, counter int64, in Input, out Output) (bool, interface{}) {
	switch in.Kind {
	case KindAllow:
		// Written as a subtraction so a huge amount cannot overflow.
		fits := in.Amount <= capacity-counter
		switch {
		case !out.Known && fits:
			return true, counter + in.Amount
		case !out.Known:
			return true, counter
		case out.Allowed:
			return fits, counter + in.Amount
		default:
			return !fits, counter
		}
	case KindRead:
		return !out.Known || out.Value == counter, counter
	}
	return false, counter
}

func describe(in Input, out Output) string {
	var res string
	switch {
	case !out.Known:
		res = "?"
	case in.Kind == KindRead:
		res = fmt.Sprintf("%d", out.Value)
	case out.Allowed:
		res = "allowed"
	default:
		res = "denied"
	}
	if in.Kind == KindRead {
		return fmt.Sprintf("read(%s) -> %s", in.Customer, res)
	}
	return fmt.Sprintf("allow(%s, %d) -> %s", in.Customer, in.Amount, res)
}

// partitionByCustomer splits a history into one sub-history per customer,
// in customer order so results and visualisations are stable.
func partitionByCustomer(history []porcupine.Operation) [][]porcupine.Operation {
	by := groupByCustomer(history)
	customers := make([]string, 0, len(by))
	for c := range by {
		customers = append(customers, c)
	}
	sort.Strings(customers)
	out := make([][]porcupine.Operation, 0, len(by))
	for _, c := range customers {
		out = append(out, by[c])
	}
	return out
}

func groupByCustomer(history []porcupine.Operation) map[string][]porcupine.Operation {
	by := make(map[string][]porcupine.Operation)
	for _, op := range history {
		c := op.Input.(Input).Customer
		by[c] = append(by[c], op)
	}
	return by
}
