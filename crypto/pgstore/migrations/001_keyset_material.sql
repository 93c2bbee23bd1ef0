-- Wrapped environment keysets, one row per (environment, keyset version).
-- Unlike the ledger tables this table is mutable: rows are deleted when a
-- key is destroyed (crypto-shredding). The ledger records the SHA-256 of
-- each row's wrapped bytes.
CREATE TABLE keyset_material (
    env_id     text        NOT NULL CHECK (env_id <> ''),
    version    bigint      NOT NULL CHECK (version >= 0),
    kek_uri    text        NOT NULL CHECK (kek_uri <> ''),
    wrapped    bytea       NOT NULL CHECK (length(wrapped) > 0),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (env_id, version)
);

-- The wrapped bytes are small (a few hundred bytes per key) and kept inline:
-- no TOAST copy lingers elsewhere after a DELETE.
ALTER TABLE keyset_material ALTER COLUMN wrapped SET STORAGE MAIN;

