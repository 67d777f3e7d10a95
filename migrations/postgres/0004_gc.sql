-- Garbage collection (postgres dialect; keep in step with ../sqlite/0004_gc.sql). The protocol
-- that keeps a collection safe while pushes and mounts go on is in docs/architecture.md,
-- "Garbage collection".

-- When a push or mount last said it is about to use the blob (a collection spares blobs
-- touched within its grace period), and the run that is deleting it (set between deciding
-- and removing the row: a push that meets a mark waits for that run, or clears the mark of
-- a run whose lease has lapsed).
ALTER TABLE blobs ADD COLUMN touched_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN gc_mark TEXT;

-- "Does any manifest, in any repository, reference this blob?"
CREATE INDEX manifest_references_by_child ON manifest_references(child);

-- Leases: at most one holder at a time (one collection across every replica).
CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Collections, for the API and the UI to show the last runs.
CREATE TABLE gc_runs (
    id                 TEXT PRIMARY KEY,
    started_at         BIGINT NOT NULL,
    finished_at        BIGINT,
    started_by         TEXT NOT NULL,
    dry_run            BIGINT NOT NULL,
    untagged           BIGINT NOT NULL,
    status             TEXT NOT NULL,
    blobs_deleted      BIGINT NOT NULL DEFAULT 0,
    bytes_freed        BIGINT NOT NULL DEFAULT 0,
    manifests_deleted  BIGINT NOT NULL DEFAULT 0,
    failed             BIGINT NOT NULL DEFAULT 0,
    error              TEXT
);
CREATE INDEX gc_runs_started ON gc_runs(started_at);
