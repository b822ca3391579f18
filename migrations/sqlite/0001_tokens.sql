-- Token records. Never the token itself: only its SHA-256 digest.
-- Times are microseconds since the Unix epoch, UTC.
CREATE TABLE tokens (
    id           TEXT    NOT NULL PRIMARY KEY,
    hash         BLOB    NOT NULL CHECK (length(hash) = 32),
    kind         TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    description  TEXT,
    role         TEXT,
    -- JSON array of permission strings.
    permissions  TEXT    NOT NULL,
    hint         TEXT    NOT NULL,
    created_by   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    -- No foreign key: purging a successor must never make its predecessor live again.
    replaced_by  TEXT
) STRICT;

CREATE UNIQUE INDEX tokens_hash ON tokens (hash);
CREATE INDEX tokens_owner ON tokens (owner, created_at);
