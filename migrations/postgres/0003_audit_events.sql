-- Audit events (one per authentication decision and management action), with Rack
-- Gateway's field names. Never a token, its hash or a password.
CREATE TABLE keygate_audit_events (
    seq            BIGSERIAL   PRIMARY KEY,
    timestamp      TIMESTAMPTZ NOT NULL,
    event          TEXT        NOT NULL,
    api_token_id   UUID,
    api_token_name TEXT,
    owner          TEXT,
    method         TEXT        NOT NULL,
    path           TEXT        NOT NULL,
    status_code    INTEGER     NOT NULL,
    rbac_decision  TEXT        NOT NULL CHECK (rbac_decision IN ('allow', 'deny')),
    reason         TEXT,
    client_ip      TEXT,
    request_id     TEXT
);

CREATE INDEX keygate_audit_events_time ON keygate_audit_events (timestamp, seq);
CREATE INDEX keygate_audit_events_token ON keygate_audit_events (api_token_id, timestamp, seq);
