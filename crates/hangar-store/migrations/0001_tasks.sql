-- Environments, tasks, attempts and their logs. Times are epoch milliseconds (UTC).
CREATE TABLE environments (
    workspace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    source      TEXT    NOT NULL,   -- the environment file (TOML), validated on write
    repo        TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (workspace, name)
);

CREATE TABLE tasks (
    id                  TEXT    NOT NULL PRIMARY KEY,
    workspace           TEXT    NOT NULL,
    environment         TEXT    NOT NULL,
    environment_version INTEGER NOT NULL,
    spec                TEXT    NOT NULL,   -- the environment file as it was when the task began
    title               TEXT    NOT NULL,
    prompt              TEXT    NOT NULL,
    branch              TEXT,
    git_commit          TEXT,
    agent_script        TEXT,
    status              TEXT    NOT NULL,
    created_ms          INTEGER NOT NULL,
    updated_ms          INTEGER NOT NULL
);
CREATE INDEX tasks_newest ON tasks (workspace, created_ms DESC, id DESC);

CREATE TABLE attempts (
    task_id        TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    idx            INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    sandbox        TEXT,               -- the sandbox's id while it may exist (for recovery)
    base_commit    TEXT,
    result_tree    TEXT,
    final_message  TEXT,
    exit_code      INTEGER,
    error          TEXT,
    phases         TEXT    NOT NULL DEFAULT '[]',   -- JSON list of {phase, started_ms, ended_ms}
    files_changed  INTEGER,
    lines_added    INTEGER,
    lines_removed  INTEGER,
    diff           BLOB,
    created_ms     INTEGER NOT NULL,
    started_ms     INTEGER,
    finished_ms    INTEGER,
    PRIMARY KEY (task_id, idx)
);

CREATE TABLE logs (
    task_id  TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    ts_ms    INTEGER NOT NULL,
    phase    TEXT    NOT NULL,
    stream   TEXT    NOT NULL,
    line     TEXT    NOT NULL,
    PRIMARY KEY (task_id, attempt, seq)
);
