-- A task's harness and approval mode, when given on the command line over the
-- environment's; and the agent's events (values redacted before they are stored).
ALTER TABLE tasks ADD COLUMN harness TEXT;
ALTER TABLE tasks ADD COLUMN approval TEXT;

CREATE TABLE agent_events (
    task_id   TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt   INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    ts_ms     INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    exit_code INTEGER,
    detail    TEXT,
    PRIMARY KEY (task_id, attempt, seq)
);
