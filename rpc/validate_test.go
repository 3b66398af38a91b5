package rpc

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestAmount(t *testing.T) {
	for _, tc := range []struct {
		in   string
		rule sign
		want string // decimal on success
		err  string // substring on failure
	}{
		{"12.5", anySign, "12.5", ""},
		{"-3", anySign, "-3", ""},
		{"+7", anySign, "7", ""},
		{"0.000000001", positive, "0.000000001", ""},
		{".5", anySign, "0.5", ""},
		{"5.", anySign, "5", ""},
		{"1.500000000000000000000", anySign, "1.5", ""}, // trailing zeros are not places
		{"0.123456789012345678", anySign, "0.123456789012345678", ""},
		{"000000000000000000000000000001", anySign, "1", ""}, // leading zeros are not digits
		{"123456789012345678901234", anySign, "123456789012345678901234", ""},
		{"0", nonNegative, "0", ""},

		{"", anySign, "", "required"},
		{"abc", anySign, "", "not a decimal"},
		{"1e2000000000", anySign, "", "not a decimal"},
		{"1E5", anySign, "", "not a decimal"},
		{"NaN", anySign, "", "not a decimal"},
		{"Infinity", anySign, "", "not a decimal"},
		{"0x10", anySign, "", "not a decimal"},
		{"1_000", anySign, "", "not a decimal"},
		{" 1", anySign, "", "not a decimal"},
		{"1 ", anySign, "", "not a decimal"},
		{"-", anySign, "", "not a decimal"},
		{".", anySign, "", "not a decimal"},
		{"1.2.3", anySign, "", "not a decimal"},
		{"--1", anySign, "", "not a decimal"},
		{"0.1234567890123456789", anySign, "", "more than 18 decimal places"},
		{"1234567890123456789012345", anySign, "", "more than 24 integer digits"},
		{strings.Repeat("1", 65), anySign, "", "longer than 64"},
		{"-5", nonNegative, "", "must be >= 0"},
		{"0", positive, "", "must be > 0"},
		{"-0.1", positive, "", "must be > 0"},
	} {
		var ck check
		d := ck.amount("value", tc.in, tc.rule)
		if tc.err == "" {
			if ck.failed() {
				t.Errorf("amount(%q): unexpected error %s: %s", tc.in, ck.field, ck.msg)
			} else if d.String() != tc.want {
				t.Errorf("amount(%q) = %s, want %s", tc.in, d, tc.want)
			}
			continue
		}
		if !ck.failed() {
			t.Errorf("amount(%q) = %s, want an error containing %q", tc.in, d, tc.err)
			continue
		}
		if ck.field != "value" || !strings.Contains(ck.msg, tc.err) {
			t.Errorf("amount(%q): error %s: %s, want field value and %q", tc.in, ck.field, ck.msg, tc.err)
		}
	}
}

func TestIDs(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"cus_123", true},
		{"a", true},
		{"~!@#$%^&*()", true},
		{strings.Repeat("x", 256), true},
		{"", false},
		{strings.Repeat("x", 257), false},
		{"has space", false},
		{"tab\there", false},
		{"nul\x00", false},
		{"é", false},
		{"del\x7f", false},
	} {
		var ck check
		ck.id("customer", tc.in)
		if ck.failed() == tc.ok {
			t.Errorf("id(%q): failed=%v (%s), want ok=%v", tc.in, ck.failed(), ck.msg, tc.ok)
		}
		if ck.failed() && ck.field != "customer" {
			t.Errorf("id(%q): field %q", tc.in, ck.field)
		}
	}
}

func TestDurationsSchedulesInstants(t *testing.T) {
	cases := []struct {
		name  string
		run   func(*check)
		field string // "" = ok
	}{
		{"duration days", func(c *check) {
			if got := c.duration("reset_inc", "7days"); got != 7*24*3600*1000 {
				c.fail("test", "got %d", got)
			}
		}, ""},
		{"duration bare ms", func(c *check) {
			if got := c.duration("ttl", "1500"); got != 1500 {
				c.fail("test", "got %d", got)
			}
		}, ""},
		{"duration empty", func(c *check) { c.duration("ttl", "") }, ""},
		{"duration unit", func(c *check) { c.duration("ttl", "3GB") }, "ttl"},
		{"duration junk", func(c *check) { c.duration("ttl", "soon") }, "ttl"},
		{"duration zero", func(c *check) { c.duration("ttl", "0s") }, "ttl"},
		{"duration negative", func(c *check) { c.duration("reset_inc", "-5min") }, "reset_inc"},
		{"duration huge", func(c *check) { c.duration("ttl", "1e2000000000days") }, "ttl"},
		{"duration fraction of ms", func(c *check) { c.duration("ttl", "1.5ms") }, "ttl"},
		{"schedule ok", func(c *check) { c.schedule("reset_sch", "weekly:mon") }, ""},
		{"schedule bad", func(c *check) { c.schedule("reset_sch", "fortnightly:3") }, "reset_sch"},
		{"schedule day", func(c *check) { c.schedule("reset_sch", "monthly:32") }, "reset_sch"},
		{"instant ok", func(c *check) { c.instant("expires_on", timestamppb.New(timeAt("2030-01-01T00:00:00Z"))) }, ""},
		{"instant epoch", func(c *check) { c.instant("expires_on", &timestamppb.Timestamp{}) }, "expires_on"},
		{"instant invalid", func(c *check) { c.instant("expires_on", &timestamppb.Timestamp{Seconds: 1, Nanos: -1}) }, "expires_on"},
		{"event data object", func(c *check) { c.eventData("event_data", `{"model":"x"}`) }, ""},
		{"event data array", func(c *check) { c.eventData("event_data", `[1]`) }, "event_data"},
		{"event data junk", func(c *check) { c.eventData("event_data", `{`) }, "event_data"},
		{"event data null", func(c *check) { c.eventData("event_data", `null`) }, "event_data"},
		{"unit ok", func(c *check) { c.unit("unit", "GB") }, ""},
		{"unit bad", func(c *check) { c.unit("unit", "parsecs") }, "unit"},
		{"metadata bad key", func(c *check) { c.metadata("metadata", map[string]string{"a b": "x"}) }, "metadata"},
		{"first error wins", func(c *check) {
			c.id("customer", "")
			c.id("entitlement", "")
		}, "customer"},
	}
	for _, tc := range cases {
		var ck check
		tc.run(&ck)
		if tc.field == "" && ck.failed() {
			t.Errorf("%s: unexpected error %s: %s", tc.name, ck.field, ck.msg)
		}
		if tc.field != "" && (!ck.failed() || ck.field != tc.field) {
			t.Errorf("%s: got field %q (%s), want an error on %q", tc.name, ck.field, ck.msg, tc.field)
		}
	}
}

func TestInvalidArgumentNamesField(t *testing.T) {
	var ck check
	ck.amount("caps.rune", "abc", nonNegative)
	err := ck.err()
	var ce *connect.Error
	if !asConnect(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		t.Fatalf("err = %v", err)
	}
	if !strings.HasPrefix(ce.Message(), "caps.rune: ") || ce.Meta().Get(fieldHeader) != "caps.rune" {
		t.Fatalf("message %q, header %q", ce.Message(), ce.Meta().Get(fieldHeader))
	}
}

func TestRenameField(t *testing.T) {
	r := map[string]string{"alts": "alt_ids", "id": "grant_id"}
	for in, want := range map[string]string{
		"alts[2]": "alt_ids[2]", "id": "grant_id", "ids": "ids", "caps.rune": "caps.rune", "": "",
	} {
		if got := renameField(in, r); got != want {
			t.Errorf("renameField(%q) = %q, want %q", in, got, want)
		}
	}
}
