-- Secret values, encrypted to the installation's key (age); never stored in the clear.
CREATE TABLE secrets (
    workspace   TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (workspace, environment, name)
);
