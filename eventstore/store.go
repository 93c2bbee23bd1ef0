package eventstore

import (
	"context"
)

// Store is the ledger's storage contract. Every backend implements it and
// passes the conformance suite in eventstore/storetest.
//
// The log is one totally ordered sequence of records. Positions start at 1
// and are contiguous. A record is visible to readers only once it and every
// record before it are durably committed, so a reader that has seen
// position p can never later find a new record below p. Records are never
// changed or removed.
type Store interface {
	// Append adds events to the end of stream, in order, as one atomic
	// unit: all of them are appended or none is.
	//
	// Before anything is written the store MUST validate the input as
	// ValidateAppend does (an error matching ErrInvalid) and MUST check
	// expected against the stream's current version (an error matching
	// ErrConflict, a *ConflictError carrying the expected and actual
	// versions). The store assigns positions, stream versions, the
	// recorded time (never earlier than the previous record's), the
	// previous hash and the hash, and extends the Merkle tree.
	//
	// If every event ID is already in the log, in this stream, in this
	// order, with the same type and data, the append is a retry: the store
	// MUST write nothing and return the original result with Replayed set.
	// Any other reuse of an event ID is an error matching
	// ErrDuplicateEvent.
	//
	// Append MUST NOT return until the events are durably committed. If
	// ctx is done before the store starts writing, Append returns ctx.Err()
	// and writes nothing; once writing has started it waits for the
	// outcome, so a nil error always means committed and a non-nil one
	// (other than a lost connection, which it reports as such) means
	// nothing was written.
	Append(ctx context.Context, stream string, expected ExpectedVersion, events ...Event) (Appended, error)

	// ReadStream returns up to limit records of stream with stream
	// versions from fromVersion on, in version order. It returns an error
	// matching ErrStreamNotFound if the stream holds no events. A limit of
	// 0 or less means no limit.
	ReadStream(ctx context.Context, stream string, fromVersion uint64, limit int) ([]Record, error)

	// ReadAll returns up to limit records from position from on, in
	// position order, with no gaps. It returns an empty slice when from is
	// past the head. A limit of 0 or less means a backend-chosen page size
	// of at least 100.
	ReadAll(ctx context.Context, from uint64, limit int) ([]Record, error)

	// ReadByID returns the record holding event id, or an error matching
	// ErrNotFound.
	ReadByID(ctx context.Context, id ID) (Record, error)

	// Head returns the last committed position and its hash.
	Head(ctx context.Context) (Head, error)

	// Wait blocks until the head is at least position, then returns it. It
	// SHOULD wake within milliseconds of the commit that reaches position,
	// including commits made by other processes sharing the backend. It
	// returns ctx.Err() when ctx is done first.
	Wait(ctx context.Context, position uint64) (Head, error)

	// TreeHashes returns the Merkle tree's stored hashes at the given
	// indexes, in the numbering of golang.org/x/mod/sumdb/tlog
	// (StoredHashIndex). Every index MUST be below
	// tlog.StoredHashCount(head position). It satisfies tlog.HashReader
	// through merkle.HashReader.
	TreeHashes(ctx context.Context, indexes []int64) ([]Hash, error)

	// ReadTree returns, for up to limit positions from from on, the tree
	// hashes stored when each was appended. Verifiers use it to check
	// every stored hash.
	ReadTree(ctx context.Context, from uint64, limit int) ([]TreeEntry, error)

	// AddCheckpoint stores a signed checkpoint. Adding the same checkpoint
	// again is a no-op; a different checkpoint for a size already stored
	// is an error matching ErrConflict. Checkpoints, like records, are
	// never changed or removed. The store does not check signatures.
	AddCheckpoint(ctx context.Context, cp Checkpoint) error

	// Checkpoints returns up to limit stored checkpoints with Size at
	// least fromSize, in size order.
	Checkpoints(ctx context.Context, fromSize uint64, limit int) ([]Checkpoint, error)

	// LatestCheckpoint returns the checkpoint with the largest size, or an
	// error matching ErrNotFound if there is none.
	LatestCheckpoint(ctx context.Context) (Checkpoint, error)
}
