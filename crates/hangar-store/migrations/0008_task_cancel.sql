-- A request to cancel a task, seen by whichever process runs it.
ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
