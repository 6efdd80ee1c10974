-- API tokens: each grants one workspace. Only a hash of the token is kept.
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
