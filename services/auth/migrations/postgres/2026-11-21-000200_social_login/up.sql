-- Identities at external OpenID Connect providers linked to accounts: one account per identity.
CREATE TABLE social_identities (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    linked_at TIMESTAMP NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX social_identities_by_user ON social_identities (user_id);

-- Social-login flows in progress, by SHA-256 of their `state`. The nonce and PKCE verifier are
-- sealed with a key derived from the state, so the database alone cannot finish a flow. Single
-- use: finishing sets used_at with a conditional update.
CREATE TABLE social_login_states (
    state_hash TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    intent TEXT NOT NULL CHECK (intent IN ('sign_in', 'link')),
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    secrets_sealed TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    CHECK ((intent = 'link') = (user_id IS NOT NULL))
);
CREATE INDEX social_login_states_by_expiry ON social_login_states (expires_at);
