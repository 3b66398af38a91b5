// Package snapshot owns the on-disk (and on-the-wire, for InstallSnapshot) format
// of one shard's state: a versioned, checksummed stream that is written and read
// record by record, never built whole in memory.
//
// # Format (version 1)
//
// All integers are unsigned LEB128 varints unless noted; "bytes" is a varint length
// followed by that many bytes.
//
//	magic           8 bytes  "CAPSNAP\x00"
//	format version  4 bytes  little-endian uint32 (1)
//	header          shard, last index, last term, policy version (varints),
//	                FSM clock (zig-zag varint, ms), customer count, dedupe count
//	                (varints), policy format (bytes), policy text (bytes)
//	'C'             customers section marker
//	customers       count × (id bytes, canonical encoding bytes), ids strictly
//	                ascending; the encoding is engine.EncodeCustomer's
//	'D'             dedupe section marker
//	dedupe entries  count × (request id bytes, 32-byte fingerprint, applied-at
//	                zig-zag varint, encoded result bytes), in apply order
//	'E'             end marker
//	trailer         32 bytes: SHA-256 of every byte above
//
// A reader checks the magic, the version, every length against a bound, the order
// of ids, the counts and, at the end, the checksum; any failure is an error that
// wraps ErrCorrupt (or ErrVersion) and names what was wrong and where. Restore
// builds a fresh engine and hands it back only when the whole stream was valid, so
// the caller can swap it in atomically and a bad snapshot leaves the old state.
//
// The same bytes with shard, index and term set to zero are the shard's canonical
// state: their SHA-256 (Writer.Sum) is the state hash that replicas compare.
//
// This package never touches raft or the file system: it reads and writes
// io.Reader / io.Writer, and knows nothing of commands or results beyond opaque
// bytes.
package snapshot
