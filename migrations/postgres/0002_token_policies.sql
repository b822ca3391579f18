-- Policies kept on each token: client allow-list, own rate, machine binding.
-- CIDR strings; empty: any address.
ALTER TABLE keygate_tokens ADD COLUMN allowed_ips TEXT[] NOT NULL DEFAULT '{}';
-- Requests per minute for this token; NULL: the kind's or the default rate.
ALTER TABLE keygate_tokens ADD COLUMN rate_limit BIGINT CHECK (rate_limit > 0);
-- The client fingerprint the token is bound to, and when.
ALTER TABLE keygate_tokens ADD COLUMN bound_to TEXT;
ALTER TABLE keygate_tokens ADD COLUMN bound_at TIMESTAMPTZ;
-- The last release of a binding by hand.
ALTER TABLE keygate_tokens ADD COLUMN released_at TIMESTAMPTZ;
