package projections

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
)

// logSubscriber is a Watermill subscriber over the log itself. A topic is
// a projection's name: Subscribe delivers, from the projection's recorded
// position on, one message per batch of consecutive records, and waits
// for the message's ack before the next (strict order); after a nack it
// reads the position again and redelivers.
type logSubscriber struct {
	pool  *pgxpool.Pool
	store eventstore.Store
	tail  *tail
	batch int

	mu      sync.Mutex
	closing chan struct{}
	wg      sync.WaitGroup
}

var _ message.Subscriber = (*logSubscriber)(nil)

func newLogSubscriber(pool *pgxpool.Pool, store eventstore.Store, t *tail, batch int) *logSubscriber {
	return &logSubscriber{pool: pool, store: store, tail: t, batch: batch, closing: make(chan struct{})}
}

// Subscribe implements message.Subscriber.
func (s *logSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	ctx, cancel := context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer cancel()
		go func() {
			select {
			case <-s.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		s.deliver(ctx, topic, out)
	}()
	return out, nil
}

func (s *logSubscriber) deliver(ctx context.Context, topic string, out chan<- *message.Message) {
	pos, err := s.position(ctx, topic)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if err != nil {
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 10*time.Second)
			pos, err = s.position(ctx, topic)
			continue
		}
		evs, rerr := s.tail.get(ctx, pos+1, s.batch)
		var ie *integrityError
		first, last := pos+1, pos
		switch {
		case errors.As(rerr, &ie):
			last = first // deliver it: the handler halts the projection
		case rerr != nil:
			err = rerr
			continue
		case len(evs) == 0:
			if _, werr := s.store.Wait(ctx, pos+1); werr != nil {
				return
			}
			continue
		default:
			last = evs[len(evs)-1].Position
		}
		// Claim check: the message names the events; the handler takes
		// them, decoded and checked, from the shared tail.
		msg := message.NewMessage(topic+":"+strconv.FormatUint(first, 10)+"-"+strconv.FormatUint(last, 10), nil)
		msg.Metadata.Set("first", strconv.FormatUint(first, 10))
		msg.Metadata.Set("last", strconv.FormatUint(last, 10))
		msg.SetContext(ctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			return
		}
		select {
		case <-msg.Acked():
			pos, backoff = last, 100*time.Millisecond
		case <-msg.Nacked():
			err = errors.New("nacked") // read the position again after a pause
		case <-ctx.Done():
			return
		}
	}
}

// position reads a projection's recorded position; a halted projection
// waits here until it is rebuilt.
func (s *logSubscriber) position(ctx context.Context, name string) (uint64, error) {
	var pos int64
	var status string
	err := s.pool.QueryRow(ctx, `SELECT position, status FROM projection_state WHERE name = $1`, name).Scan(&pos, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("projections: no state for %s", name)
	}
	if err == nil && status == "halted" {
		err = fmt.Errorf("%w: %s", ErrHalted, name)
	}
	return uint64(pos), err
}

// Close implements message.Subscriber: it stops every subscription and
// waits for them.
func (s *logSubscriber) Close() error {
	s.mu.Lock()
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
