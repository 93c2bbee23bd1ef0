package projections

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/domain"
	"stele.dev/stele/eventstore"
)

// Event is a log record with its decoded domain event.
type Event struct {
	eventstore.Record
	Event domain.Event
}

// Names maps a projection's base table names to the tables a call works
// on: the live ones, or the shadow ones of a rebuild. It returns a quoted
// identifier, ready for SQL.
type Names func(base string) string

// Projection is one read model.
type Projection interface {
	// Name identifies the projection; it never changes.
	Name() string
	// Version is the projection's code version: when it changes, the
	// projector rebuilds the projection (into shadow tables) on start.
	Version() int
	// Tables lists the base names of its tables.
	Tables() []string
	// Create returns the statements that create its tables (and their
	// indexes) under the names n gives.
	Create(n Names) []string
	// Apply applies a batch of consecutive events, in order, within tx.
	// It MUST be a pure function of the events and the tables' current
	// content: no clock, no randomness, nothing read from outside the log.
	Apply(ctx context.Context, tx pgx.Tx, n Names, batch []Event) error
}

// liveNames are the tables readers use.
func liveNames(base string) string { return pgx.Identifier{base}.Sanitize() }

// shadowSuffix marks the tables of a rebuild in progress.
const shadowSuffix = "__next"

func shadowNames(base string) string { return pgx.Identifier{base + shadowSuffix}.Sanitize() }

// streamParts splits a stream id at its slashes.
func streamParts(stream string) []string { return strings.Split(stream, "/") }
