-- Audit events (one per authentication decision and management action), with Rack
-- Gateway's field names. Never a token, its hash or a password.
-- Times are microseconds since the Unix epoch, UTC.
CREATE TABLE audit_events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp      INTEGER NOT NULL,
    event          TEXT    NOT NULL,
    api_token_id   TEXT,
    api_token_name TEXT,
    owner          TEXT,
    method         TEXT    NOT NULL,
    path           TEXT    NOT NULL,
    status_code    INTEGER NOT NULL,
    rbac_decision  TEXT    NOT NULL CHECK (rbac_decision IN ('allow', 'deny')),
    reason         TEXT,
    client_ip      TEXT,
    request_id     TEXT
) STRICT;

CREATE INDEX audit_events_time ON audit_events (timestamp, seq);
CREATE INDEX audit_events_token ON audit_events (api_token_id, timestamp, seq);
