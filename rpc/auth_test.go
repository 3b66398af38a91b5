package rpc

import (
	"strings"
	"testing"
)

func TestParseKeys(t *testing.T) {
	k := NewKeys()
	err := k.ParseKeys("test", `
# a comment
admin-key-0123456789:admin
client-key-0123456789:client, other-client-key-0123:client
`)
	if err != nil {
		t.Fatal(err)
	}
	if k.Len() != 3 {
		t.Fatalf("len = %d", k.Len())
	}
	for key, want := range map[string]Role{
		"admin-key-0123456789": RoleAdmin, "client-key-0123456789": RoleClient, "other-client-key-0123": RoleClient,
	} {
		if got, ok := k.Role(key); !ok || got != want {
			t.Errorf("Role(%q) = %q, %v", key, got, ok)
		}
	}
	if _, ok := k.Role("admin-key-012345678"); ok {
		t.Error("a prefix of a key matched")
	}
	for _, bad := range []struct{ text, err string }{
		{"short:admin", "shorter than"},
		{"long-enough-key-0123:root", "unknown role"},
		{"no-role-at-all-0123456", "want key:role"},
		{"has space in-it-0123:admin", "printable ASCII"},
	} {
		if err := NewKeys().ParseKeys("f", bad.text); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("ParseKeys(%q) = %v, want %q", bad.text, err, bad.err)
		}
		if err := NewKeys().ParseKeys("f", bad.text); err != nil && strings.Contains(err.Error(), "enough-key") {
			t.Errorf("error leaks the key: %v", err)
		}
	}
}
