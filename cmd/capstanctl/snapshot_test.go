package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/capstanhq/capstan/fsm"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
)

func TestSnapshotVerbUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"snapshot", "save"}, "capstanctl snapshot save: --out is required; usage: capstanctl snapshot save --out DIR [--shard N]..."},
		{[]string{"snapshot", "save", "--out", t.TempDir(), "extra"}, `capstanctl snapshot save: unexpected argument "extra"`},
		{[]string{"snapshot", "compact", "--shard", "x"}, `capstanctl snapshot compact: invalid value "x" for flag -shard: want a shard number`},
		{[]string{"snapshot", "compact", "--keep-entries", "-1"}, `capstanctl snapshot compact: invalid value "-1" for flag -keep-entries`},
		{[]string{"snapshot", "inspect"}, "capstanctl snapshot inspect: missing arguments; usage: capstanctl snapshot inspect FILE"},
		{[]string{"snapshot", "inspect", t.TempDir()}, "is a directory"},
		{[]string{"snapshot", "inspect", filepath.Join(t.TempDir(), "nope.snap")}, "no such file"},
		{[]string{"snapshot", "restore", "x"}, `unknown verb "restore"`},
	} {
		// No server listens there: these fail before any call.
		code, out, errs := runCtl(t, append([]string{"--server", "http://127.0.0.1:1"}, tc.args...)...)
		if code != 2 || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%q: exit %d, want 2\nstdout: %s\nstderr: %s\nwant: %s", tc.args, code, out, errs, tc.want)
		}
	}
	code, out, _ := runCtl(t, "help")
	if code != 0 || !strings.Contains(out, "\nSnapshots:\n  snapshot compact ") {
		t.Errorf("help lacks the snapshot verbs:\n%s", out)
	}
}

// serverStatus is the server's Status, decoded.
func serverStatus(t *testing.T, s *server) *capstanv1.StatusResponse {
	t.Helper()
	st := &capstanv1.StatusResponse{}
	if err := protojson.Unmarshal([]byte(s.mustCtl(t, "status", "-o", "json")), st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestServerSnapshots drives the snapshot verbs against the package's real
// server: compact truncates every shard's log at or past what it applied,
// save writes one verified file per shard that includes every acknowledged
// decision and restores to the live state hash, inspect checks files offline
// and exits 1 naming what is wrong with a damaged one, and a client key is
// refused.
func TestServerSnapshots(t *testing.T) {
	s := testServer(t)
	for i := range 8 {
		cus := fmt.Sprint("cus_snap_", i)
		s.mustCtl(t, "customer", "create", cus, "--plan", "starter")
		for j := range 3 {
			s.mustCtl(t, "allow", cus, "ai_chat", fmt.Sprint(100+j), "--idempotency-key", fmt.Sprintf("snap-%d-%d", i, j))
		}
	}
	applied := map[uint32]uint64{}
	for _, sh := range serverStatus(t, s).Shards {
		applied[sh.Shard] = sh.AppliedIndex
	}

	// compact: one row per replica (one node here), every one compacted.
	out := s.mustCtl(t, "snapshot", "compact")
	r := rows(out)
	if strings.Join(r[0], " ") != "SHARD NODE STATE INDEX LOG RESULT" || len(r) != testShards+1 {
		t.Fatalf("compact table:\n%s", out)
	}
	for i, row := range r[1:] {
		idx, err := strconv.ParseUint(row[3], 10, 64)
		if row[0] != fmt.Sprint(i) || row[1] != "n1" || row[2] != "Leader" || err != nil || idx < applied[uint32(i)] || row[5] != "compacted" {
			t.Fatalf("compact row %v (applied %d)", row, applied[uint32(i)])
		}
		// The log kept starts after the snapshot (or is empty): entry 1 is gone.
		if row[4] != "empty" {
			first, _, _ := strings.Cut(row[4], "-")
			if f, err := strconv.ParseUint(first, 10, 64); err != nil || f <= idx || f <= 1 {
				t.Fatalf("compact row %v: log %s", row, row[4])
			}
		}
	}
	res := &capstanv1.CompactShardsResponse{}
	if err := protojson.Unmarshal([]byte(s.mustCtl(t, "snapshot", "compact", "--shard", "1", "--shard", "3", "--keep-entries", "5", "-o", "json")), res); err != nil {
		t.Fatal(err)
	}
	if len(res.Replicas) != 2 || res.Replicas[0].Shard != 1 || res.Replicas[1].Shard != 3 || res.Replicas[0].Failed || res.Replicas[0].SnapshotIndex < applied[1] {
		t.Fatalf("compact json: %v", res)
	}
	code, _, errs := s.ctl(t, "snapshot", "compact", "--shard", "9")
	if code != 1 || !strings.HasPrefix(errs, "capstanctl snapshot compact: invalid_argument: shards: no shard 9") {
		t.Fatalf("unknown shard: exit %d %s", code, errs)
	}

	// save: a file per shard, the index at or past the last decision.
	dir := filepath.Join(t.TempDir(), "backup")
	code, out, errs = s.ctl(t, "snapshot", "save", "--out", dir)
	if code != 0 {
		t.Fatalf("save: exit %d\n%s\n%s", code, out, errs)
	}
	if n := strings.Count(errs, "\n"); n != testShards || !strings.Contains(errs, "shard 0: saved index ") {
		t.Fatalf("save progress lines:\n%s", errs)
	}
	r = rows(out)
	if strings.Join(r[0], " ") != "SHARD INDEX POLICY CUSTOMERS BYTES FILE" || len(r) != testShards+1 {
		t.Fatalf("save table:\n%s", out)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != testShards {
		t.Fatalf("save left %d files in %s: %v", len(entries), dir, entries)
	}
	name := regexp.MustCompile(`^shard-(\d{4})-idx(\d+)\.snap$`)
	files := map[uint32]string{}
	for _, e := range entries {
		m := name.FindStringSubmatch(e.Name())
		if m == nil {
			t.Fatalf("unexpected file %s", e.Name())
		}
		sh, _ := strconv.ParseUint(m[1], 10, 32)
		idx, _ := strconv.ParseUint(m[2], 10, 64)
		if idx < applied[uint32(sh)] {
			t.Fatalf("%s: index below the %d shard %d had applied before the save", e.Name(), applied[uint32(sh)], sh)
		}
		files[uint32(sh)] = filepath.Join(dir, e.Name())
	}

	// inspect, and restore into a fresh FSM: the live shard's state hash.
	var st *capstanv1.StatusResponse
	deadline := time.Now().Add(30 * time.Second)
	for { // Status recomputes a changed shard's hash at most every 10s
		st = serverStatus(t, s)
		if !slices.ContainsFunc(st.Shards, func(sh *capstanv1.ShardStatus) bool { return sh.HashIndex != sh.AppliedIndex }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status hashes stay behind the applied indexes: %v", st.Shards)
		}
		time.Sleep(500 * time.Millisecond)
	}
	customers := uint64(0)
	for _, sh := range st.Shards {
		file := files[sh.Shard]
		out := s.mustCtl(t, "snapshot", "inspect", file)
		if field(t, out, "SHARD") != u32(sh.Shard) || field(t, out, "CUSTOMERS") != u64(sh.Customers) ||
			field(t, out, "POLICY") != "v1 (stof)" || !strings.HasPrefix(field(t, out, "CHECKSUM"), "ok (sha256 ") {
			t.Fatalf("inspect %s:\n%s", file, out)
		}
		var js inspected
		if err := json.Unmarshal([]byte(s.mustCtl(t, "snapshot", "inspect", file, "-o", "json")), &js); err != nil ||
			js.Shard != uint64(sh.Shard) || js.AppliedIndex != sh.AppliedIndex || js.Customers != sh.Customers {
			t.Fatalf("inspect json %s: %v %+v (status %v)", file, err, js, sh)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		f := fsm.New(fsm.Options{Shard: int(sh.Shard)})
		if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatalf("restore %s: %v", file, err)
		}
		h := f.StateHash()
		if got := hex.EncodeToString(h[:]); got != sh.StateHash || f.Info().AppliedIndex != sh.HashIndex {
			t.Fatalf("shard %d: restored %s@%d, live %s@%d", sh.Shard, got, f.Info().AppliedIndex, sh.StateHash, sh.HashIndex)
		}
		customers += sh.Customers
	}
	if customers < 8 {
		t.Fatalf("the saved shards hold %d customers", customers)
	}

	// --shard and -o json: one object per line.
	code, out, _ = s.ctl(t, "snapshot", "save", "--out", dir, "--shard", "2", "-o", "json")
	var saved savedSnapshot
	if err := json.Unmarshal([]byte(out), &saved); code != 0 || err != nil || saved.Shard != 2 || saved.File != files[2] || saved.NodeID != "n1" {
		t.Fatalf("save --shard 2 -o json: exit %d %v %+v\n%s", code, err, saved, out)
	}

	code, out, errs = s.ctl(t, "snapshot", "save", "--out", dir, "--shard", "9")
	if code != 1 || !strings.Contains(errs, "shard 9: not saved: invalid_argument: shard: no shard 9") ||
		!strings.Contains(errs, "capstanctl snapshot save: 1 of 1 shards not saved") {
		t.Fatalf("save of an unknown shard: exit %d\n%s\n%s", code, out, errs)
	}

	// Damaged copies fail inspect with exit 1, naming what is wrong.
	data, _ := os.ReadFile(files[0])
	bad := t.TempDir()
	flipped := slices.Clone(data)
	flipped[len(flipped)/2] ^= 0x40
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", data[:len(data)-10], "snapshot corrupt: truncated in the checksum trailer"},
		{"cut", data[:len(data)/2], "snapshot corrupt: truncated in "},
		{"flipped", flipped, "snapshot corrupt: "},
		{"trailing", append(slices.Clone(data), 0), "unexpected bytes after the checksum trailer"},
		{"not a snapshot", []byte("hello, world, this is not a snapshot"), "bad magic"},
	} {
		path := filepath.Join(bad, tc.name+".snap")
		os.WriteFile(path, tc.data, 0o600)
		code, out, errs := runCtl(t, "snapshot", "inspect", path)
		if code != 1 || out != "" || !strings.HasPrefix(errs, "capstanctl snapshot inspect: "+path+": snapshot: ") || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d\nstdout: %s\nstderr: %s\nwant: %s", tc.name, code, out, errs, tc.want)
		}
	}

	// An admin key is needed.
	for _, args := range [][]string{{"snapshot", "compact"}, {"snapshot", "save", "--out", t.TempDir(), "--shard", "0"}} {
		code, _, errs := runCtl(t, append([]string{"--server", s.url, "--api-key", testClientKey}, args...)...)
		if code != 1 || !strings.Contains(errs, "permission_denied: the client role may call capstan.v1.LimiterService only") {
			t.Errorf("%v with a client key: exit %d %s", args, code, errs)
		}
	}
}
