-- Core registry metadata (PostgreSQL dialect; keep in step with ../sqlite/0001_registry.sql).
-- Timestamps are Unix milliseconds. Digests are stored as "algorithm:hex" text.

CREATE TABLE repositories (
    name        TEXT COLLATE "C" PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

-- Blobs known to be committed in the blob store, shared by every repository.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Which repositories may serve which blobs (pushed there or mounted into them).
CREATE TABLE repository_blobs (
    repository  TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);

CREATE TABLE manifests (
    repository    TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          BIGINT NOT NULL,
    content       BYTEA NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX manifests_subject ON manifests(repository, subject);

-- What each manifest references: blobs (config, layers) and child manifests (of an index).
CREATE TABLE manifest_references (
    repository   TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    child        TEXT NOT NULL,
    is_manifest  BIGINT NOT NULL,
    PRIMARY KEY (repository, manifest, child),
    FOREIGN KEY (repository, manifest) REFERENCES manifests(repository, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_child ON manifest_references(repository, child);

CREATE TABLE tags (
    repository  TEXT NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (repository, name),
    FOREIGN KEY (repository, digest) REFERENCES manifests(repository, digest) ON DELETE CASCADE
);
CREATE INDEX tags_digest ON tags(repository, digest);

-- Upload sessions: how many bytes are durable and the hasher state after them, so any
-- process can continue the upload. `writer` is the request that holds the session while it
-- writes (until `lease_until`, renewed while it writes): one writer at a time, in any process.
CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repository  TEXT NOT NULL,
    committed   BIGINT NOT NULL,
    writer      TEXT,
    lease_until BIGINT,
    hash_state  BYTEA NOT NULL,
    -- The blob store's own state for the session (an S3 multipart upload's id and parts).
    store_state BYTEA NOT NULL,
    started_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX uploads_updated ON uploads(updated_at);
