// Package eventstore defines Stele's ledger: the append-only, hash-linked,
// totally ordered log of events that is both the source of truth and the
// audit trail.
//
// The package holds the Store contract that every backend implements, the
// record types, the canonical byte encoding of an event and its SHA-256
// hash. It imports only the standard library. Backends live in
// subpackages (eventstore/postgres, eventstore/memstore) and import this
// package, never the other way round; eventstore/storetest is the
// conformance suite every backend runs. The Merkle tree over event hashes
// is in eventstore/merkle, signed checkpoints in eventstore/checkpoint,
// whole-log verification in eventstore/verify and the export file format in
// eventstore/export.
//
// The exact byte layouts are specified in docs/ledger-format.md; the tests
// check that the worked examples there match this code.
package eventstore
