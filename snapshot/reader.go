package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/capstanhq/capstan/engine"
)

// Reader reads a snapshot record by record. Every byte it consumes before the
// trailer is hashed; Finish compares the hash with the trailer.
type Reader struct {
	br             *bufio.Reader
	sum            hash.Hash
	off            int64 // bytes consumed
	h              Header
	ncust, ndedupe uint64
	lastID         string
	lastAt         int64
	phase          int // 0 customers, 1 dedupe, 2 finished
	where          string
	one            [1]byte
}

// NewReader reads and checks the magic, the version and the header.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{br: bufio.NewReaderSize(r, bufSize), sum: sha256.New(), where: "header"}
	magic := make([]byte, len(Magic))
	if err := sr.full(magic); err != nil {
		return nil, sr.corrupt(err, "reading magic")
	}
	if string(magic) != Magic {
		return nil, fmt.Errorf("snapshot: %w: bad magic %q (not a Capstan snapshot)", ErrCorrupt, magic)
	}
	var v [4]byte
	if err := sr.full(v[:]); err != nil {
		return nil, sr.corrupt(err, "reading format version")
	}
	if ver := binary.LittleEndian.Uint32(v[:]); ver != FormatVersion {
		return nil, fmt.Errorf("snapshot: %w: format version %d (this binary reads version %d)", ErrVersion, ver, FormatVersion)
	}
	h := &sr.h
	var err error
	for _, f := range []struct {
		name string
		dst  *uint64
	}{{"shard", &h.Shard}, {"last index", &h.Index}, {"last term", &h.Term}, {"policy version", &h.PolicyVersion}} {
		if *f.dst, err = sr.uvarint(); err != nil {
			return nil, sr.corrupt(err, "reading "+f.name)
		}
	}
	if h.Clock, err = sr.varint(); err != nil {
		return nil, sr.corrupt(err, "reading clock")
	}
	if h.Customers, err = sr.uvarint(); err != nil {
		return nil, sr.corrupt(err, "reading customer count")
	}
	if h.Dedupe, err = sr.uvarint(); err != nil {
		return nil, sr.corrupt(err, "reading dedupe count")
	}
	format, err := sr.bytes(MaxPolicyFormat, "policy format")
	if err != nil {
		return nil, err
	}
	h.PolicyFormat = string(format)
	text, err := sr.bytes(MaxPolicyText, "policy text")
	if err != nil {
		return nil, err
	}
	h.PolicyText = string(text)
	if err := sr.marker(markCustomers, "customers section"); err != nil {
		return nil, err
	}
	return sr, nil
}

// Header returns the snapshot's header.
func (r *Reader) Header() Header { return r.h }

// NextCustomer returns the next customer record, or io.EOF after the last one.
func (r *Reader) NextCustomer() (id string, enc []byte, err error) {
	if r.phase != 0 || r.ncust == r.h.Customers {
		return "", nil, io.EOF
	}
	r.where = fmt.Sprintf("customer %d of %d", r.ncust+1, r.h.Customers)
	idb, err := r.bytes(MaxIDLength, "customer id")
	if err != nil {
		return "", nil, err
	}
	id = string(idb)
	if id == "" {
		return "", nil, r.bad("empty customer id")
	}
	if r.ncust > 0 && id <= r.lastID {
		return "", nil, r.bad("customer id %q after %q: ids must ascend", truncate(id), truncate(r.lastID))
	}
	if enc, err = r.bytes(MaxCustomerRecord, "customer encoding"); err != nil {
		return "", nil, err
	}
	r.ncust++
	r.lastID = id
	return id, enc, nil
}

// NextDedupe returns the next idempotency record, or io.EOF after the last one.
// It must be called after every customer was read.
func (r *Reader) NextDedupe() (DedupeEntry, error) {
	if r.phase == 0 {
		if r.ncust != r.h.Customers {
			return DedupeEntry{}, fmt.Errorf("snapshot: NextDedupe called after %d of %d customers", r.ncust, r.h.Customers)
		}
		r.where = "dedupe section"
		if err := r.marker(markDedupe, "dedupe section"); err != nil {
			return DedupeEntry{}, err
		}
		r.phase = 1
	}
	if r.phase != 1 || r.ndedupe == r.h.Dedupe {
		return DedupeEntry{}, io.EOF
	}
	r.where = fmt.Sprintf("dedupe entry %d of %d", r.ndedupe+1, r.h.Dedupe)
	var e DedupeEntry
	idb, err := r.bytes(MaxIDLength, "request id")
	if err != nil {
		return e, err
	}
	if len(idb) == 0 {
		return e, r.bad("empty request id")
	}
	e.RequestID = string(idb)
	if err := r.full(e.Fingerprint[:]); err != nil {
		return e, r.corrupt(err, "reading fingerprint")
	}
	if e.AppliedAt, err = r.varint(); err != nil {
		return e, r.corrupt(err, "reading applied-at time")
	}
	if r.ndedupe > 0 && e.AppliedAt < r.lastAt {
		return e, r.bad("applied-at %d before the previous entry's %d: entries must be in apply order", e.AppliedAt, r.lastAt)
	}
	if e.Result, err = r.bytes(MaxResultRecord, "result"); err != nil {
		return e, err
	}
	r.ndedupe++
	r.lastAt = e.AppliedAt
	return e, nil
}

// Finish reads the end marker and the trailer, checks the checksum and that
// nothing follows. Call it after the last dedupe entry.
func (r *Reader) Finish() error {
	if r.phase == 0 {
		if _, err := r.NextDedupe(); err != nil && err != io.EOF {
			return err
		}
	}
	if r.phase != 1 || r.ndedupe != r.h.Dedupe {
		return fmt.Errorf("snapshot: Finish called after %d of %d dedupe entries", r.ndedupe, r.h.Dedupe)
	}
	r.where = "end"
	if err := r.marker(markEnd, "end marker"); err != nil {
		return err
	}
	want := r.sum.Sum(nil)
	var got [checksumSize]byte
	if _, err := io.ReadFull(r.br, got[:]); err != nil {
		return fmt.Errorf("snapshot: %w: truncated in the checksum trailer at offset %d", ErrCorrupt, r.off)
	}
	if !bytes.Equal(want, got[:]) {
		return fmt.Errorf("snapshot: %w: checksum mismatch (trailer %x, content hashes to %x)", ErrCorrupt, got[:8], want[:8])
	}
	if _, err := r.br.ReadByte(); err != io.EOF {
		return fmt.Errorf("snapshot: %w: unexpected bytes after the checksum trailer at offset %d", ErrCorrupt, r.off+checksumSize)
	}
	r.phase = 2
	return nil
}

// --- low-level reads, all hashed ---

func (r *Reader) full(b []byte) error {
	n, err := io.ReadFull(r.br, b)
	r.sum.Write(b[:n])
	r.off += int64(n)
	return err
}

func (r *Reader) ReadByte() (byte, error) {
	c, err := r.br.ReadByte()
	if err != nil {
		return 0, err
	}
	r.one[0] = c
	r.sum.Write(r.one[:])
	r.off++
	return c, nil
}

func (r *Reader) uvarint() (uint64, error) { return binary.ReadUvarint(r) }
func (r *Reader) varint() (int64, error)   { return binary.ReadVarint(r) }

// bytes reads a length-prefixed field of at most limit bytes. Large fields are read
// in chunks, so a corrupt length on a short stream costs no large allocation.
func (r *Reader) bytes(limit int, what string) ([]byte, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, r.corrupt(err, "reading the length of the "+what)
	}
	if n > uint64(limit) {
		return nil, r.bad("%s length %d exceeds the limit of %d", what, n, limit)
	}
	if n <= bufSize {
		b := make([]byte, n)
		if err := r.full(b); err != nil {
			return nil, r.corrupt(err, "reading the "+what)
		}
		return b, nil
	}
	var buf bytes.Buffer
	m, err := io.CopyN(&buf, io.TeeReader(r.br, r.sum), int64(n))
	r.off += m
	if err != nil {
		return nil, r.corrupt(err, "reading the "+what)
	}
	return buf.Bytes(), nil
}

func (r *Reader) marker(want byte, what string) error {
	c, err := r.ReadByte()
	if err != nil {
		return r.corrupt(err, "reading the "+what+" marker")
	}
	if c != want {
		return r.bad("expected the %s marker %q, found byte 0x%02x", what, want, c)
	}
	return nil
}

// corrupt wraps a read error: EOF means the stream was cut short.
func (r *Reader) corrupt(err error, doing string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("snapshot: %w: truncated in %s (%s) at offset %d", ErrCorrupt, r.where, doing, r.off)
	}
	if strings.Contains(err.Error(), "varint overflows") {
		return fmt.Errorf("snapshot: %w: bad varint in %s (%s) at offset %d", ErrCorrupt, r.where, doing, r.off)
	}
	return fmt.Errorf("snapshot: %s (%s) at offset %d: %w", r.where, doing, r.off, err)
}

func (r *Reader) bad(format string, args ...any) error {
	return fmt.Errorf("snapshot: %w: %s at offset %d: %s", ErrCorrupt, r.where, r.off, fmt.Sprintf(format, args...))
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// State is a fully read and validated snapshot.
type State struct {
	Header Header
	Engine *engine.Engine // fresh, holding the snapshot's policy and customers
	Dedupe []DedupeEntry
}

// Restore reads a whole snapshot into a fresh engine. It returns nothing but an
// error unless every record decoded, the counts matched and the checksum held, so
// the caller can swap the state in atomically.
func Restore(rd io.Reader) (*State, error) {
	r, err := NewReader(rd)
	if err != nil {
		return nil, err
	}
	h := r.Header()
	var pol *engine.Policy
	if h.PolicyVersion > 0 || h.PolicyText != "" {
		if pol, err = engine.LoadPolicy(h.PolicyText, h.PolicyFormat); err != nil {
			return nil, fmt.Errorf("snapshot: %w: policy version %d does not load: %v", ErrCorrupt, h.PolicyVersion, err)
		}
	}
	e := engine.New(pol)
	for {
		id, enc, err := r.NextCustomer()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := e.RestoreCustomer(enc); err != nil {
			return nil, r.bad("customer %q: %v", truncate(id), err)
		}
		if c := e.Customer(id); c == nil || c.ID != id {
			return nil, r.bad("the record for customer %q encodes another id", truncate(id))
		}
	}
	if uint64(e.Len()) != h.Customers {
		return nil, fmt.Errorf("snapshot: %w: %d customer records restored %d customers (an id repeated)", ErrCorrupt, h.Customers, e.Len())
	}
	st := &State{Header: h, Engine: e}
	seen := make(map[string]struct{}, min(h.Dedupe, 1<<16))
	for {
		d, err := r.NextDedupe()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if _, dup := seen[d.RequestID]; dup {
			return nil, r.bad("request id %q appears twice", truncate(d.RequestID))
		}
		seen[d.RequestID] = struct{}{}
		st.Dedupe = append(st.Dedupe, d)
	}
	if err := r.Finish(); err != nil {
		return nil, err
	}
	return st, nil
}
