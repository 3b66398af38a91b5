package snapshot

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Format constants.
const (
	Magic         = "CAPSNAP\x00"
	FormatVersion = uint32(1)

	markCustomers = 'C'
	markDedupe    = 'D'
	markEnd       = 'E'

	// Bounds a reader enforces before allocating anything.
	MaxIDLength       = 256
	MaxPolicyText     = 16 << 20
	MaxPolicyFormat   = 16
	MaxCustomerRecord = 64 << 20
	MaxResultRecord   = 16 << 20
	FingerprintSize   = 32
	checksumSize      = sha256.Size
	bufSize           = 64 << 10
)

// Errors. Every read failure wraps one of them.
var (
	// ErrCorrupt: the stream is truncated, damaged or inconsistent.
	ErrCorrupt = errors.New("snapshot corrupt")
	// ErrVersion: the stream is a snapshot of a format this binary cannot read.
	ErrVersion = errors.New("snapshot format not supported")
)

// Header describes a snapshot and says how many records follow.
type Header struct {
	Shard         uint64
	Index, Term   uint64 // the last log entry the state includes
	PolicyVersion uint64
	PolicyFormat  string
	PolicyText    string
	Clock         int64 // the FSM's time (ms): max of every command time applied
	Customers     uint64
	Dedupe        uint64
}

// DedupeEntry is one idempotency record.
type DedupeEntry struct {
	RequestID   string
	Fingerprint [FingerprintSize]byte
	AppliedAt   int64  // FSM time of the original apply (ms)
	Result      []byte // the encoded result, opaque here
}

// Writer streams a snapshot. Call Customer for every customer in ascending id
// order, then DedupeEntry for every entry, then Close. The counts must match the
// header's.
type Writer struct {
	dst     io.Writer
	bw      *bufio.Writer
	sum     hash.Hash
	h       Header
	ncust   uint64
	ndedupe uint64
	lastID  string
	scratch [binary.MaxVarintLen64]byte
	err     error
	closed  bool
	digest  [checksumSize]byte
}

// NewWriter writes the magic, version and header to w.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if len(h.PolicyFormat) > MaxPolicyFormat {
		return nil, fmt.Errorf("snapshot: policy format %q longer than %d bytes", h.PolicyFormat, MaxPolicyFormat)
	}
	if len(h.PolicyText) > MaxPolicyText {
		return nil, fmt.Errorf("snapshot: policy text is %d bytes, more than %d", len(h.PolicyText), MaxPolicyText)
	}
	sw := &Writer{dst: w, sum: sha256.New(), h: h}
	sw.bw = bufio.NewWriterSize(io.MultiWriter(w, sw.sum), bufSize)
	sw.raw([]byte(Magic))
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], FormatVersion)
	sw.raw(v[:])
	sw.uvarint(h.Shard)
	sw.uvarint(h.Index)
	sw.uvarint(h.Term)
	sw.uvarint(h.PolicyVersion)
	sw.varint(h.Clock)
	sw.uvarint(h.Customers)
	sw.uvarint(h.Dedupe)
	sw.bytes([]byte(h.PolicyFormat))
	sw.str(h.PolicyText)
	sw.raw([]byte{markCustomers})
	if sw.err != nil {
		return nil, sw.err
	}
	return sw, nil
}

func (w *Writer) raw(b []byte) {
	if w.err == nil {
		_, w.err = w.bw.Write(b)
	}
}

func (w *Writer) uvarint(v uint64) { w.raw(w.scratch[:binary.PutUvarint(w.scratch[:], v)]) }
func (w *Writer) varint(v int64)   { w.raw(w.scratch[:binary.PutVarint(w.scratch[:], v)]) }

func (w *Writer) bytes(b []byte) {
	w.uvarint(uint64(len(b)))
	w.raw(b)
}

func (w *Writer) str(s string) {
	w.uvarint(uint64(len(s)))
	if w.err == nil {
		_, w.err = w.bw.WriteString(s)
	}
}

// Customer appends one customer's canonical encoding.
func (w *Writer) Customer(id string, enc []byte) error {
	if w.err != nil {
		return w.err
	}
	switch {
	case w.ncust >= w.h.Customers:
		w.err = fmt.Errorf("snapshot: more customers than the %d the header announced", w.h.Customers)
	case w.ncust > 0 && id <= w.lastID:
		w.err = fmt.Errorf("snapshot: customer %q written after %q (ids must ascend)", id, w.lastID)
	case id == "" || len(id) > MaxIDLength:
		w.err = fmt.Errorf("snapshot: customer id %q: length must be 1..%d", id, MaxIDLength)
	case len(enc) > MaxCustomerRecord:
		w.err = fmt.Errorf("snapshot: customer %q encodes to %d bytes, more than %d", id, len(enc), MaxCustomerRecord)
	}
	if w.err != nil {
		return w.err
	}
	w.str(id)
	w.bytes(enc)
	w.ncust++
	w.lastID = id
	return w.err
}

// DedupeEntry appends one idempotency record (after every customer).
func (w *Writer) DedupeEntry(e DedupeEntry) error {
	if w.err != nil {
		return w.err
	}
	switch {
	case w.ncust != w.h.Customers:
		w.err = fmt.Errorf("snapshot: %d customers written, header announced %d", w.ncust, w.h.Customers)
	case w.ndedupe >= w.h.Dedupe:
		w.err = fmt.Errorf("snapshot: more dedupe entries than the %d the header announced", w.h.Dedupe)
	case e.RequestID == "" || len(e.RequestID) > MaxIDLength:
		w.err = fmt.Errorf("snapshot: request id %q: length must be 1..%d", e.RequestID, MaxIDLength)
	case len(e.Result) > MaxResultRecord:
		w.err = fmt.Errorf("snapshot: result of %q is %d bytes, more than %d", e.RequestID, len(e.Result), MaxResultRecord)
	}
	if w.err != nil {
		return w.err
	}
	if w.ndedupe == 0 {
		w.raw([]byte{markDedupe})
	}
	w.str(e.RequestID)
	w.raw(e.Fingerprint[:])
	w.varint(e.AppliedAt)
	w.bytes(e.Result)
	w.ndedupe++
	return w.err
}

// Close checks the counts, writes the end marker and the checksum, and flushes.
// It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	if w.ncust != w.h.Customers {
		w.err = fmt.Errorf("snapshot: %d customers written, header announced %d", w.ncust, w.h.Customers)
		return w.err
	}
	if w.ndedupe != w.h.Dedupe {
		w.err = fmt.Errorf("snapshot: %d dedupe entries written, header announced %d", w.ndedupe, w.h.Dedupe)
		return w.err
	}
	if w.ndedupe == 0 {
		w.raw([]byte{markDedupe})
	}
	w.raw([]byte{markEnd})
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	if w.err != nil {
		return w.err
	}
	w.sum.Sum(w.digest[:0])
	_, w.err = w.dst.Write(w.digest[:])
	return w.err
}

// Sum returns the SHA-256 written as the trailer (valid after a successful Close).
func (w *Writer) Sum() [32]byte { return w.digest }
