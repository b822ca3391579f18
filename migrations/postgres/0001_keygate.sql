-- keygate: token records, per-owner lock rows and accounts (PostgreSQL).
-- Only the SHA-256 of a token is kept, never the token.

-- One row per owner that ever had a token. Inserts lock it (`SELECT ... FOR UPDATE`) so the
-- name and limit checks and the insert that follows them are serialised per owner.
CREATE TABLE keygate_owners (
    owner TEXT PRIMARY KEY
);

CREATE TABLE keygate_tokens (
    -- Insertion order, to list records created in the same microsecond stably.
    seq          BIGSERIAL   NOT NULL,
    id           UUID        PRIMARY KEY,
    hash         BYTEA       NOT NULL CHECK (octet_length(hash) = 32),
    kind         TEXT        NOT NULL,
    owner        TEXT        NOT NULL,
    name         TEXT        NOT NULL,
    description  TEXT,
    role         TEXT,
    permissions  TEXT[]      NOT NULL,
    hint         TEXT        NOT NULL,
    created_by   TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    replaced_by  UUID
);

CREATE UNIQUE INDEX keygate_tokens_hash ON keygate_tokens (hash);
CREATE INDEX keygate_tokens_owner ON keygate_tokens (owner, created_at, seq);
CREATE INDEX keygate_tokens_expires_at ON keygate_tokens (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX keygate_tokens_revoked_at ON keygate_tokens (revoked_at) WHERE revoked_at IS NOT NULL;

-- Accounts that manage their tokens with email + password (argon2id PHC strings only).
CREATE TABLE keygate_accounts (
    email         TEXT        PRIMARY KEY,
    password_hash TEXT        NOT NULL,
    permissions   TEXT[]      NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
