-- Witnesses' cosignatures of the ledger's checkpoints (C2SP
-- tlog-cosignature), kept only once they verified under the witness's key.
-- One per witness key and checkpoint size: the first one received is kept.
-- Rows are only ever inserted; every row can be checked again by anyone
-- holding the checkpoint and the witness's public key.
CREATE TABLE witness_cosignatures (
    witness_key  text        NOT NULL CHECK (witness_key <> ''),
    witness_name text        NOT NULL CHECK (witness_name <> ''),
    size         bigint      NOT NULL CHECK (size > 0),
    root         bytea       NOT NULL CHECK (length(root) = 32),
    signature    text        NOT NULL CHECK (signature <> ''),
    cosigned_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (witness_key, size)
);

CREATE INDEX witness_cosignatures_size ON witness_cosignatures (size);
