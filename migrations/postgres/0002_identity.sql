-- Identity: projects, users, groups, project members, robot accounts and the token
-- service's signing keys (PostgreSQL dialect; keep in step with ../sqlite/0002_identity.sql).
-- Timestamps are Unix milliseconds; flags are integers 0/1. Dependent rows are deleted
-- explicitly by the store, in the transaction that deletes what they depend on.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT COLLATE "C" NOT NULL UNIQUE,
    email         TEXT UNIQUE,
    realname      TEXT NOT NULL DEFAULT '',
    comment       TEXT NOT NULL DEFAULT '',
    -- An argon2id PHC string; NULL: no password login (OIDC users, disabled accounts).
    password_hash TEXT,
    sysadmin      BIGINT NOT NULL DEFAULT 0,
    oidc_issuer   TEXT,
    oidc_subject  TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (oidc_issuer, oidc_subject)
);

-- A project is a repository name's first path segment.
CREATE TABLE projects (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    public      BIGINT NOT NULL DEFAULT 0,
    owner_id    BIGINT REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- group_type as Harbor numbers them: 1 LDAP, 2 HTTP, 3 OIDC.
CREATE TABLE user_groups (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    group_type  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (name, group_type)
);

CREATE TABLE user_group_members (
    user_id     BIGINT NOT NULL REFERENCES users(id),
    group_id    BIGINT NOT NULL REFERENCES user_groups(id),
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_group_members_group ON user_group_members(group_id);

-- A user ('u') or a group ('g') in a project, with Harbor's role id (1 project admin,
-- 2 developer, 3 guest, 4 maintainer, 5 limited guest).
CREATE TABLE project_members (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL REFERENCES projects(id),
    entity_type TEXT NOT NULL CHECK (entity_type IN ('u', 'g')),
    entity_id   BIGINT NOT NULL,
    role        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (project_id, entity_type, entity_id)
);
CREATE INDEX project_members_entity ON project_members(entity_type, entity_id);

-- Robot accounts. `name` is the robot's own name without the configurable prefix:
-- `<project>+<name>` for a project robot, `<name>` for a system robot. `secret_hash` is a
-- digest computed by the caller. duration_days and expires_at are -1 for never.
CREATE TABLE robots (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL UNIQUE,
    description   TEXT NOT NULL DEFAULT '',
    level         TEXT NOT NULL CHECK (level IN ('system', 'project')),
    project_id    BIGINT REFERENCES projects(id),
    secret_hash   TEXT NOT NULL,
    duration_days BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    disabled      BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    CHECK ((level = 'project') = (project_id IS NOT NULL))
);
CREATE INDEX robots_project ON robots(project_id);

-- A robot's permissions in Harbor's shape: per namespace (a project name, or '*' for
-- every project), resource + action.
CREATE TABLE robot_permissions (
    robot_id    BIGINT NOT NULL REFERENCES robots(id),
    kind        TEXT NOT NULL,
    namespace   TEXT COLLATE "C" NOT NULL,
    resource    TEXT NOT NULL,
    action      TEXT NOT NULL,
    PRIMARY KEY (robot_id, kind, namespace, resource, action)
);
CREATE INDEX robot_permissions_namespace ON robot_permissions(namespace);

-- The token service's signing keys, shared by every replica. At most one key is in force
-- (not retired): the unique index makes two replicas starting at once end with one key.
-- Retired keys stay to verify the tokens they signed until they are dropped.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_key TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);
CREATE UNIQUE INDEX signing_keys_one_in_force ON signing_keys((retired_at IS NULL)) WHERE retired_at IS NULL;
