//! The built-in access backend (`auth.mode = "builtin"`, the default): Berth's own users,
//! robot accounts, projects and roles, and the token service that docker, podman, helm and
//! containerd log in through (the Docker token authentication spec).
//!
//! - A `/v2` request with a bearer token is checked against the token service's keys alone
//!   (no database round trip); an unknown key id makes the backend re-read the keys once
//!   (another replica rotated them).
//! - Basic credentials (sent to `/v2` directly, or to the token endpoint) are a user's
//!   password or a robot's secret. A verified credential is remembered for
//!   `auth.service.credential_cache_seconds` with everything it may do, so a password is
//!   not hashed again on every request; a disabled or deleted robot, a refreshed secret, a
//!   changed password or a removed membership is therefore seen at the latest that long
//!   after the change (at once by the token endpoint when the cache holds nothing).
//! - Anonymous callers are challenged: the token endpoint gives them a token for public
//!   projects only.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;
use sha2::Digest as _;

use super::jwt::{AccessEntry, Claims, SigningKey, Verified, VerifiedCache, describe};
use super::roles::{self, ProjectRole, RegistryOp};
use super::secrets::{password_matches, secret_digest, secret_matches};
use super::{
    Access, AccessController, Action, Authority, Challenge, Credentials, Principal, Refusal,
    project_of,
};
use crate::metadata::identity::{self, ProjectQuery, RobotLevel};
use crate::metadata::signin::SecretKind;
use crate::metadata::{MetaError, MetadataStore, now_millis};

/// `[auth.service]`: the built-in token service.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The token endpoint's URL as clients reach it; empty: the registry's own
    /// `/service/token` at the host the client used (`http`, or `https` when Berth serves
    /// TLS).
    pub realm: String,
    /// This registry's name in tokens (`aud`) and challenges (`service`).
    pub service: String,
    /// The `iss` of the tokens this service signs.
    pub issuer: String,
    /// How long a token is valid, in seconds.
    pub token_seconds: u64,
    /// A PEM PKCS#8 EC P-256 private key to sign tokens with; empty: one is generated on
    /// first start and kept in the database, so that every replica signs with it.
    pub signing_key: std::path::PathBuf,
    /// How long a verified password or robot secret is remembered, in seconds.
    pub credential_cache_seconds: u64,
    /// How often a server re-reads the signing keys from the database (a rotated key signs
    /// from then on), in seconds.
    pub key_refresh_seconds: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            realm: String::new(),
            service: "berth".into(),
            issuer: "berth-token-service".into(),
            token_seconds: 900,
            signing_key: Default::default(),
            credential_cache_seconds: 30,
            key_refresh_seconds: 30,
        }
    }
}

/// Whether `password` matches an argon2 hash; argon2 takes tens of milliseconds of CPU, so
/// off the request threads.
async fn verify_password(password: &str, hash: String) -> bool {
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || password_matches(&pw, &hash))
        .await
        .unwrap_or(false)
}

/// How often a secret's "last used" time is written at most (milliseconds).
const LAST_USED_PRECISION_MS: i64 = 60_000;

/// Remembered credentials at most; the cache starts over when it is full.
const CREDENTIAL_ENTRIES: usize = 4096;
/// Locks that make concurrent checks of one credential for `/v2` wait for each other
/// (chosen by the credential's digest).
const CHECK_STRIPES: usize = 64;
/// How often an unknown key id may make the backend re-read the keys.
const KEY_RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How long the set of public projects is remembered for anonymous callers.
const PUBLIC_PROJECTS_FOR: Duration = Duration::from_secs(2);
/// Clock skew tolerated on a token's `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 5;

/// What a signed-in user or robot may do, read from the database when its credentials were
/// checked.
#[derive(Debug)]
pub struct Resolved {
    /// The name tokens carry as `sub` (a robot's with its prefix).
    pub subject: String,
    /// The user's id; `None` for a robot or an anonymous caller.
    pub user_id: Option<i64>,
    /// When a robot's account expires (Unix ms); a remembered credential is not used past it.
    expires_at: Option<i64>,
    sysadmin: bool,
    /// A user's roles per project name (directly and through groups).
    roles: HashMap<String, Vec<ProjectRole>>,
    /// A robot's permissions; `None` for a user.
    robot: Option<Vec<roles::RobotPermission>>,
    public: Arc<HashSet<String>>,
    /// A personal access token's limits; `None`: whatever the user may do.
    narrowed: Option<Narrowing>,
}

/// What a personal access token narrows its user to: some projects, pulls only. Public
/// projects stay as readable as to anyone.
#[derive(Clone, Debug, Default)]
struct Narrowing {
    /// `None`: every project.
    projects: Option<HashSet<String>>,
    pull_only: bool,
}

impl Narrowing {
    fn admits(&self, project: &str, action: roles::Action) -> bool {
        self.projects.as_ref().is_none_or(|p| p.contains(project))
            && (!self.pull_only
                || matches!(
                    action,
                    roles::Action::Pull | roles::Action::Read | roles::Action::List
                ))
    }
}

impl Resolved {
    fn anonymous(public: Arc<HashSet<String>>) -> Resolved {
        Resolved {
            subject: String::new(),
            user_id: None,
            expires_at: None,
            sysadmin: false,
            roles: HashMap::new(),
            robot: None,
            public,
            narrowed: None,
        }
    }

    /// A system administrator (not through a narrowed personal access token).
    pub fn is_sysadmin(&self) -> bool {
        self.sysadmin && self.narrowed.is_none()
    }

    /// Whether these credentials are a narrowed personal access token (which never manages
    /// its user's account).
    pub fn is_narrowed(&self) -> bool {
        self.narrowed.is_some()
    }

    /// Whether a narrowed token lets its holder do `action` in `project`.
    fn narrowing_admits(&self, project: &str, action: roles::Action) -> bool {
        self.narrowed
            .as_ref()
            .is_none_or(|n| n.admits(project, action))
    }

    /// A robot's permissions; `None` for a user.
    pub fn robot_permissions(&self) -> Option<&[roles::RobotPermission]> {
        self.robot.as_deref()
    }

    /// Whether `project` is public (as of when the credentials were checked).
    pub fn is_public(&self, project: &str) -> bool {
        self.public.contains(project)
    }

    /// May this principal do `action` on `resource` of `project` (Harbor's terms)? System
    /// admins may do everything; a user by its roles there; a robot by its permissions.
    pub fn may_in_project(
        &self,
        project: &str,
        resource: roles::Resource,
        action: roles::Action,
    ) -> bool {
        self.narrowing_admits(project, action)
            && (self.sysadmin
                || match &self.robot {
                    Some(perms) => roles::robot_allows(perms, project, resource, action),
                    None => self.roles.get(project).is_some_and(|held| {
                        held.iter()
                            .any(|&r| roles::role_allows(r, resource, action))
                    }),
                })
    }

    /// The roles a user holds in `project` (Harbor's ids), highest first.
    pub fn role_ids(&self, project: &str) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .roles
            .get(project)
            .map(|r| r.iter().map(|r| r.id()).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Whether this principal may do a registry operation in `project`.
    fn may(&self, project: &str, op: RegistryOp) -> bool {
        roles::registry_action(op)
            .iter()
            .all(|&(resource, action)| {
                (self.public.contains(project) && roles::public_allows(resource, action))
                    || self.may_in_project(project, resource, action)
            })
    }

    /// The projects whose repositories the catalog shows this principal.
    fn listed_projects(&self) -> HashSet<String> {
        let mut listed: HashSet<String> = self.public.iter().cloned().collect();
        match &self.robot {
            Some(perms) => listed.extend(
                perms
                    .iter()
                    .filter(|p| p.kind == roles::KIND_PROJECT && p.namespace != roles::ALL_PROJECTS)
                    .map(|p| p.namespace.clone())
                    .filter(|p| self.may(p, RegistryOp::ListCatalog)),
            ),
            None => {
                let within = self.narrowed.as_ref().and_then(|n| n.projects.as_ref());
                listed.extend(
                    self.roles
                        .keys()
                        .filter(|p| within.is_none_or(|w| w.contains(*p)))
                        .cloned(),
                );
                if self.sysadmin {
                    listed.extend(within.into_iter().flatten().cloned());
                }
            }
        }
        listed
    }

    /// Whether the catalog shows every repository (a system admin, or a robot that may
    /// list every project).
    fn lists_everything(&self) -> bool {
        (self.sysadmin && self.narrowed.as_ref().is_none_or(|n| n.projects.is_none()))
            || self.robot.as_ref().is_some_and(|perms| {
                perms
                    .iter()
                    .any(|p| p.kind == roles::KIND_PROJECT && p.namespace == roles::ALL_PROJECTS)
                    && self.may("", RegistryOp::ListCatalog)
            })
    }
}

impl Authority for Resolved {
    fn allows(&self, repository: &str, action: Action) -> bool {
        self.may(project_of(repository), action.into())
    }

    fn lists(&self, repository: &str) -> bool {
        self.lists_everything() || self.may(project_of(repository), RegistryOp::ListCatalog)
    }
}

/// Failed logins an account may have within [`FAILURE_WINDOW`] before its credentials are
/// no longer checked until the window is over (guessing passwords gets slow).
const ACCOUNT_FAILURE_LIMIT: u32 = 10;
/// Failed logins one client address may have within [`FAILURE_WINDOW`], over every
/// account it tries (guessing many accounts' passwords gets slow too). Higher than the
/// per-account limit: many people may share an address behind NAT.
const SOURCE_FAILURE_LIMIT: u32 = 50;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Keys whose failures are tracked at most; the oldest windows are dropped first.
const FAILURE_ENTRIES: usize = 10_000;

/// Recent failed logins per key: an account name (known or not: an unknown name is
/// throttled the same, so the answer says nothing about which names exist) or a client
/// address.
struct Failures<K> {
    limit: u32,
    recent: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: std::hash::Hash + Eq> Failures<K> {
    fn new(limit: u32) -> Self {
        Failures {
            limit,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds to wait when `key` may not try now.
    fn throttled(&self, key: &K) -> Option<u64> {
        let map = self.recent.lock().ok()?;
        let &(count, since) = map.get(key)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (count >= self.limit).then(|| left.as_secs().max(1))
    }

    fn failed(&self, key: K) {
        let Ok(mut map) = self.recent.lock() else {
            return;
        };
        if map.len() >= FAILURE_ENTRIES {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = map.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    fn forget(&self, key: &K) {
        if let Ok(mut map) = self.recent.lock() {
            map.remove(key);
        }
    }
}

/// A verified credential: what it may do, and when it was checked.
type Remembered = (Arc<Resolved>, Instant);

/// The keys tokens are signed and checked with.
struct Keys {
    signing: SigningKey,
    /// Every key a valid token may be signed with, by key id.
    verifying: HashMap<String, DecodingKey>,
}

/// Why a credential was not accepted. The client sees one message for all of them, so
/// that a refusal says nothing about which part of a credential was wrong.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("unknown user or wrong password")]
    Wrong,
    /// A CLI secret tied to an OpenID Connect sign-in whose refresh failed.
    #[error(
        "your sign-in with the identity provider has lapsed: sign in to the web UI again, then use your CLI secret"
    )]
    SignInLapsed,
    /// Too many failed logins for this account lately; not checked until the wait is over.
    #[error("{}", super::throttled(*.0))]
    Throttled(u64),
    #[error(transparent)]
    Store(#[from] MetaError),
}

pub struct BuiltinAccess {
    meta: Arc<dyn MetadataStore>,
    config: ServiceConfig,
    robot_prefix: String,
    tls: bool,
    keys: RwLock<Keys>,
    /// `auth.service.signing_key`, which signs whatever the database holds.
    configured: Option<SigningKey>,
    last_reload: Mutex<Option<Instant>>,
    verified: VerifiedCache,
    validation: Validation,
    credentials: RwLock<HashMap<[u8; 32], Remembered>>,
    /// Failed logins per account name and per client address.
    account_failures: Failures<String>,
    source_failures: Failures<IpAddr>,
    /// One check at a time per credential on `/v2`: the first requests of a client (a
    /// kubelet, a CI job) arrive at once, and without this each ran argon2 (16 at once took
    /// a second on 2 cores, against 50 ms for one; docs/performance.md, "Issue 17: token
    /// service"). The ones that waited take the answer from the cache.
    checking: [tokio::sync::Mutex<()>; CHECK_STRIPES],
    public: RwLock<Option<(Arc<HashSet<String>>, Instant)>>,
    /// CLI secrets stop working when the user's OpenID Connect sign-in could not be
    /// refreshed (`auth.oidc.cli_secret_follows_sign_in`).
    cli_secret_follows_sign_in: bool,
}

/// A token the service signed, as the token endpoint answers it.
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    /// RFC 3339.
    pub issued_at: String,
}

impl BuiltinAccess {
    /// Loads the signing key (from the configured file, or the one in force in the
    /// database, created on first start) and every key a valid token may still be signed
    /// with.
    pub async fn open(
        meta: Arc<dyn MetadataStore>,
        config: &ServiceConfig,
        robot_prefix: &str,
        tls: bool,
    ) -> anyhow::Result<BuiltinAccess> {
        use anyhow::Context;
        let configured = if config.signing_key.as_os_str().is_empty() {
            None
        } else {
            let pem = std::fs::read_to_string(&config.signing_key).with_context(|| {
                format!(
                    "reading auth.service.signing_key {}",
                    config.signing_key.display()
                )
            })?;
            Some(SigningKey::from_pem(&pem).with_context(|| {
                format!("auth.service.signing_key {}", config.signing_key.display())
            })?)
        };
        let keys = load_keys(meta.as_ref(), configured.as_ref()).await?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.service]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Ok(BuiltinAccess {
            meta,
            config: config.clone(),
            robot_prefix: robot_prefix.to_string(),
            tls,
            keys: RwLock::new(keys),
            configured,
            last_reload: Mutex::new(None),
            verified: VerifiedCache::default(),
            validation,
            credentials: RwLock::new(HashMap::new()),
            account_failures: Failures::new(ACCOUNT_FAILURE_LIMIT),
            source_failures: Failures::new(SOURCE_FAILURE_LIMIT),
            checking: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            public: RwLock::new(None),
            cli_secret_follows_sign_in: false,
        })
    }

    /// CLI secrets stop working once the user's OpenID Connect sign-in lapses.
    pub fn tie_cli_secrets_to_sign_in(mut self, tied: bool) -> Self {
        self.cli_secret_follows_sign_in = tied;
        self
    }

    pub fn service(&self) -> &str {
        &self.config.service
    }

    /// Checks Basic credentials: a user's password, or (for a name with the robot prefix)
    /// a robot's secret; what they may do. `/v2` takes the answer from the cache when it was
    /// checked lately (`remembered`); the token endpoint always checks afresh, so that a
    /// disabled robot, a refreshed secret or a removed membership stops working at once.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
        remembered: bool,
    ) -> Result<Arc<Resolved>, CredentialError> {
        let key: [u8; 32] = {
            let mut h = sha2::Sha256::new();
            h.update(username.as_bytes());
            h.update([0u8]);
            h.update(password.as_bytes());
            h.finalize().into()
        };
        let ttl = Duration::from_secs(self.config.credential_cache_seconds);
        let cached = || {
            let (resolved, at) = self.credentials.read().ok()?.get(&key).cloned()?;
            let lapsed = resolved.expires_at.is_some_and(|e| e <= now_millis());
            (at.elapsed() < ttl && !lapsed).then_some(resolved)
        };
        let mut _turn = None;
        if remembered {
            if let Some(resolved) = cached() {
                return Ok(resolved);
            }
            _turn = Some(self.checking[key[0] as usize % CHECK_STRIPES].lock().await);
            if let Some(resolved) = cached() {
                return Ok(resolved);
            }
        }
        let resolved = Arc::new(
            self.throttled(username, self.resolve(username, password))
                .await?,
        );
        if !ttl.is_zero() {
            if let Ok(mut c) = self.credentials.write() {
                if c.len() >= CREDENTIAL_ENTRIES {
                    c.clear();
                }
                c.insert(key, (resolved.clone(), Instant::now()));
            }
        }
        Ok(resolved)
    }

    /// Runs a credential check unless the account or the client's address has failed too
    /// often lately, and counts its failure against both.
    async fn throttled<T>(
        &self,
        account: &str,
        check: impl std::future::Future<Output = Result<T, CredentialError>>,
    ) -> Result<T, CredentialError> {
        let source = crate::http::client::client_address();
        let account = account.to_string();
        let wait = self.account_failures.throttled(&account).max(
            source
                .as_ref()
                .and_then(|s| self.source_failures.throttled(s)),
        );
        if let Some(wait) = wait {
            return Err(CredentialError::Throttled(wait));
        }
        match check.await {
            Ok(r) => {
                // The account's count starts again; the address's does not (an attacker's
                // own good logins must not buy more guesses at others' passwords).
                self.account_failures.forget(&account);
                Ok(r)
            }
            Err(CredentialError::Wrong) => {
                self.account_failures.failed(account);
                if let Some(source) = source {
                    self.source_failures.failed(source);
                }
                Err(CredentialError::Wrong)
            }
            Err(e) => Err(e),
        }
    }

    /// A user's password (not a CLI secret or token, not a robot): signing in to the web
    /// UI. Throttled like every credential check.
    pub async fn password_sign_in(
        &self,
        username: &str,
        password: &str,
    ) -> Result<identity::User, CredentialError> {
        self.throttled(username, async {
            let user = self
                .meta
                .get_user(username)
                .await?
                .ok_or(CredentialError::Wrong)?;
            let hash = user.password_hash.clone().ok_or(CredentialError::Wrong)?;
            if verify_password(password, hash).await {
                Ok(user)
            } else {
                Err(CredentialError::Wrong)
            }
        })
        .await
    }

    async fn resolve(&self, username: &str, password: &str) -> Result<Resolved, CredentialError> {
        let public = self.public_projects().await?;
        if let Some(name) = username.strip_prefix(&self.robot_prefix) {
            let robot = self
                .meta
                .get_robot(name)
                .await?
                .ok_or(CredentialError::Wrong)?;
            let expired = robot.expires_at >= 0 && robot.expires_at <= now_millis();
            if robot.disabled || expired || !secret_matches(password, &robot.secret_hash) {
                return Err(CredentialError::Wrong);
            }
            return Ok(Resolved {
                subject: username.to_string(),
                user_id: None,
                expires_at: (robot.expires_at >= 0).then_some(robot.expires_at),
                sysadmin: false,
                roles: HashMap::new(),
                robot: Some(robot_permissions(&robot)),
                public,
                narrowed: None,
            });
        }
        let user = self
            .meta
            .get_user(username)
            .await?
            .ok_or(CredentialError::Wrong)?;
        // The user's CLI secret or one of their personal access tokens (high-entropy
        // secrets kept as SHA-256 digests: one indexed lookup), else the password.
        let mut narrowed = None;
        let mut expires_at = None;
        let secret = self
            .meta
            .find_user_secret(user.id, &secret_digest(password))
            .await?;
        if let Some(secret) = secret {
            let now = now_millis();
            if secret.expires_at.is_some_and(|e| e <= now) {
                return Err(CredentialError::Wrong);
            }
            if secret.kind == SecretKind::Cli && self.cli_secret_follows_sign_in {
                let lapsed = self.meta.get_oidc_session(user.id).await?;
                if lapsed.is_some_and(|s| s.failure.is_some()) {
                    return Err(CredentialError::SignInLapsed);
                }
            }
            if secret
                .last_used_at
                .is_none_or(|at| now - at >= LAST_USED_PRECISION_MS)
            {
                self.meta.touch_user_secret(secret.id, now).await?;
            }
            if secret.kind == SecretKind::Personal {
                narrowed = Some(Narrowing {
                    projects: secret.projects.map(|p| p.into_iter().collect()),
                    pull_only: secret.pull_only,
                });
            }
            expires_at = secret.expires_at;
        } else {
            let hash = user.password_hash.clone().ok_or(CredentialError::Wrong)?;
            if !verify_password(password, hash).await {
                return Err(CredentialError::Wrong);
            }
        }
        Ok(Resolved {
            expires_at,
            narrowed,
            ..self.user_authority(user, public).await?
        })
    }

    /// What a user may do, read afresh (a web session's user, once per page).
    pub async fn resolve_user(&self, user: identity::User) -> Result<Arc<Resolved>, MetaError> {
        let public = self.public_projects().await?;
        Ok(Arc::new(self.user_authority(user, public).await?))
    }

    async fn user_authority(
        &self,
        user: identity::User,
        public: Arc<HashSet<String>>,
    ) -> Result<Resolved, MetaError> {
        let mut roles: HashMap<String, Vec<ProjectRole>> = HashMap::new();
        for pr in self.meta.user_projects(user.id).await? {
            roles.insert(
                pr.project.name,
                pr.roles
                    .into_iter()
                    .filter_map(ProjectRole::from_id)
                    .collect(),
            );
        }
        Ok(Resolved {
            subject: user.username,
            user_id: Some(user.id),
            expires_at: None,
            sysadmin: user.sysadmin,
            roles,
            robot: None,
            public,
            narrowed: None,
        })
    }

    /// The names of the public projects, re-read every few seconds.
    async fn public_projects(&self) -> Result<Arc<HashSet<String>>, MetaError> {
        if let Some((set, at)) = self.public.read().ok().and_then(|p| p.clone()) {
            if at.elapsed() < PUBLIC_PROJECTS_FOR {
                return Ok(set);
            }
        }
        let query = ProjectQuery {
            public: Some(true),
            ..Default::default()
        };
        let mut names = HashSet::new();
        let mut page = 1;
        loop {
            let p = self.meta.list_projects(&query, page, 500).await?;
            let n = p.items.len();
            names.extend(p.items.into_iter().map(|p| p.name));
            if n < 500 {
                break;
            }
            page += 1;
        }
        let set = Arc::new(names);
        if let Ok(mut p) = self.public.write() {
            *p = Some((set.clone(), Instant::now()));
        }
        Ok(set)
    }

    /// What anonymous callers may do: pull from public projects.
    pub async fn anonymous(&self) -> Result<Arc<Resolved>, MetaError> {
        Ok(Arc::new(Resolved::anonymous(self.public_projects().await?)))
    }

    /// A token for `who` granting what it asked for in `scopes` and may do: the
    /// intersection, scope by scope. Scopes it may do nothing in are left out.
    pub fn issue(&self, who: &Resolved, scopes: &[AccessEntry]) -> anyhow::Result<IssuedToken> {
        let mut access = Vec::new();
        for s in scopes {
            match s.kind.as_str() {
                "repository" => {
                    let granted: Vec<String> = s
                        .actions
                        .iter()
                        .filter(|a| {
                            let action = match a.as_str() {
                                "pull" => Action::Pull,
                                "push" => Action::Push,
                                "delete" => Action::Delete,
                                _ => return false,
                            };
                            who.allows(&s.name, action)
                        })
                        .cloned()
                        .collect();
                    if !granted.is_empty() {
                        access.push(AccessEntry {
                            kind: s.kind.clone(),
                            name: s.name.clone(),
                            actions: granted,
                        });
                    }
                }
                "registry" if s.name == "catalog" => {
                    if who.lists_everything() {
                        access.push(AccessEntry {
                            kind: "registry".into(),
                            name: "catalog".into(),
                            actions: vec!["*".into()],
                        });
                    } else {
                        let mut listed: Vec<String> = who.listed_projects().into_iter().collect();
                        listed.sort();
                        access.extend(listed.into_iter().map(|p| AccessEntry {
                            kind: "project".into(),
                            name: p,
                            actions: vec!["pull".into()],
                        }));
                    }
                }
                _ => {}
            }
        }
        let now = jsonwebtoken::get_current_timestamp();
        let mut jti = [0u8; 16];
        super::secrets::random_bytes(&mut jti)?;
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: who.subject.clone(),
            aud: self.config.service.clone().into(),
            exp: now + self.config.token_seconds,
            nbf: Some(now.saturating_sub(LEEWAY_SECONDS)),
            iat: Some(now),
            jti: Some(hex::encode(jti)),
            access,
        };
        let (kid, key) = {
            let keys = self
                .keys
                .read()
                .map_err(|_| anyhow::anyhow!("key lock poisoned"))?;
            (keys.signing.kid.clone(), keys.signing.encoding_key())
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid);
        let token = jsonwebtoken::encode(&header, &claims, &key)?;
        Ok(IssuedToken {
            token,
            expires_in: self.config.token_seconds,
            issued_at: rfc3339(now),
        })
    }

    fn verify(&self, token: &str) -> Result<Verified, Option<String>> {
        if let Some(hit) = self.verified.get(token, LEEWAY_SECONDS) {
            return hit.map_err(|()| Some("the token has expired".into()));
        }
        let head = jsonwebtoken::decode_header(token)
            .map_err(|e| Some(format!("the token is not a JWT ({e})")))?;
        if head.alg != Algorithm::ES256 {
            return Err(Some(format!(
                "tokens signed with {:?} are not accepted",
                head.alg
            )));
        }
        let kid = head.kid.unwrap_or_default();
        let keys = self
            .keys
            .read()
            .map_err(|_| Some("key lock poisoned".to_string()))?;
        // `None`: a key this process does not know (yet).
        let key = keys.verifying.get(&kid).ok_or(None)?;
        match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
            Ok(data) => {
                let (subject, grants) = data.claims.grants();
                let v = (subject, Arc::new(grants));
                self.verified.insert(token, v.clone());
                Ok(v)
            }
            Err(e) => Err(Some(describe(&e))),
        }
    }

    /// Re-reads the keys from the database, at most once per [`KEY_RELOAD_EVERY`] (a token
    /// signed with a key this process does not know asked for it).
    async fn reload_keys(&self) -> bool {
        {
            let Ok(mut last) = self.last_reload.lock() else {
                return false;
            };
            if last.is_some_and(|at| at.elapsed() < KEY_RELOAD_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.refresh_keys().await
    }

    /// Re-reads the keys from the database: a key another replica or `berth token
    /// rotate-key` put in force signs from now on (unless a key is configured), and retired
    /// keys keep verifying the tokens they signed.
    pub async fn refresh_keys(&self) -> bool {
        match load_keys(self.meta.as_ref(), self.configured.as_ref()).await {
            Ok(fresh) => {
                if let Ok(mut k) = self.keys.write() {
                    *k = fresh;
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the token service's keys failed");
                false
            }
        }
    }

    /// How often a server re-reads the keys.
    pub fn key_refresh(&self) -> Duration {
        Duration::from_secs(self.config.key_refresh_seconds.max(1))
    }

    fn realm(&self, host: Option<&str>) -> String {
        if !self.config.realm.is_empty() {
            return self.config.realm.clone();
        }
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/service/token", host.unwrap_or("localhost"))
    }
}

/// The keys: the configured one or the one in force in the database (created when there is
/// none, race-safe across replicas), and every retired key a valid token may still carry.
async fn load_keys(
    meta: &dyn MetadataStore,
    configured: Option<&SigningKey>,
) -> anyhow::Result<Keys> {
    let in_force = match meta.signing_key_in_force().await? {
        Some(k) => k,
        None => {
            let fresh = SigningKey::generate()?;
            meta.insert_signing_key_if_none(&identity::SigningKey {
                kid: fresh.kid.clone(),
                algorithm: "ES256".into(),
                private_key: fresh.to_pem(),
                created_at: now_millis(),
                retired_at: None,
            })
            .await?
        }
    };
    let mut verifying = HashMap::new();
    let mut stored = vec![in_force.clone()];
    stored.extend(meta.retired_signing_keys().await?);
    for k in &stored {
        match SigningKey::from_pem(&k.private_key) {
            Ok(key) => {
                verifying.insert(key.kid.clone(), key.decoding_key());
            }
            Err(e) => {
                tracing::warn!(kid = %k.kid, error = %e, "a stored signing key is unreadable")
            }
        }
    }
    let signing = match configured {
        Some(k) => k.clone(),
        None => SigningKey::from_pem(&in_force.private_key)?,
    };
    verifying.insert(signing.kid.clone(), signing.decoding_key());
    Ok(Keys { signing, verifying })
}

/// A stored robot's permissions in Harbor's shape.
fn robot_permissions(robot: &identity::Robot) -> Vec<roles::RobotPermission> {
    let mut out = grouped(&robot.permissions);
    // A project robot acts in its own project only, whatever its rows say.
    if robot.level == RobotLevel::Project {
        if let Some((project, _)) = robot.name.split_once('+') {
            out.retain(|p| p.namespace == project);
        }
    }
    out
}

/// Harbor-shaped permissions from the rows the store keeps (one per namespace and kind).
pub fn grouped(rows: &[identity::RobotPermission]) -> Vec<roles::RobotPermission> {
    let mut out: Vec<roles::RobotPermission> = Vec::new();
    for p in rows {
        let access = roles::RobotAccess {
            resource: p.resource.clone(),
            action: p.action.clone(),
            effect: None,
        };
        match out
            .iter_mut()
            .find(|o| o.kind == p.kind && o.namespace == p.namespace)
        {
            Some(o) => o.access.push(access),
            None => out.push(roles::RobotPermission {
                kind: p.kind.clone(),
                namespace: p.namespace.clone(),
                access: vec![access],
            }),
        }
    }
    out
}

/// Harbor-shaped permissions as the rows the store keeps.
pub fn flatten(perms: &[roles::RobotPermission]) -> Vec<identity::RobotPermission> {
    perms
        .iter()
        .flat_map(|p| {
            p.access.iter().map(|a| identity::RobotPermission {
                kind: p.kind.clone(),
                namespace: p.namespace.clone(),
                resource: a.resource.clone(),
                action: a.action.clone(),
            })
        })
        .collect()
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[async_trait]
impl AccessController for BuiltinAccess {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, Refusal> {
        match credentials {
            Credentials::Bearer(token) => {
                let verified = match self.verify(token) {
                    Err(None) if self.reload_keys().await => self.verify(token),
                    other => other,
                };
                let (subject, grants) = verified.map_err(|why| {
                    Refusal::Invalid(why.unwrap_or_else(|| {
                        "the token is signed with a key this registry does not know".into()
                    }))
                })?;
                Ok(Principal::Token { subject, grants })
            }
            Credentials::Basic { username, password } => {
                match self.sign_in(username, password, true).await {
                    Ok(resolved) => {
                        let name = resolved.subject.clone();
                        Ok(if resolved.robot.is_some() {
                            Principal::Robot {
                                name,
                                authority: resolved,
                            }
                        } else {
                            Principal::User {
                                name,
                                authority: resolved,
                            }
                        })
                    }
                    Err(e @ (CredentialError::Wrong | CredentialError::SignInLapsed)) => {
                        Err(Refusal::Invalid(e.to_string()))
                    }
                    Err(CredentialError::Throttled(wait)) => Err(Refusal::Throttled(wait)),
                    Err(CredentialError::Store(e)) => {
                        tracing::error!(error = %e, "checking credentials failed");
                        Err(Refusal::Invalid(
                            "credentials could not be checked now".into(),
                        ))
                    }
                }
            }
            Credentials::None | Credentials::Unsupported => Ok(Principal::Anonymous),
        }
    }

    fn admits(&self, principal: &Principal) -> bool {
        !matches!(principal, Principal::Anonymous)
    }

    fn allows(&self, principal: &Principal, repository: &str, action: Action) -> bool {
        match principal {
            Principal::Token { grants, .. } => grants.allows(repository, action),
            Principal::User { authority, .. } | Principal::Robot { authority, .. } => {
                authority.allows(repository, action)
            }
            Principal::Anonymous => false,
        }
    }

    fn lists(&self, principal: &Principal, repository: &str) -> bool {
        match principal {
            Principal::Token { grants, .. } => grants.lists(repository),
            Principal::User { authority, .. } | Principal::Robot { authority, .. } => {
                authority.lists(repository)
            }
            Principal::Anonymous => false,
        }
    }

    fn explain(&self, refusal: &Refusal, scope: &str) -> String {
        match refusal {
            Refusal::Missing => {
                "authentication required: log in (docker login), or get a token from the realm in WWW-Authenticate".into()
            }
            Refusal::Invalid(why) => format!("invalid credentials: {why}"),
            Refusal::Insufficient if scope.is_empty() => "not allowed to use this registry".into(),
            Refusal::Insufficient => format!("not allowed: {scope}"),
            Refusal::Throttled(wait) => super::throttled(*wait),
        }
    }

    fn challenge(
        &self,
        wanted: &[Access<'_>],
        refusal: &Refusal,
        host: Option<&str>,
    ) -> Option<Challenge> {
        Some(Challenge::bearer(
            &self.realm(host),
            &self.config.service,
            wanted,
            refusal,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_518_861), "2026-12-06T01:01:01Z");
    }
}
