-- The result of `[agent] check` in an attempt (JSON {passed, exit_code}), which ranks
-- the attempts of a best-of-N task.
ALTER TABLE attempts ADD COLUMN check_result TEXT;
