-- Extra fields of an audit event (a leak report's url and source, an expiry warning's
-- expires_at): a JSON object of strings, or NULL. Never a token, its hash or a password.
ALTER TABLE keygate_audit_events ADD COLUMN details TEXT;
