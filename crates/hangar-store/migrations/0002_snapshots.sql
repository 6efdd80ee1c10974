-- Environment snapshots: the cached result of setup, one overlay layer each.
CREATE TABLE snapshots (
    key          TEXT    NOT NULL PRIMARY KEY,   -- hex sha256 of the key components
    workspace    TEXT    NOT NULL,
    environment  TEXT    NOT NULL,
    components   TEXT    NOT NULL,               -- JSON of what the key was made from
    size         INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL,
    hits         INTEGER NOT NULL DEFAULT 0,
    reset        INTEGER NOT NULL DEFAULT 0      -- `hangar cache reset`: never used again
);
CREATE INDEX snapshots_by_env ON snapshots (workspace, environment, created_ms DESC);

-- How an attempt's environment was found: JSON {status, reason, snapshot}.
ALTER TABLE attempts ADD COLUMN cache TEXT;
