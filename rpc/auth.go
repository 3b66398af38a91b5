package rpc

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/capstanhq/capstan/internal/gen/capstan/v1/capstanv1connect"
)

// Role is what an API key may call.
type Role string

// Roles. A client key may call LimiterService only; an admin key everything.
const (
	RoleClient Role = "client"
	RoleAdmin  Role = "admin"
)

// MinKeyLength refuses keys short enough to guess.
const MinKeyLength = 16

// Keys maps API keys to roles. Keys are held as SHA-256 digests, so lookups
// compare fixed-size digests and the table never holds a key in clear.
type Keys struct {
	roles map[[32]byte]Role
}

// NewKeys returns an empty key set.
func NewKeys() *Keys { return &Keys{roles: map[[32]byte]Role{}} }

// Len is the number of keys.
func (k *Keys) Len() int { return len(k.roles) }

// Add adds one key.
func (k *Keys) Add(key string, role Role) error {
	switch role {
	case RoleClient, RoleAdmin:
	default:
		return fmt.Errorf("unknown role %q (want client or admin)", role)
	}
	if len(key) < MinKeyLength {
		return fmt.Errorf("API key %s is shorter than %d characters", redact(key), MinKeyLength)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' || key[i] == ',' {
			return fmt.Errorf("API key %s: want printable ASCII without spaces or commas", redact(key))
		}
	}
	k.roles[sha256.Sum256([]byte(key))] = role
	return nil
}

// Role returns the key's role.
func (k *Keys) Role(key string) (Role, bool) {
	r, ok := k.roles[sha256.Sum256([]byte(key))]
	return r, ok
}

// ParseKeys adds "key:role" entries separated by commas or newlines; blank
// entries and lines starting with # are skipped. source names the input in
// errors.
func (k *Keys) ParseKeys(source, text string) error {
	sc := bufio.NewScanner(strings.NewReader(text))
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		for _, entry := range strings.Split(l, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			i := strings.LastIndexByte(entry, ':')
			if i <= 0 {
				return fmt.Errorf("%s:%d: want key:role, got %s", source, line, redact(entry))
			}
			if err := k.Add(entry[:i], Role(strings.TrimSpace(entry[i+1:]))); err != nil {
				return fmt.Errorf("%s:%d: %w", source, line, err)
			}
		}
	}
	return sc.Err()
}

// LoadKeys reads keys from a file (when path is not empty) and from env
// (CAPSTAN_API_KEYS's value, when not empty).
func LoadKeys(path, env string) (*Keys, error) {
	k := NewKeys()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
		if err := k.ParseKeys(path, string(b)); err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
	}
	if env != "" {
		if err := k.ParseKeys("CAPSTAN_API_KEYS", env); err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
	}
	return k, nil
}

// redact shows only the start of a key in errors and logs.
func redact(key string) string {
	if len(key) <= 4 {
		return "\"****\""
	}
	return fmt.Sprintf("%q", key[:4]+"****")
}

// authInterceptor checks the bearer token of every call to Capstan's services.
// Health and reflection are mounted without it, so they stay open.
type authInterceptor struct{ keys *Keys }

var errNoKey = errors.New("missing API key: send the header `Authorization: Bearer <key>`")

func (a authInterceptor) authorize(ctx context.Context, procedure string, header interface{ Get(string) string }) error {
	auth := header.Get("Authorization")
	if auth == "" {
		return connect.NewError(connect.CodeUnauthenticated, errNoKey)
	}
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("malformed Authorization header: want `Bearer <key>`"))
	}
	role, ok := a.keys.Role(strings.TrimSpace(token))
	if !ok {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("invalid API key"))
	}
	if info := callInfoFrom(ctx); info != nil {
		info.role = role
	}
	if role == RoleAdmin {
		return nil
	}
	if strings.HasPrefix(procedure, "/"+capstanv1connect.LimiterServiceName+"/") {
		return nil
	}
	return connect.NewError(connect.CodePermissionDenied,
		fmt.Errorf("the %s role may call %s only; %s needs an admin key", role, capstanv1connect.LimiterServiceName, procedure))
}

func (a authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.authorize(ctx, req.Spec().Procedure, req.Header()); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := a.authorize(ctx, conn.Spec().Procedure, conn.RequestHeader()); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
