-- A follow-up task starts from an earlier task's attempt (its kept layer).
ALTER TABLE tasks ADD COLUMN from_task TEXT;
ALTER TABLE tasks ADD COLUMN from_attempt INTEGER;
