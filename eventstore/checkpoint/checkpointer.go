package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/merkle"
)

// ErrInconsistent means the log in the store no longer extends a
// checkpoint that was signed before: its history was rewritten. The
// checkpointer refuses to sign such a log.
var ErrInconsistent = errors.New("checkpoint: log is inconsistent with an earlier signed checkpoint")

// Checkpointer signs checkpoints of a store's log. Before it signs a new
// tree it proves, with a consistency proof, that the tree extends the last
// checkpoint it trusts: the store's latest checkpoint, or the one kept in
// StateFile if that is newer. So a history rewritten in the database is
// never signed.
type Checkpointer struct {
	Store  eventstore.Store
	Signer *Signer
	// StateFile, when set, keeps the latest checkpoint this process signed
	// or checked, outside the database. It guards against a database
	// whose checkpoints were removed along with a rewritten tail.
	StateFile string
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Logger receives one line per checkpoint and per failure; slog's
	// default logger when nil.
	Logger *slog.Logger
}

func (c *Checkpointer) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Checkpointer) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Checkpoint signs and stores a checkpoint at the current head, unless the
// latest checkpoint already covers it, in which case it returns that one.
// It returns an error matching ErrInconsistent if the log does not extend
// the last trusted checkpoint, and one matching ErrInvalid if a stored
// checkpoint is not signed by this signer's key.
func (c *Checkpointer) Checkpoint(ctx context.Context) (eventstore.Checkpoint, error) {
	v := c.Signer.Verifier()
	trusted, haveTrusted, err := c.trusted(ctx)
	if err != nil {
		return eventstore.Checkpoint{}, err
	}
	head, err := c.Store.Head(ctx)
	if err != nil {
		return eventstore.Checkpoint{}, err
	}
	if haveTrusted && head.Position < trusted.Size {
		return eventstore.Checkpoint{}, fmt.Errorf("%w: head %d is below checkpoint size %d", ErrInconsistent, head.Position, trusted.Size)
	}
	root, err := merkle.Root(ctx, c.Store, head.Position)
	if err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("checkpoint: tree root at %d: %w", head.Position, err)
	}
	if haveTrusted {
		proof, err := merkle.ConsistencyProof(ctx, c.Store, head.Position, trusted.Size)
		if err != nil {
			return eventstore.Checkpoint{}, fmt.Errorf("checkpoint: consistency proof %d→%d: %w", trusted.Size, head.Position, err)
		}
		if err := merkle.VerifyConsistency(proof, head.Position, root, trusted.Size, trusted.Root); err != nil {
			return eventstore.Checkpoint{}, fmt.Errorf("%w: tree at %d does not extend checkpoint %d: %v", ErrInconsistent, head.Position, trusted.Size, err)
		}
		if head.Position == trusted.Size {
			// Nothing new to sign. Store the checkpoint in case it came from
			// the state file only (adding an identical one is a no-op).
			if trusted.CreatedAt.IsZero() {
				trusted.CreatedAt = eventstore.TruncateTime(c.now())
			}
			if err := c.Store.AddCheckpoint(ctx, trusted); err != nil {
				return eventstore.Checkpoint{}, err
			}
			return trusted, c.remember(trusted)
		}
	}
	signed, err := c.Signer.Sign(head.Position, root)
	if err != nil {
		return eventstore.Checkpoint{}, err
	}
	if _, _, err := v.Open(signed); err != nil { // never store what we could not verify
		return eventstore.Checkpoint{}, err
	}
	cp := eventstore.Checkpoint{Size: head.Position, Root: root, Note: signed, CreatedAt: eventstore.TruncateTime(c.now())}
	if err := c.Store.AddCheckpoint(ctx, cp); err != nil {
		return eventstore.Checkpoint{}, err
	}
	c.logger().Info("checkpoint signed", "size", cp.Size, "root", cp.Root.String())
	return cp, c.remember(cp)
}

// trusted returns the newest checkpoint with a valid signature among the
// store's latest and the state file's.
func (c *Checkpointer) trusted(ctx context.Context) (eventstore.Checkpoint, bool, error) {
	v := c.Signer.Verifier()
	var best eventstore.Checkpoint
	have := false
	latest, err := c.Store.LatestCheckpoint(ctx)
	switch {
	case errors.Is(err, eventstore.ErrNotFound):
	case err != nil:
		return best, false, err
	default:
		size, root, err := v.Open(latest.Note)
		if err != nil {
			return best, false, fmt.Errorf("checkpoint: stored checkpoint at size %d: %w", latest.Size, err)
		}
		if size != latest.Size || root != latest.Root {
			return best, false, fmt.Errorf("%w: stored checkpoint at size %d: its note says size %d", ErrInvalid, latest.Size, size)
		}
		best, have = latest, true
	}
	if c.StateFile != "" {
		b, err := os.ReadFile(c.StateFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return best, false, fmt.Errorf("checkpoint: state file: %w", err)
		default:
			size, root, err := v.Open(b)
			if err != nil {
				return best, false, fmt.Errorf("checkpoint: state file %s: %w", c.StateFile, err)
			}
			if !have || size > best.Size {
				if have {
					c.logger().Error("the database's latest checkpoint is older than the one this server last signed; checkpoints were removed",
						"database_size", best.Size, "state_file_size", size)
				}
				best, have = eventstore.Checkpoint{Size: size, Root: root, Note: b}, true
			}
		}
	}
	return best, have, nil
}

func (c *Checkpointer) remember(cp eventstore.Checkpoint) error {
	if c.StateFile == "" {
		return nil
	}
	if b, err := os.ReadFile(c.StateFile); err == nil {
		if size, _, err := c.Signer.Verifier().Open(b); err == nil && size >= cp.Size {
			return nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.StateFile), ".checkpoint-*")
	if err != nil {
		return fmt.Errorf("checkpoint: state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(cp.Note); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint: state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("checkpoint: state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("checkpoint: state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.StateFile); err != nil {
		return fmt.Errorf("checkpoint: state file: %w", err)
	}
	return nil
}

// Run signs a checkpoint every interval while the log grows, until ctx is
// done. Failures are logged and retried at the next tick; an
// inconsistency is logged at error level on every tick until resolved.
func (c *Checkpointer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last uint64
	for {
		head, err := c.Store.Head(ctx)
		if err == nil && (head.Position > last || last == 0) {
			var cp eventstore.Checkpoint
			cp, err = c.Checkpoint(ctx)
			if err == nil {
				last = cp.Size
			}
		}
		if err != nil && ctx.Err() == nil {
			c.logger().Error("checkpoint failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
