-- Roles as a sorted, comma-separated list of role names ("admin,customer"); version is the etag.
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT 'customer';
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMP;
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- One row per signed-in device. Revoking a session stops its refresh tokens at once; its access
-- tokens run out within their lifetime.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent TEXT NOT NULL,
    client_address TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    revoke_reason TEXT,
    CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL))
);
CREATE INDEX sessions_by_user ON sessions (user_id, id);

-- Refresh tokens by SHA-256 (the token itself is never stored). Rotating one records its
-- successor's hash and the successor pair sealed with a key derived from this token, so a client
-- that lost the answer gets the same pair back within the grace window.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    rotated_at TIMESTAMP,
    successor_hash TEXT,
    successor_sealed TEXT,
    CHECK ((rotated_at IS NULL) = (successor_hash IS NULL)),
    CHECK ((rotated_at IS NULL) = (successor_sealed IS NULL))
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Ed25519 signing keys; the private half is sealed with the key-encryption key. At most one
-- active key, enforced by the database.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    private_key_sealed TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    retired_at TIMESTAMP,
    CHECK (active = (retired_at IS NULL))
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;

-- OAuth client-credentials clients; the secret is stored as a SHA-256 hash (it is 256 random bits).
CREATE TABLE service_accounts (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE
);

-- Failed-login counters per account and per client address; updated with compare-and-set so
-- parallel guesses cannot slip past the limit.
CREATE TABLE login_throttles (
    throttle_key TEXT PRIMARY KEY,
    attempts BIGINT NOT NULL CHECK (attempts >= 0),
    last_attempt_at TIMESTAMP NOT NULL,
    blocked_until TIMESTAMP
);

-- Email-verification and password-reset tokens, by SHA-256; single use.
CREATE TABLE one_time_tokens (
    token_hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP
);
CREATE INDEX one_time_tokens_by_user ON one_time_tokens (user_id);

-- Messages waiting for a mail relay (no mail server is part of Backbone).
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP
);

-- Security events, newest last by id (UUIDv7).
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    actor_id TEXT,
    subject_id TEXT,
    client_address TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_events_by_subject ON audit_events (subject_id, id);
CREATE INDEX audit_events_by_actor ON audit_events (actor_id, id);
