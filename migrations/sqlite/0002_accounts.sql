-- Accounts that sign in with email and password. Passwords only as argon2id PHC strings.
CREATE TABLE accounts (
    email         TEXT    NOT NULL PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    -- JSON array of permission strings.
    permissions   TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, UTC.
    created_at    INTEGER NOT NULL
) STRICT;
