-- The ledger: one append-only table of events, the chain head, signed
-- checkpoints and the log's identity. See docs/ledger-format.md.

CREATE TABLE ledger_events (
    position       bigint      PRIMARY KEY CHECK (position > 0),
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version > 0),
    event_id       uuid        NOT NULL,
    type           text        NOT NULL,
    data           bytea       NOT NULL,
    actor          text        NOT NULL,
    tenant         text        NOT NULL,
    request_id     text        NOT NULL,
    client_addr    text        NOT NULL,
    causation_id   text        NOT NULL,
    correlation_id text        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    prev_hash      bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash           bytea       NOT NULL CHECK (length(hash) = 32),
    -- The Merkle tree hashes this event's append stored (tlog order): the
    -- leaf, then each interior node it completed. Derived data, checked by
    -- `stele ledger verify`; not part of the event hash.
    tree           bytea       NOT NULL CHECK (length(tree) >= 32 AND length(tree) % 32 = 0),
    CONSTRAINT ledger_events_event_id_key UNIQUE (event_id),
    CONSTRAINT ledger_events_stream_key UNIQUE (stream_id, stream_version)
);

-- The chain head: one row, locked by every append so that positions are
-- assigned and committed in order across every writer and process.
CREATE TABLE ledger_head (
    id          boolean     PRIMARY KEY DEFAULT true CHECK (id),
    position    bigint      NOT NULL,
    hash        bytea       NOT NULL CHECK (length(hash) = 32),
    recorded_at timestamptz
);
INSERT INTO ledger_head (id, position, hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE ledger_checkpoints (
    size       bigint      PRIMARY KEY CHECK (size >= 0),
    root       bytea       NOT NULL CHECK (length(root) = 32),
    note       bytea       NOT NULL,
    created_at timestamptz NOT NULL
);

-- The log's identity: its origin and the public key its checkpoints are
-- signed with, set once on first start.
CREATE TABLE ledger_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stele: % on % refused: the ledger is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER ledger_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_checkpoints_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_meta_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_meta
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

REVOKE UPDATE, DELETE, TRUNCATE ON ledger_events, ledger_checkpoints, ledger_meta FROM PUBLIC;
