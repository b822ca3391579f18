-- What a token carries beyond its policies: the owner's metadata, the details of its last
-- use, and the expiry warning already sent.
-- A JSON object of at most 1 KiB; '{}' when none (TEXT: keygate validates it).
ALTER TABLE keygate_tokens ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
-- Client address and User-Agent of the last recorded use.
ALTER TABLE keygate_tokens ADD COLUMN last_used_ip TEXT;
ALTER TABLE keygate_tokens ADD COLUMN last_used_agent TEXT;
-- When the owner was warned of the coming expiry; once per token.
ALTER TABLE keygate_tokens ADD COLUMN expiry_warned_at TIMESTAMPTZ;
-- The admin view pages through every owner's tokens in (created_at, id) order.
CREATE INDEX IF NOT EXISTS keygate_tokens_created_at_id ON keygate_tokens (created_at, id);
