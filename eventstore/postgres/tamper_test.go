package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
	"stele.dev/stele/eventstore/checkpoint"
	"stele.dev/stele/eventstore/merkle"
	"stele.dev/stele/eventstore/postgres"
	"stele.dev/stele/eventstore/verify"
)

// tamperFixture is a 50-event ledger with signed checkpoints at 20 and 50.
type tamperFixture struct {
	store  *postgres.Store
	pool   *pgxpool.Pool
	signer *checkpoint.Signer
	state  string // the checkpointer's state file: the latest signed checkpoint
}

func newTamperFixture(t *testing.T) tamperFixture {
	ctx := context.Background()
	s, pool := newStore(t)
	skey, _, err := checkpoint.GenerateKey("stele.test/tamper")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := checkpoint.NewSigner(skey)
	fx := tamperFixture{store: s, pool: pool, signer: signer, state: filepath.Join(t.TempDir(), "latest-checkpoint")}
	c := &checkpoint.Checkpointer{Store: s, Signer: signer, StateFile: fx.state}
	for i := range 50 {
		ev := eventstore.Event{ID: eventstore.NewID(), Type: "secret.updated", Data: fmt.Appendf(nil, `{"n":%d}`, i)}
		if _, err := s.Append(ctx, fmt.Sprintf("secret-%d", i%3), eventstore.Any, ev); err != nil {
			t.Fatal(err)
		}
		if i == 19 || i == 49 {
			if _, err := c.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if rep, err := verify.Store(ctx, s, verify.Options{Key: signer.Verifier()}); err != nil || rep.Events != 50 || rep.Checkpoints != 2 {
		t.Fatalf("the untouched ledger: %+v %v", rep, err)
	}
	return fx
}

// exec runs SQL as someone with write access to the database would, with
// the append-only triggers switched off.
func (fx tamperFixture) exec(t *testing.T, sqls ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := fx.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	all := append([]string{
		`ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only`,
		`ALTER TABLE ledger_checkpoints DISABLE TRIGGER ledger_checkpoints_append_only`,
	}, sqls...)
	all = append(all,
		`ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only`,
		`ALTER TABLE ledger_checkpoints ENABLE TRIGGER ledger_checkpoints_append_only`)
	for _, q := range all {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// rewriteTail changes the data of position from and recomputes every hash
// and Merkle hash after it, and the head: a forger with database access
// and this code.
func (fx tamperFixture) rewriteTail(t *testing.T, from uint64) {
	t.Helper()
	ctx := context.Background()
	recs, err := readAll(fx.store)
	if err != nil {
		t.Fatal(err)
	}
	var f merkle.Frontier
	var sqls []string
	for i := range recs {
		r := &recs[i]
		if r.Position >= from {
			if r.Position == from {
				r.Data = []byte(`{"n":"forged"}`)
			}
			r.PrevHash = recs[i-1].Hash
			r.Hash = eventstore.ComputeHash(r)
		}
		tree := f.Append(nil, r.Hash)
		if r.Position >= from {
			var tb []byte
			for _, h := range tree {
				tb = append(tb, h[:]...)
			}
			sqls = append(sqls, fmt.Sprintf(`UPDATE ledger_events SET data = '\x%x', prev_hash = '\x%x', hash = '\x%x', tree = '\x%x' WHERE position = %d`,
				r.Data, r.PrevHash[:], r.Hash[:], tb, r.Position))
		}
	}
	last := recs[len(recs)-1]
	sqls = append(sqls, fmt.Sprintf(`UPDATE ledger_head SET hash = '\x%x'`, last.Hash[:]))
	fx.exec(t, sqls...)
	_ = ctx
}

func TestLiveTableTampering(t *testing.T) {
	cases := []struct {
		name    string
		tamper  func(t *testing.T, fx tamperFixture)
		trusted bool // verify against the state file's checkpoint, as an auditor holding it would
		wantPos uint64
		want    string
	}{
		{name: "flip a byte of data", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t, `UPDATE ledger_events SET data = set_byte(data, 1, get_byte(data, 1) # 1) WHERE position = 17`)
		}, wantPos: 17, want: "content"},
		{name: "change a stored hash", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t, `UPDATE ledger_events SET hash = set_byte(hash, 0, get_byte(hash, 0) # 1) WHERE position = 17`)
		}, wantPos: 17, want: "stored hash"},
		{name: "change a stored Merkle hash", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t, `UPDATE ledger_events SET tree = set_byte(tree, 0, get_byte(tree, 0) # 1) WHERE position = 17`)
		}, wantPos: 17, want: "Merkle"},
		{name: "delete an event", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t, `DELETE FROM ledger_events WHERE position = 17`)
		}, wantPos: 17, want: "missing"},
		{name: "insert an event in the middle", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t,
				`UPDATE ledger_events SET position = position + 1000000 WHERE position >= 17`,
				`UPDATE ledger_events SET position = position - 999999 WHERE position >= 1000000`,
				`INSERT INTO ledger_events SELECT 17, stream_id, 99, gen_random_uuid(), type, data, actor, tenant, request_id,
					client_addr, causation_id, correlation_id, recorded_at, hash, hash, tree FROM ledger_events WHERE position = 16`)
		}, wantPos: 17},
		{name: "insert an event past the head", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t, `INSERT INTO ledger_events SELECT 51, stream_id, 99, gen_random_uuid(), type, data, actor, tenant, request_id,
					client_addr, causation_id, correlation_id, recorded_at, hash, hash, tree FROM ledger_events WHERE position = 50`)
		}, wantPos: 51, want: "inserted"},
		{name: "swap two events", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t,
				`UPDATE ledger_events SET position = 1000017 WHERE position = 17`,
				`UPDATE ledger_events SET position = 17 WHERE position = 18`,
				`UPDATE ledger_events SET position = 18 WHERE position = 1000017`)
		}, wantPos: 17},
		{name: "truncate the tail", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t, `DELETE FROM ledger_events WHERE position > 40`)
		}, want: "removed"},
		{name: "truncate the tail, its checkpoint and move the head back", tamper: func(t *testing.T, fx tamperFixture) {
			fx.exec(t, `DELETE FROM ledger_events WHERE position > 40`, `DELETE FROM ledger_checkpoints WHERE size > 40`,
				`UPDATE ledger_head SET position = 40, hash = (SELECT hash FROM ledger_events WHERE position = 40)`)
		}, trusted: true, want: "removed"},
		{name: "rewrite the tail with a recomputed chain", tamper: func(t *testing.T, fx tamperFixture) {
			fx.rewriteTail(t, 30)
		}, want: "history was rewritten"},
		{name: "rewrite the tail and delete the checkpoints that cover it", tamper: func(t *testing.T, fx tamperFixture) {
			fx.rewriteTail(t, 30)
			fx.exec(t, `DELETE FROM ledger_checkpoints WHERE size >= 30`)
		}, trusted: true, want: "history was rewritten"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := newTamperFixture(t)
			c.tamper(t, fx)
			opts := verify.Options{Key: fx.signer.Verifier()}
			if c.trusted {
				opts.Trusted = mustRead(t, fx.state)
			}
			_, err := verify.Store(context.Background(), fx.store, opts)
			var ve *verify.Error
			if !errors.Is(err, verify.ErrFailed) || !errors.As(err, &ve) {
				t.Fatalf("got %v, want a verification failure", err)
			}
			if c.wantPos != 0 && ve.Position != c.wantPos {
				t.Fatalf("failure at position %d (%v), want %d", ve.Position, err, c.wantPos)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			if c.trusted {
				// Without the outside checkpoint the database alone looks fine,
				// which is why auditors keep checkpoints.
				if _, err := verify.Store(context.Background(), fx.store, verify.Options{Key: fx.signer.Verifier()}); err != nil {
					t.Logf("the database alone also fails: %v", err)
				}
				// And the checkpointer refuses to sign the rewritten log.
				c := &checkpoint.Checkpointer{Store: fx.store, Signer: fx.signer, StateFile: fx.state}
				if _, err := c.Checkpoint(context.Background()); !errors.Is(err, checkpoint.ErrInconsistent) {
					t.Fatalf("the checkpointer signed the tampered log: %v", err)
				}
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
