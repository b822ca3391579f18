-- What a token carries beyond its policies: the owner's metadata, the details of its last
-- use, and the expiry warning already sent.
-- A JSON object of at most 1 KiB; '{}' when none.
ALTER TABLE tokens ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
-- Client address and User-Agent of the last recorded use.
ALTER TABLE tokens ADD COLUMN last_used_ip TEXT;
ALTER TABLE tokens ADD COLUMN last_used_agent TEXT;
-- When the owner was warned of the coming expiry (microseconds, UTC); once per token.
ALTER TABLE tokens ADD COLUMN expiry_warned_at INTEGER;
-- The admin view pages through every owner's tokens in (created_at, id) order.
CREATE INDEX IF NOT EXISTS tokens_created_at_id ON tokens (created_at, id);
