-- ledger_advance is the first statement of every batch the writer
-- appends (see eventstore/postgres/copy.go): it locks the chain head
-- (waiting for any writer holding it), fails (SQLSTATE SL412) unless the
-- head is at (p_position, p_hash), fails (SQLSTATE SL409) unless each
-- listed stream is at the given version (0: the stream has no events),
-- moves the head to the batch's last event and notifies listeners on
-- p_channel. The batch's rows follow in the same transaction, by COPY;
-- if anything fails, the transaction writes nothing.
--
-- ledger_append (001) is no longer called by this version, and is kept
-- for binaries that still call it.
CREATE FUNCTION ledger_advance(
    p_position bigint, p_hash bytea,
    p_check_streams text[], p_check_versions bigint[],
    p_next_position bigint, p_next_hash bytea, p_next_at timestamptz,
    p_channel text, p_payload text
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_lock_head(p_position, p_hash);
    IF cardinality(p_check_streams) > 0 THEN
        PERFORM ledger_check_versions(p_check_streams, p_check_versions);
    END IF;
    UPDATE ledger_head SET position = p_next_position, hash = p_next_hash, recorded_at = p_next_at;
    PERFORM pg_notify(p_channel, p_payload);
END
$$;
