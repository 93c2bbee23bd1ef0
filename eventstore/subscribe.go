package eventstore

import (
	"context"
	"iter"
)

// Follower is the part of a Store that a catch-up subscription reads.
type Follower interface {
	ReadAll(ctx context.Context, from uint64, limit int) ([]Record, error)
	Wait(ctx context.Context, position uint64) (Head, error)
}

// Subscribe reads the log from position from on and calls fn with each
// batch of records (at most batch records, in order, each position exactly
// once), catching up on history first and then waiting for new records
// without polling. It returns fn's error, or ctx.Err() when ctx is done.
// A batch of 0 or less means 500.
func Subscribe(ctx context.Context, s Follower, from uint64, batch int, fn func([]Record) error) error {
	if batch <= 0 {
		batch = 500
	}
	if from == 0 {
		from = 1
	}
	for {
		recs, err := s.ReadAll(ctx, from, batch)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			if _, err := s.Wait(ctx, from); err != nil {
				return err
			}
			continue
		}
		if err := fn(recs); err != nil {
			return err
		}
		from = recs[len(recs)-1].Position + 1
	}
}

// Follow is Subscribe as an iterator over single records. Iteration ends
// with a final non-nil error (ctx.Err() when ctx is done), or when the
// loop breaks.
func Follow(ctx context.Context, s Follower, from uint64) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		stop := errStopped{}
		err := Subscribe(ctx, s, from, 0, func(recs []Record) error {
			for _, r := range recs {
				if !yield(r, nil) {
					return stop
				}
			}
			return nil
		})
		if err != stop {
			yield(Record{}, err)
		}
	}
}

type errStopped struct{}

func (errStopped) Error() string { return "stopped" }
