package postgres

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"stele.dev/stele/eventstore"
)

// listen keeps a connection LISTENing on the store's channel and turns
// notifications into observed heads, reconnecting with backoff. ready is
// closed once the first LISTEN is in place.
func (s *Store) listen(ctx context.Context, ready chan struct{}) {
	backoff := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, func() {
			if first {
				first = false
				close(ready)
			}
			backoff = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("ledger listener disconnected; reconnecting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context, onReady func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	// Catch up on commits made before LISTEN took effect.
	h, err := s.Head(ctx)
	if err != nil {
		return err
	}
	s.observe(h)
	onReady()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if h, ok := parsePayload(n.Payload); ok {
			s.observe(h)
		}
	}
}

func parsePayload(p string) (eventstore.Head, bool) {
	f := strings.Fields(p)
	if len(f) != 3 {
		return eventstore.Head{}, false
	}
	pos, err1 := strconv.ParseUint(f[0], 10, 64)
	hash, err2 := eventstore.ParseHash(f[1])
	us, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return eventstore.Head{}, false
	}
	return eventstore.Head{Position: pos, Hash: hash, RecordedAt: time.UnixMicro(us).UTC()}, true
}
