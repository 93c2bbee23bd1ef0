package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"stele.dev/stele/eventstore"
)

// copyColumns are the columns of ledger_events in the order copyRows
// writes them.
const copyColumns = `position, stream_id, stream_version, event_id, type, data, actor, tenant, request_id,
	client_addr, causation_id, correlation_id, recorded_at, prev_hash, hash, tree`

// copyHeader opens a PostgreSQL binary COPY stream: the signature, no
// flags, no header extension.
const copyHeader = "PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// pgEpochMicros is 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch, in
// microseconds since 1970.
const pgEpochMicros = 946684800 * 1_000_000

// copyRows holds a batch's rows encoded as a binary COPY stream.
type copyRows struct {
	buf  []byte
	rows int
}

// maxKeptCopyBuffer is the largest buffer reset keeps for the next batch.
const maxKeptCopyBuffer = 1 << 20

func (c *copyRows) reset() {
	if cap(c.buf) > maxKeptCopyBuffer {
		c.buf = nil
	}
	c.buf = append(c.buf[:0], copyHeader...)
	c.rows = 0
}

func (c *copyRows) int8(v int64) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, 8)
	c.buf = binary.BigEndian.AppendUint64(c.buf, uint64(v))
}

func (c *copyRows) text(s string) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(s)))
	c.buf = append(c.buf, s...)
}

func (c *copyRows) bytes(b []byte) {
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(b)))
	c.buf = append(c.buf, b...)
}

// add appends one row: r and the tree hashes its append stored.
func (c *copyRows) add(r *eventstore.Record, tree []eventstore.Hash) {
	if len(c.buf) == 0 {
		c.reset()
	}
	m := &r.Metadata
	c.buf = binary.BigEndian.AppendUint16(c.buf, 16)
	c.int8(int64(r.Position))
	c.text(r.StreamID)
	c.int8(int64(r.StreamVersion))
	c.bytes(r.ID[:])
	c.text(r.Type)
	c.bytes(r.Data)
	c.text(m.Actor)
	c.text(m.Tenant)
	c.text(m.RequestID)
	c.text(m.ClientAddr)
	c.text(m.CausationID)
	c.text(m.CorrelationID)
	c.int8(r.RecordedAt.UnixMicro() - pgEpochMicros)
	c.bytes(r.PrevHash[:])
	c.bytes(r.Hash[:])
	c.buf = binary.BigEndian.AppendUint32(c.buf, uint32(len(tree)*eventstore.HashSize))
	for i := range tree {
		c.buf = append(c.buf, tree[i][:]...)
	}
	c.rows++
}

// finish ends the stream and returns it.
func (c *copyRows) finish() []byte {
	if len(c.buf) == 0 {
		c.reset()
	}
	return binary.BigEndian.AppendUint16(c.buf, 0xffff)
}

// The statements of an append, prepared once per connection.
const (
	advanceStatement = "stele_ledger_advance"
	advanceSQL       = `SELECT ledger_advance($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	copyStatement    = "stele_ledger_copy"
	copySQL          = `COPY ledger_events (` + copyColumns + `) FROM STDIN (FORMAT binary)`
)

// execAppend writes p on top of base in one round trip: the extended
// query protocol's messages are sent at once, and the database runs them
// in order (skipping the rest after an error):
//
//	SELECT ledger_advance(…)  lock the head, check it is at base and the
//	                          streams the writer has not seen are at the
//	                          versions expected, move it, notify
//	COPY ledger_events FROM STDIN (FORMAT binary), then the rows
//	COMMIT                    only with inTx (the slow path's transaction)
//	Sync                      ends the implicit transaction
//
// Outside a transaction block (inTx false) the statements form one
// implicit transaction, committed at the Sync. The head lock taken first
// orders the commits of every writer of every process. A
// *pgconn.PgError means that the database refused the write and nothing
// was written; any other error leaves the connection closed and the
// outcome unknown.
func (s *Store) execAppend(ctx context.Context, conn *pgxpool.Conn, base eventstore.Head, checkStreams []string, checkVersions []int64, p *plan, inTx bool) error {
	c := conn.Conn()
	pc := c.PgConn()
	advance, err := c.Prepare(ctx, advanceStatement, advanceSQL)
	if err != nil {
		return err
	}
	if _, err := c.Prepare(ctx, copyStatement, copySQL); err != nil {
		return err
	}
	if checkStreams == nil {
		checkStreams, checkVersions = []string{}, []int64{}
	}
	next := p.next
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(c.TypeMap(), advance, []any{int64(base.Position), base.Hash[:], checkStreams, checkVersions,
		int64(next.Position), next.Hash[:], next.RecordedAt, s.channel, notifyPayload(next)}); err != nil {
		return err
	}
	fe := pc.Frontend()
	fe.SendBind(&pgproto3.Bind{PreparedStatement: advanceStatement, ParameterFormatCodes: eqb.ParamFormats, Parameters: eqb.ParamValues})
	fe.SendExecute(&pgproto3.Execute{})
	fe.SendBind(&pgproto3.Bind{PreparedStatement: copyStatement})
	fe.SendExecute(&pgproto3.Execute{})
	fe.Send(&pgproto3.CopyData{Data: p.rows.finish()})
	fe.Send(&pgproto3.CopyDone{})
	if inTx {
		fe.SendParse(&pgproto3.Parse{Query: "COMMIT"})
		fe.SendBind(&pgproto3.Bind{})
		fe.SendExecute(&pgproto3.Execute{})
	}
	fe.SendSync(&pgproto3.Sync{})

	fail := func(err error) error {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		pc.Close(closeCtx)
		return err
	}
	if deadline, ok := ctx.Deadline(); ok {
		pc.Conn().SetWriteDeadline(deadline)
		defer pc.Conn().SetWriteDeadline(time.Time{})
	}
	if err := fe.Flush(); err != nil {
		return fail(err)
	}
	var pgErr error
	copied := int64(-1)
	for {
		msg, err := pc.ReceiveMessage(ctx)
		if err != nil {
			return fail(err)
		}
		switch msg := msg.(type) {
		case *pgproto3.ErrorResponse:
			if pgErr == nil {
				pgErr = pgconn.ErrorResponseToPgError(msg)
			}
		case *pgproto3.CommandComplete:
			if bytes.HasPrefix(msg.CommandTag, []byte("COPY ")) {
				copied = pgconn.NewCommandTag(string(msg.CommandTag)).RowsAffected()
			}
		case *pgproto3.ReadyForQuery:
			if pgErr != nil {
				return pgErr
			}
			if copied != int64(p.rows.rows) {
				return fail(fmt.Errorf("postgres: append: COPY wrote %d rows, want %d", copied, p.rows.rows))
			}
			if msg.TxStatus != 'I' {
				return fail(errors.New("postgres: append: transaction still open after the append"))
			}
			return nil
		}
	}
}
