-- Policies kept on each token: client allow-list, own rate, machine binding.
-- JSON array of CIDR strings; empty: any address.
ALTER TABLE tokens ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]';
-- Requests per minute for this token; NULL: the kind's or the default rate.
ALTER TABLE tokens ADD COLUMN rate_limit INTEGER;
-- The client fingerprint the token is bound to, and when (microseconds, UTC).
ALTER TABLE tokens ADD COLUMN bound_to TEXT;
ALTER TABLE tokens ADD COLUMN bound_at INTEGER;
-- The last release of a binding by hand (microseconds, UTC).
ALTER TABLE tokens ADD COLUMN released_at INTEGER;
