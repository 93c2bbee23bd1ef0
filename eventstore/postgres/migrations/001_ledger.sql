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

-- ledger_lock_head locks the chain head, failing (SQLSTATE SL412) unless it
-- is at the given position and hash: the batch writer's fast path uses it
-- to append on top of the head it committed last without reading first.
CREATE FUNCTION ledger_lock_head(p_position bigint, p_hash bytea) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    h record;
BEGIN
    -- Lock the row whatever it holds (waiting for a writer that holds it),
    -- then compare: FOR UPDATE returns the row's latest committed version.
    SELECT position, hash INTO h FROM ledger_head FOR UPDATE;
    IF h.position <> p_position OR h.hash <> p_hash THEN
        RAISE EXCEPTION 'stele: the ledger head is at position %, not %', h.position, p_position USING ERRCODE = 'SL412';
    END IF;
END
$$;

-- ledger_check_versions fails (SQLSTATE SL409) unless every stream is at
-- the given version (0: the stream has no events).
CREATE FUNCTION ledger_check_versions(p_streams text[], p_versions bigint[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM unnest(p_streams, p_versions) AS s(id, v)
        WHERE coalesce((SELECT e.stream_version FROM ledger_events e WHERE e.stream_id = s.id
                        ORDER BY e.stream_version DESC LIMIT 1), 0) <> s.v
    ) THEN
        RAISE EXCEPTION 'stele: a stream is not at its expected version' USING ERRCODE = 'SL409';
    END IF;
END
$$;

-- ledger_append appends one batch of events on top of the head at
-- (p_position, p_hash): it locks the head (waiting for any writer holding
-- it), checks it and the listed streams' versions, inserts the rows, moves
-- the head and notifies listeners on p_channel. Any failure raises, and
-- the caller's transaction writes nothing. The batch writer calls it as
-- one statement: one round trip per batch.
CREATE FUNCTION ledger_append(
    p_position bigint, p_hash bytea,
    p_check_streams text[], p_check_versions bigint[],
    p_next_position bigint, p_next_hash bytea, p_next_at timestamptz,
    p_channel text, p_payload text,
    r_position bigint[], r_stream_id text[], r_stream_version bigint[], r_event_id uuid[], r_type text[], r_data bytea[],
    r_actor text[], r_tenant text[], r_request_id text[], r_client_addr text[], r_causation_id text[], r_correlation_id text[],
    r_recorded_at timestamptz[], r_prev_hash bytea[], r_hash bytea[], r_tree bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_lock_head(p_position, p_hash);
    IF cardinality(p_check_streams) > 0 THEN
        PERFORM ledger_check_versions(p_check_streams, p_check_versions);
    END IF;
    INSERT INTO ledger_events (position, stream_id, stream_version, event_id, type, data, actor, tenant, request_id,
        client_addr, causation_id, correlation_id, recorded_at, prev_hash, hash, tree)
    SELECT * FROM unnest(r_position, r_stream_id, r_stream_version, r_event_id, r_type, r_data, r_actor, r_tenant,
        r_request_id, r_client_addr, r_causation_id, r_correlation_id, r_recorded_at, r_prev_hash, r_hash, r_tree);
    UPDATE ledger_head SET position = p_next_position, hash = p_next_hash, recorded_at = p_next_at;
    PERFORM pg_notify(p_channel, p_payload);
END
$$;
