package fsm

import (
	"crypto/sha256"
	"fmt"
	"unicode/utf8"

	"github.com/shopspring/decimal"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	fsmv1 "github.com/capstanhq/capstan/internal/gen/capstan/fsm/v1"
)

// The log encoding of a command is one version byte followed by a
// capstan.fsm.v1.Command protobuf message (deterministic marshalling). The version
// byte lets a future binary change the envelope (compression, a new message)
// without guessing; an entry with an unknown version is refused, never half-read.
const (
	// EncodingV1 is the only command encoding so far.
	EncodingV1 byte = 1

	// MaxCommandSize bounds one encoded command (the proposer checks it; the FSM
	// refuses larger entries too, so a bad proposer cannot make replicas parse
	// megabytes of garbage).
	MaxCommandSize = 1 << 20

	// Decimal text bounds. A command's amounts are checked against them before
	// any parsing or formatting: decimal.NewFromString accepts "1e2000000000" and
	// formatting such a value allocates gigabytes.
	maxDecimalText = 128
	maxDecimalExp  = 64
	maxDecimalBits = 512
	// Results are produced by the engine itself; their amounts can carry more
	// digits (products of scaled values) but are still bounded.
	maxResultDecimalText = 1024
)

// codeError builds a refusal.
func codeError(code ErrorCode, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

func invalid(field, format string, args ...any) *Error {
	return codeError(CodeInvalidArgument, field, format, args...)
}

// EncodeCommand returns the log encoding of cmd. It refuses a command with no
// operation or more than one, amounts that are out of bounds, and commands larger
// than MaxCommandSize; the error is an *Error with CodeInvalidArgument.
func EncodeCommand(cmd *Command) ([]byte, error) {
	p, err := commandToPB(cmd)
	if err != nil {
		return nil, err
	}
	size := proto.Size(p)
	if size+1 > MaxCommandSize {
		return nil, invalid("", "command is %d bytes, more than the %d allowed", size+1, MaxCommandSize)
	}
	buf := make([]byte, 1, size+1)
	buf[0] = EncodingV1
	buf, err = proto.MarshalOptions{Deterministic: true}.MarshalAppend(buf, p)
	if err != nil {
		return nil, fmt.Errorf("fsm: marshal command: %w", err)
	}
	return buf, nil
}

// DecodeCommand parses a log entry produced by EncodeCommand. Errors are *Error.
func DecodeCommand(data []byte) (*Command, error) {
	p, err := decodeCommandPB(data)
	if err != nil {
		return nil, err
	}
	return commandFromPB(p)
}

func decodeCommandPB(data []byte) (*fsmv1.Command, *Error) {
	if len(data) == 0 {
		return nil, invalid("", "empty log entry")
	}
	if len(data) > MaxCommandSize {
		return nil, invalid("", "log entry is %d bytes, more than the %d allowed", len(data), MaxCommandSize)
	}
	if data[0] != EncodingV1 {
		return nil, codeError(CodeFailedPrecondition, "", "unsupported command encoding version %d (this binary reads version %d)", data[0], EncodingV1)
	}
	var p fsmv1.Command
	if err := proto.Unmarshal(data[1:], &p); err != nil {
		return nil, invalid("", "decode command: %v", err)
	}
	return &p, nil
}

// Fingerprint identifies a command's parameters: SHA-256 over its log encoding
// with the top-level request_id and timestamp_ms fields left out. It hashes the
// proposer's bytes as they are in the log rather than a re-encoding, so every
// replica computes the same fingerprint whatever protobuf library it runs.
func Fingerprint(data []byte) ([32]byte, error) {
	h := sha256.New()
	if len(data) == 0 {
		return [32]byte{}, invalid("", "empty log entry")
	}
	h.Write(data[:1]) // the encoding version
	b := data[1:]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return [32]byte{}, invalid("", "decode command: %v", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return [32]byte{}, invalid("", "decode command: %v", protowire.ParseError(m))
		}
		if num != 1 && num != 2 {
			h.Write(b[:n+m])
		}
		b = b[n+m:]
	}
	var out [32]byte
	h.Sum(out[:0])
	return out, nil
}

// EncodeResult returns a result's protobuf encoding (deterministic marshalling), as
// kept in the idempotency table and in snapshots.
func EncodeResult(r *Result) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(resultToPB(r))
	if err != nil {
		return nil, fmt.Errorf("fsm: marshal result: %w", err)
	}
	return b, nil
}

// DecodeResult parses EncodeResult's output.
func DecodeResult(data []byte) (*Result, error) {
	var p fsmv1.Result
	if err := proto.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("fsm: decode result: %w", err)
	}
	r, err := resultFromPB(&p)
	if err != nil {
		return nil, fmt.Errorf("fsm: decode result: %w", err)
	}
	return r, nil
}

// --- decimals ---

// decText formats a command amount, refusing values whose text would be huge.
// Zero is "" (the proto default).
func decText(field string, d decimal.Decimal) (string, error) {
	if d.IsZero() {
		return "", nil
	}
	if exp := d.Exponent(); exp > maxDecimalExp || exp < -maxDecimalExp {
		return "", invalid(field, "amount exponent %d out of range", exp)
	}
	if d.Coefficient().BitLen() > maxDecimalBits {
		return "", invalid(field, "amount has too many digits")
	}
	return d.String(), nil
}

// decOut formats an amount the engine produced; zero is "".
func decOut(d decimal.Decimal) string {
	if d.IsZero() {
		return ""
	}
	return d.String()
}

func decPtrOut(d *decimal.Decimal) *string {
	if d == nil {
		return nil
	}
	s := d.String()
	return &s
}

// parseDec parses plain decimal text: an optional sign, digits, an optional point
// and digits. No exponent, no spaces, at most limit bytes; "" is zero.
func parseDec(field, s string, limit int) (decimal.Decimal, error) {
	if s == "" {
		return decimal.Decimal{}, nil
	}
	if len(s) > limit {
		return decimal.Decimal{}, invalid(field, "amount longer than %d characters", limit)
	}
	digits, point := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !point:
			point = true
		case (c == '-' || c == '+') && i == 0:
		default:
			return decimal.Decimal{}, invalid(field, "invalid amount %q (want plain decimal text such as 12.5)", truncate(s, 40))
		}
	}
	if digits == 0 {
		return decimal.Decimal{}, invalid(field, "invalid amount %q", truncate(s, 40))
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Decimal{}, invalid(field, "invalid amount %q: %v", truncate(s, 40), err)
	}
	return d, nil
}

func parseDecPtr(field string, s *string, limit int) (*decimal.Decimal, error) {
	if s == nil {
		return nil, nil
	}
	d, err := parseDec(field, *s, limit)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
