-- The egress proxy's decisions, per attempt (values redacted before they are stored).
CREATE TABLE network_log (
    task_id    TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    ts_ms      INTEGER NOT NULL,
    phase      TEXT    NOT NULL,
    method     TEXT,
    host       TEXT    NOT NULL,
    port       INTEGER NOT NULL,
    decision   TEXT    NOT NULL,
    rule       TEXT,
    bytes_up   INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    note       TEXT,
    PRIMARY KEY (task_id, attempt, seq)
);
