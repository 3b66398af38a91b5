package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	capstanv1 "github.com/capstanhq/capstan/internal/gen/capstan/v1"
	"github.com/capstanhq/capstan/snapshot"
)

// Operator snapshots (AdminService.CompactShards and SaveSnapshot, and an
// offline check of a saved file). Restoring a saved snapshot is not offered.
func init() {
	register("snapshot", "compact", &command{
		group:   "snapshots",
		summary: "snapshot every replica of shards now and truncate their raft logs",
		usage:   "[--shard N]... [--keep-entries N]",
		about: `Asks every node holding a replica of the shards (every shard without --shard)
to take a raft snapshot of the state it has applied now and drop the raft log
entries the snapshot covers, keeping the newest --keep-entries (0 by default:
a follower that lags behind then catches up from the leader's snapshot). It
proposes nothing: each replica snapshots its own state. Prints one row per
replica: INDEX is the last log index its snapshot includes, LOG the raft log
it keeps afterwards ("empty" when the snapshot covers all of it), RESULT
"compacted" or why not ("nothing new to snapshot" when the shard has applied
nothing yet is not a failure). Exits 1 when a replica refused or did not
answer. Without --timeout the call may take up to 2 minutes.`,
		run: snapshotCompact,
	})
	register("snapshot", "save", &command{
		group:   "snapshots",
		summary: "save a consistent copy of shards' state to files, one per shard",
		usage:   "--out DIR [--shard N]...",
		about: `Saves each shard (every shard without --shard) into DIR as
shard-NNNN-idxINDEX.snap, in the format of the shards' raft snapshots: header,
customers, idempotency records and a SHA-256 trailer. The shard's leader takes
the copy after confirming its leadership and catching up with its log, so it
includes every decision acknowledged before the call; nothing changes on the
server. Each file is written under a temporary name, synced, verified (as
'snapshot inspect' does) and only then renamed, so a file named .snap is a
complete snapshot. A line per shard on stderr shows progress; stdout has a
table (-o json: one object per line, per shard). A shard that fails is
reported and the others are still saved; the exit code is then 1 or 2 (see
capstanctl help). --timeout bounds each shard (2 minutes when not given).
Restoring a saved snapshot is not supported yet.`,
		run: snapshotSave,
	})
	register("snapshot", "inspect", &command{
		group:   "snapshots",
		summary: "check a saved snapshot file offline and print what it holds",
		usage:   "FILE",
		about: `Reads FILE without a server, with the snapshot package's reader: the magic and
format version, every record (each customer must decode, ids ascend, counts
match the header) and the SHA-256 trailer. Prints the shard, the last log
index the state includes, the policy version, the customer and idempotency
record counts; -o json prints them as one object. A damaged or truncated file
exits 1 with what is wrong and where (byte offset).`,
		run: snapshotInspect,
	})
}

// shardsFlag is a repeatable --shard (commas also separate numbers).
type shardsFlag []uint32

func (s *shardsFlag) String() string {
	out := make([]string, len(*s))
	for i, v := range *s {
		out[i] = u32(v)
	}
	return strings.Join(out, ",")
}

func (s *shardsFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		var f shardFlag
		if err := f.Set(strings.TrimSpace(part)); err != nil {
			return err
		}
		*s = append(*s, f.n)
	}
	return nil
}

// snapshotTimeout bounds compact, and each shard of save, when --timeout is
// not given.
const snapshotTimeout = 2 * time.Minute

func snapshotCompact(g *globals, args []string) error {
	fs := subFlags(g, "snapshot", "compact")
	var shards shardsFlag
	fs.Var(&shards, "shard", "compact shard `N` (repeatable, or N,M,...; default: every shard)")
	keep := fs.Uint64("keep-entries", 0, "keep the newest `N` raft log entries on each replica (0: drop every entry the snapshot covers)")
	if _, err := parseN(g, fs, args, 0, 0); err != nil {
		return err
	}
	if !g.timeoutSet && !flagSet(fs, "timeout") {
		g.timeout = snapshotTimeout
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	res, err := c.adm.CompactShards(ctx, connect.NewRequest(&capstanv1.CompactShardsRequest{Shards: shards, KeepEntries: *keep}))
	if err != nil {
		return g.callErr(err)
	}
	failures := 0
	for _, r := range res.Msg.Replicas {
		if r.Failed {
			failures++
		}
	}
	if g.json() {
		if err := g.printJSON(res.Msg); err != nil {
			return err
		}
	} else {
		t := newTable(g.stdout, "SHARD", "NODE", "STATE", "INDEX", "LOG", "RESULT")
		for _, r := range res.Msg.Replicas {
			index, log, result := "-", "empty", "compacted"
			if r.SnapshotIndex > 0 {
				index = u64(r.SnapshotIndex)
			}
			switch {
			case r.State == "unreachable" || r.State == "not open":
				log = "-"
			case r.FirstIndex > 0:
				log = u64(r.FirstIndex) + "-" + u64(r.LastIndex)
			}
			if r.Error != "" {
				result = r.Error
			}
			t.row(u32(r.Shard), r.NodeId, r.State, index, log, result)
		}
		t.flush()
	}
	if failures > 0 {
		return failed("%d of %d replicas did not compact (see RESULT)", failures, len(res.Msg.Replicas))
	}
	return nil
}

// savedSnapshot is one shard's line of `snapshot save -o json`.
type savedSnapshot struct {
	Shard         uint32 `json:"shard"`
	File          string `json:"file"`
	Bytes         int64  `json:"bytes"`
	AppliedIndex  uint64 `json:"appliedIndex"`
	Term          uint64 `json:"term"`
	PolicyVersion uint64 `json:"policyVersion"`
	Customers     uint64 `json:"customers"`
	DedupeEntries uint64 `json:"dedupeEntries"`
	NodeID        string `json:"nodeId"`
}

func snapshotSave(g *globals, args []string) error {
	fs := subFlags(g, "snapshot", "save")
	out := fs.String("out", "", "write the files into `DIR`, created when missing (required)")
	var shards shardsFlag
	fs.Var(&shards, "shard", "save shard `N` (repeatable, or N,M,...; default: every shard)")
	if _, err := parseN(g, fs, args, 0, 0); err != nil {
		return err
	}
	if *out == "" {
		return usageErr("--out is required; usage: capstanctl %s", usageLine(fs))
	}
	if !g.timeoutSet && !flagSet(fs, "timeout") {
		g.timeout = snapshotTimeout
	}
	if err := os.MkdirAll(*out, 0o750); err != nil {
		return &exitError{code: 2, err: err}
	}
	ids := slices.Clone([]uint32(shards))
	if len(ids) == 0 {
		st, err := g.status()
		if err != nil {
			return err
		}
		for _, sh := range st.Shards {
			ids = append(ids, sh.Shard)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)

	t := newLineTable(g.stdout, []string{"SHARD", "INDEX", "POLICY", "CUSTOMERS", "BYTES", "FILE"}, 5, 5, 6, 9, 6)
	var worst *exitError
	bad := 0
	for _, id := range ids {
		s, err := g.saveShard(*out, id)
		if err != nil {
			bad++
			var ee *exitError
			if !errors.As(err, &ee) {
				ee = &exitError{code: 2, err: err}
			}
			fmt.Fprintf(g.stderr, "shard %d: not saved: %v\n", id, ee.err)
			if worst == nil || ee.code > worst.code {
				worst = ee
			}
			continue
		}
		fmt.Fprintf(g.stderr, "shard %d: saved index %d from %s (%s, %d bytes) to %s\n",
			id, s.AppliedIndex, s.NodeID, plural(s.Customers, "customer"), s.Bytes, s.File)
		if g.json() {
			b, err := json.Marshal(s)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			fmt.Fprintf(g.stdout, "%s\n", b)
			continue
		}
		t.row(u32(s.Shard), u64(s.AppliedIndex), "v"+u64(s.PolicyVersion), u64(s.Customers), strconv.FormatInt(s.Bytes, 10), s.File)
	}
	if !g.json() {
		t.done()
	}
	if worst != nil {
		return &exitError{code: worst.code, err: fmt.Errorf("%d of %d shards not saved (the last error: %v)", bad, len(ids), worst.err)}
	}
	return nil
}

// saveShard streams one shard into dir: a temporary file, synced and verified,
// then renamed to shard-NNNN-idxINDEX.snap.
func (g *globals) saveShard(dir string, id uint32) (*savedSnapshot, error) {
	c, err := g.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	stream, err := c.adm.SaveSnapshot(ctx, connect.NewRequest(&capstanv1.SaveSnapshotRequest{Shard: id}))
	if err != nil {
		return nil, g.callErr(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, g.callErr(err)
		}
		return nil, &exitError{code: 2, err: errors.New("the server ended the stream without sending the snapshot")}
	}
	info := stream.Msg().Info
	if info == nil || info.Shard != id {
		return nil, &exitError{code: 2, err: fmt.Errorf("the server's first message does not describe shard %d: %v", id, stream.Msg())}
	}
	tmp, err := os.CreateTemp(dir, fmt.Sprintf(".shard-%04d-*.snap.tmp", id))
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var size int64
	for stream.Receive() {
		d := stream.Msg().Data
		if _, err := tmp.Write(d); err != nil {
			return nil, &exitError{code: 2, err: err}
		}
		size += int64(len(d))
	}
	if err := stream.Err(); err != nil {
		return nil, g.callErr(err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	if err := tmp.Close(); err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	h, err := inspectFile(tmp.Name())
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("the copy received does not verify: %w", err)}
	}
	if h.Shard != uint64(id) || h.Index != info.AppliedIndex {
		return nil, &exitError{code: 2, err: fmt.Errorf("the copy received holds shard %d at index %d, the server announced shard %d at index %d",
			h.Shard, h.Index, id, info.AppliedIndex)}
	}
	final := filepath.Join(dir, fmt.Sprintf("shard-%04d-idx%d.snap", id, info.AppliedIndex))
	if err := os.Rename(tmp.Name(), final); err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	keep = true
	if d, err := os.Open(dir); err == nil { // make the rename durable
		_ = d.Sync()
		d.Close()
	}
	return &savedSnapshot{Shard: id, File: final, Bytes: size, AppliedIndex: info.AppliedIndex, Term: info.Term,
		PolicyVersion: info.PolicyVersion, Customers: info.Customers, DedupeEntries: info.DedupeEntries, NodeID: info.NodeId}, nil
}

// inspected is `snapshot inspect -o json`.
type inspected struct {
	File          string `json:"file"`
	Bytes         int64  `json:"bytes"`
	Shard         uint64 `json:"shard"`
	AppliedIndex  uint64 `json:"appliedIndex"`
	Term          uint64 `json:"term"`
	PolicyVersion uint64 `json:"policyVersion"`
	PolicyFormat  string `json:"policyFormat"`
	Customers     uint64 `json:"customers"`
	DedupeEntries uint64 `json:"dedupeEntries"`
	Clock         string `json:"clock"`
	SHA256        string `json:"sha256"`
}

// inspectFile reads and checks a whole snapshot file (snapshot.Restore: every
// record decodes, counts match, the checksum holds) and returns its header.
func inspectFile(path string) (snapshot.Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return snapshot.Header{}, err
	}
	defer f.Close()
	st, err := snapshot.Restore(f)
	if err != nil {
		return snapshot.Header{}, err
	}
	return st.Header, nil
}

func snapshotInspect(g *globals, args []string) error {
	pos, err := parseN(g, subFlags(g, "snapshot", "inspect"), args, 1, 1)
	if err != nil {
		return err
	}
	path := pos[0]
	fi, err := os.Stat(path)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if fi.IsDir() {
		return usageErr("%s is a directory: give a snapshot file (shard-NNNN-idxN.snap)", path)
	}
	h, err := inspectFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && !errors.Is(err, snapshot.ErrCorrupt) {
			return &exitError{code: 2, err: err}
		}
		return failed("%s: %v", path, err)
	}
	trailer, err := readTail(path, fi.Size(), 32)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	out := inspected{File: path, Bytes: fi.Size(), Shard: h.Shard, AppliedIndex: h.Index, Term: h.Term,
		PolicyVersion: h.PolicyVersion, PolicyFormat: h.PolicyFormat, Customers: h.Customers, DedupeEntries: h.Dedupe,
		Clock: time.UnixMilli(h.Clock).UTC().Format(time.RFC3339Nano), SHA256: hex.EncodeToString(trailer)}
	if g.json() {
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		fmt.Fprintf(g.stdout, "%s\n", b)
		return nil
	}
	policy := "v" + u64(h.PolicyVersion)
	if h.PolicyFormat != "" {
		policy += " (" + h.PolicyFormat + ")"
	}
	fields(g.stdout,
		"FILE", path,
		"SHARD", u64(h.Shard),
		"INDEX", u64(h.Index),
		"TERM", u64(h.Term),
		"POLICY", policy,
		"CUSTOMERS", u64(h.Customers),
		"DEDUPE ENTRIES", u64(h.Dedupe),
		"CLOCK", out.Clock,
		"BYTES", strconv.FormatInt(fi.Size(), 10),
		"CHECKSUM", "ok (sha256 "+out.SHA256+")",
	)
	return nil
}

func plural(n uint64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return u64(n) + " " + what + "s"
}

// readTail reads the last n bytes of a file of size size.
func readTail(path string, size int64, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, size-int64(n)); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}
