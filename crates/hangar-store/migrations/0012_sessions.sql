-- Web UI sessions: a signed-in browser each. Only the SHA-256 of the cookie's secret is
-- kept. A session made from a token goes with it (ON DELETE CASCADE); one made from a
-- one-time link (`token_id` NULL) is the local admin's and ends with its expiry.
CREATE TABLE sessions (
    hash       TEXT    PRIMARY KEY,
    workspace  TEXT    NOT NULL,
    admin      INTEGER NOT NULL,
    token_id   TEXT    REFERENCES tokens (id) ON DELETE CASCADE,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX sessions_token ON sessions (token_id);
CREATE INDEX sessions_expiry ON sessions (expires_ms);

-- One-time sign-in codes (`hangar ui`'s links), by the SHA-256 of the code; each is
-- deleted as it is redeemed.
CREATE TABLE sign_in_codes (
    hash       TEXT    PRIMARY KEY,
    workspace  TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX sign_in_codes_expiry ON sign_in_codes (expires_ms);
