//! The sign-in domain: web sessions, OpenID Connect sign-ins in flight and users' provider
//! tokens, and the secrets users log in with from the command line (the CLI secret and
//! personal access tokens). Everything here is shared by every replica through the
//! database. Secrets and session ids are kept as digests only: a caller passes the digest.

use async_trait::async_trait;

use super::MetaError;

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    pub user_id: i64,
    /// The token every form posted in this session must carry.
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An OpenID Connect sign-in between the redirect to the provider and its callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where the browser goes once signed in (a path of this site).
    pub return_to: String,
    pub created_at: i64,
}

/// What a user's secret is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// The CLI secret: at most one per user.
    Cli,
    /// A named personal access token.
    Personal,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Cli => "cli",
            SecretKind::Personal => "personal",
        }
    }

    pub fn parse(s: &str) -> Option<SecretKind> {
        match s {
            "cli" => Some(SecretKind::Cli),
            "personal" => Some(SecretKind::Personal),
            _ => None,
        }
    }
}

/// A user's secret, as listed (never the secret itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSecret {
    pub id: i64,
    pub user_id: i64,
    pub kind: SecretKind,
    pub name: String,
    /// Projects the secret is narrowed to; `None`: every project the user may use.
    pub projects: Option<Vec<String>>,
    /// Whether the secret only pulls.
    pub pull_only: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// `None`: never expires.
    pub expires_at: Option<i64>,
}

/// A secret to store: its digest and what it may do.
#[derive(Clone, Debug, Default)]
pub struct NewUserSecret {
    pub user_id: i64,
    pub name: String,
    pub digest: String,
    pub projects: Option<Vec<String>>,
    pub pull_only: bool,
    pub expires_at: Option<i64>,
}

/// A user's provider tokens, kept to refresh an OpenID Connect sign-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcSession {
    pub user_id: i64,
    pub refresh_token: Option<String>,
    /// When the provider's access token (and so the sign-in) lapses unless refreshed.
    pub expires_at: i64,
    pub refreshed_at: i64,
    /// Why the last refresh failed; `None`: it did not.
    pub failure: Option<String>,
}

#[async_trait]
pub trait SignInStore: Send + Sync {
    // --- Web sessions -------------------------------------------------------------------

    /// Stores a session under the digest of its cookie value.
    async fn create_session(&self, id_digest: &str, s: &WebSession) -> Result<(), MetaError>;

    /// The session with this digest, if it exists and has not expired at `now`.
    async fn get_session(&self, id_digest: &str, now: i64)
    -> Result<Option<WebSession>, MetaError>;

    /// Ends a session (logout). Whether it existed.
    async fn delete_session(&self, id_digest: &str) -> Result<bool, MetaError>;

    /// Removes sessions and pending sign-ins that lapsed before `now` (pending sign-ins
    /// lapse `pending_ttl_ms` after they began). How many rows went.
    async fn purge_sign_ins(&self, now: i64, pending_ttl_ms: i64) -> Result<u64, MetaError>;

    // --- OpenID Connect ------------------------------------------------------------------

    async fn put_pending_login(&self, p: &PendingLogin) -> Result<(), MetaError>;

    /// Takes (removes and returns) the pending sign-in with this state: a state is good for
    /// one callback only.
    async fn take_pending_login(&self, state: &str) -> Result<Option<PendingLogin>, MetaError>;

    /// Stores (replaces) a user's provider tokens.
    async fn put_oidc_session(&self, s: &OidcSession) -> Result<(), MetaError>;

    async fn get_oidc_session(&self, user_id: i64) -> Result<Option<OidcSession>, MetaError>;

    /// Sign-ins with a refresh token that have not failed and either lapse before `before`
    /// or were last refreshed before `refreshed_before`: the ones to refresh now.
    async fn oidc_sessions_due(
        &self,
        before: i64,
        refreshed_before: i64,
    ) -> Result<Vec<OidcSession>, MetaError>;

    // --- Secrets --------------------------------------------------------------------------

    /// Gives the user a new CLI secret, replacing the old one in the same transaction (the
    /// old one stops working at once).
    async fn replace_cli_secret(&self, user_id: i64, digest: &str)
    -> Result<UserSecret, MetaError>;

    /// Adds a personal access token; `Conflict` when the user has one with that name.
    async fn create_personal_token(&self, s: &NewUserSecret) -> Result<UserSecret, MetaError>;

    /// The user's secrets (CLI secret first, then tokens by name).
    async fn list_user_secrets(&self, user_id: i64) -> Result<Vec<UserSecret>, MetaError>;

    /// The user's secret with this digest, if any (expired ones too: the caller decides).
    async fn find_user_secret(
        &self,
        user_id: i64,
        digest: &str,
    ) -> Result<Option<UserSecret>, MetaError>;

    /// Revokes one of the user's secrets. Whether it existed.
    async fn delete_user_secret(&self, user_id: i64, id: i64) -> Result<bool, MetaError>;

    /// Records that a secret was used at `at`.
    async fn touch_user_secret(&self, id: i64, at: i64) -> Result<(), MetaError>;
}
