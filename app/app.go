// Package app is Stele's application layer: command handlers that load an
// aggregate from the ledger, let the domain decide, and append what it
// decided with the expected stream version. It also keeps the data keys:
// environment keysets, sealed by a KEK, unwrapped only in memory, rotated
// and resealed in the background.
//
// Plaintext secret values pass through this package on their way in and
// out, and nowhere else: they are sealed before any event is made, and a
// value is decrypted only after its SecretViewed event is durably in the
// log (fail closed).
package app

import (
	"errors"
	"log/slog"
	"time"

	"stele.dev/stele/crypto"
	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// Request says who asks and in which context; it becomes every event's
// metadata.
type Request struct {
	Actor         domain.Actor
	RequestID     string
	ClientAddr    string
	CorrelationID string
	// CausationID names what caused the request's events, when not the
	// request itself (an approved request's changes name the approval).
	CausationID string
	// IdempotencyKey, when set, makes a retried command return the first
	// attempt's result and append nothing new.
	IdempotencyKey string
}

// Result describes what a command appended.
type Result struct {
	// Position is the log position of the command's last event (for
	// read-your-writes), or of the state it found when nothing changed.
	Position uint64
	// Version is the new value version, for secret commands that make one.
	Version uint64
	// Replayed is true when an idempotency key matched an earlier attempt:
	// nothing new was appended.
	Replayed bool
	// Unchanged is true when the command changed nothing (no event).
	Unchanged bool
}

// Config wires a Service.
type Config struct {
	Store eventstore.Store
	// Material keeps wrapped keysets (outside the log, erasable).
	Material crypto.MaterialStore
	// KEK wraps new keysets; OpenKEK opens the KEK a stored keyset names
	// when it is not KEK (after a rewrap in progress). OpenKEK may be nil.
	KEK     crypto.KEK
	OpenKEK func(uri string) (crypto.KEK, error)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger gets operational messages (never a value); slog.Default() when nil.
	Logger *slog.Logger
	// Catalog, when set, is the index the resealer and key commands read;
	// the caller runs it (Catalog.Run).
	Catalog *Catalog
	// CacheSize bounds the aggregates kept in memory (default 10 000) and
	// KeysetCacheSize the unwrapped keysets (default 1 000).
	CacheSize       int
	KeysetCacheSize int
}

// Service runs commands against the ledger.
type Service struct {
	store   eventstore.Store
	now     func() time.Time
	log     *slog.Logger
	aggs    *cache
	keys    *keys
	catalog *Catalog
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Material == nil || cfg.KEK == nil {
		return nil, errors.New("app: Store, Material and KEK are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10_000
	}
	if cfg.KeysetCacheSize <= 0 {
		cfg.KeysetCacheSize = 1_000
	}
	s := &Service{store: cfg.Store, now: cfg.Now, log: cfg.Logger, aggs: newCache(cfg.CacheSize), catalog: cfg.Catalog}
	s.keys = &keys{material: cfg.Material, kek: cfg.KEK, openKEK: cfg.OpenKEK, cache: newKeysetCache(cfg.KeysetCacheSize), log: cfg.Logger}
	return s, nil
}

// Errors of the application layer; domain errors pass through unchanged.
var (
	// ErrIdempotencyKeyReused: the key was used before for another command.
	ErrIdempotencyKeyReused = errors.New("idempotency key already used for another command")
	// ErrValueTooLarge: a secret value over crypto.MaxValueSize.
	ErrValueTooLarge = errors.New("secret value too large")
	// ErrShownOnce: a retried token issue; the token's secret was returned
	// by the first attempt and is not kept anywhere.
	ErrShownOnce = errors.New("the token was issued by an earlier attempt with this idempotency key; its secret was shown then and cannot be shown again")
	// ErrBusy: a command kept conflicting with concurrent writers.
	ErrBusy = errors.New("too many concurrent changes; try again")
	// ErrUnavailable: the ledger could not be read or could not take an
	// event (the database is down or refuses writes). Nothing was done:
	// in particular no value was revealed.
	ErrUnavailable = errors.New("the ledger is unavailable")
)
