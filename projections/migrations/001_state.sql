-- Where each projection stands: the last log position it applied (and that
-- event's hash, to check the chain of the next batch), its code version and
-- whether it runs or was halted by an integrity failure. Read models
-- themselves are created by their projections (under shadow names while
-- rebuilding), not by migrations.
CREATE TABLE projection_state (
    name        text        PRIMARY KEY,
    version     integer     NOT NULL,
    position    bigint      NOT NULL DEFAULT 0,
    hash        bytea       NOT NULL DEFAULT decode(repeat('00', 32), 'hex'),
    event_time  timestamptz,
    status      text        NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'halted', 'building')),
    error       text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
