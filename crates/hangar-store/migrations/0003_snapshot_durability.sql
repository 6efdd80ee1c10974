-- A snapshot is committed by a rename before its data reaches the disk; until a
-- background syncfs marks it durable, it is only trusted within the boot that built it.
ALTER TABLE snapshots ADD COLUMN boot_id TEXT NOT NULL DEFAULT '';
ALTER TABLE snapshots ADD COLUMN durable INTEGER NOT NULL DEFAULT 1;
-- Where the snapshot came from when it was not built here (`hangar cache import REF`).
ALTER TABLE snapshots ADD COLUMN source TEXT;
