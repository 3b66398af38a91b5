package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/cluster"
	"github.com/capstanhq/capstan/engine"
	"github.com/capstanhq/capstan/fsm"
)

// toConnect maps every error a handler can see to a Connect error, once, at
// the edge. Refusals keep their message; anything unexpected is Internal.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	var fe *fsm.Error
	if errors.As(err, &fe) {
		return fromFSM(fe, nil)
	}
	var ie *engine.InputError
	if errors.As(err, &ie) {
		return invalidArgument(ie.Field, ie.Reason)
	}
	var ve *engine.ValidationError
	if errors.As(err, &ve) {
		return invalidArgument("text", ve.Error())
	}
	switch {
	case errors.Is(err, engine.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, fsm.ErrNoPolicy):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("no policy installed yet: set one with capstan.v1.PolicyService/SetPolicy"))
	case errors.Is(err, cluster.ErrUnknownOutcome):
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf(
			"the call may or may not have been applied: retry it with the same idempotency_key (%w)", err))
	case errors.Is(err, cluster.ErrUnavailable), errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrClosed):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// fromFSM maps a refused command. rename translates the engine's field names
// into the request's where they differ (the engine says "alts[0]" where the
// API says "alt_ids[0]").
func fromFSM(fe *fsm.Error, rename map[string]string) error {
	switch fe.Code {
	case fsm.CodeInvalidArgument:
		field := renameField(fe.Field, rename)
		msg := fe.Message
		if fe.Field != "" && field != fe.Field && strings.HasPrefix(msg, fe.Field+": ") {
			msg = field + msg[len(fe.Field):]
		}
		return invalidArgument(field, msg)
	case fsm.CodeNotFound:
		return connect.NewError(connect.CodeNotFound, errorString(fe.Message))
	case fsm.CodeFailedPrecondition:
		return connect.NewError(connect.CodeFailedPrecondition, errorString(fe.Message))
	}
	return connect.NewError(connect.CodeInternal, errorString(fe.Message))
}

// renameField renames a field or the head of an indexed or dotted one
// ("alts[2]" -> "alt_ids[2]").
func renameField(field string, rename map[string]string) string {
	if len(rename) == 0 || field == "" {
		return field
	}
	head, rest := field, ""
	if i := strings.IndexAny(field, "[."); i > 0 {
		head, rest = field[:i], field[i:]
	}
	if to, ok := rename[head]; ok {
		return to + rest
	}
	return field
}
