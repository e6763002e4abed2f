-- Accounts. Emails are unique case-insensitively through their normalised form.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    -- PHC string (argon2id); NULL for accounts that only sign in through a social provider.
    password_hash TEXT,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CHECK (email_normalized = lower(email_normalized)),
    CHECK (length(display_name) <= 200)
);
