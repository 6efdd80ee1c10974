-- Branches hangar pushed for an attempt and the pull request opened from each: one per
-- attempt, so a second `hangar pr` finds the first.
CREATE TABLE pull_requests (
    task_id    TEXT    NOT NULL REFERENCES tasks(id),
    attempt    INTEGER NOT NULL,
    branch     TEXT    NOT NULL,
    base       TEXT    NOT NULL,
    commit_id  TEXT    NOT NULL,
    number     INTEGER,            -- NULL: pushed, no pull request (yet, or no forge)
    url        TEXT,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (task_id, attempt)
);

-- Webhook deliveries heard, by the forge's delivery id: a replay is acted on once.
CREATE TABLE forge_deliveries (
    id          TEXT    NOT NULL PRIMARY KEY,
    event       TEXT    NOT NULL,
    received_ms INTEGER NOT NULL
);

-- What a task started from the forge owes it when the task ends.
CREATE TABLE forge_triggers (
    task_id     TEXT    NOT NULL PRIMARY KEY REFERENCES tasks(id),
    kind        TEXT    NOT NULL,   -- mention | review | autofix
    repository  TEXT    NOT NULL,   -- owner/name
    number      INTEGER,            -- the issue or pull request answered; NULL for autofix
    base        TEXT    NOT NULL,   -- the branch a pull request of the change goes into
    answered_ms INTEGER,            -- when the answer was posted
    error       TEXT                -- why answering failed, if it did
);
