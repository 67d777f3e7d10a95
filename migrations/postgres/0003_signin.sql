-- Signing in: web sessions, OpenID Connect sign-ins in flight, users' refresh tokens, and
-- the secrets users log in with from the command line (the CLI secret and personal access
-- tokens). (postgres dialect; keep in step with ../sqlite/0003_signin.sql.) Every replica
-- reads them, so a sign-in may start on one replica and finish on another.

-- A web session: the cookie's value is only known to the browser; the row holds its
-- SHA-256 digest. csrf is the token every form of the session must send back.
CREATE TABLE web_sessions (
    id          TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions(user_id);
CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);

-- An OpenID Connect sign-in between the redirect to the provider and its callback: taken
-- (deleted) by the callback, so a state is good for one callback only.
CREATE TABLE pending_logins (
    state         TEXT PRIMARY KEY,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Secrets a user logs in with besides a password: kind 'cli' (the CLI secret, at most one
-- per user) or 'personal' (named personal access tokens). Only a digest is kept.
-- projects: a JSON array of project names the secret is narrowed to, or NULL for all the
-- user's projects. expires_at is -1 for never.
CREATE TABLE user_secrets (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id),
    kind         TEXT NOT NULL CHECK (kind IN ('cli', 'personal')),
    name         TEXT COLLATE "C" NOT NULL,
    digest       TEXT NOT NULL UNIQUE,
    projects     TEXT,
    pull_only    BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT NOT NULL,
    UNIQUE (user_id, kind, name)
);

-- The provider's tokens for a user who signed in with OpenID Connect, kept to refresh the
-- sign-in in the background (when the CLI secret is tied to it). failure: why the last
-- refresh failed (NULL: it did not).
CREATE TABLE oidc_sessions (
    user_id        BIGINT PRIMARY KEY REFERENCES users(id),
    refresh_token  TEXT,
    expires_at     BIGINT NOT NULL,
    refreshed_at   BIGINT NOT NULL,
    failure        TEXT
);
CREATE INDEX oidc_sessions_expiry ON oidc_sessions(expires_at);
