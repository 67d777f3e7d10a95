//! The application's state: the content layer over both stores, and the access
//! controller. The only place that picks backends from the configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::builtin::BuiltinAccess;
use crate::auth::oidc::Oidc;
use crate::auth::token::TokenAccess;
use crate::auth::{AccessController, OpenAccess, secrets};
use crate::config::{AuthMode, Config, ProjectCreation, StorageBackend};
use crate::content::{Content, ContentRules};
use crate::http::client::TrustedProxies;
use crate::metadata::identity::{NewProject, NewUser};
use crate::metadata::{MetaError, MetadataStore, SqlMetadataStore};
use crate::storage::BlobStore;
use crate::storage::fs::{FsBlobStore, UploadIo};
use crate::storage::s3::S3BlobStore;

#[derive(Clone)]
pub struct AppState {
    pub content: Arc<Content>,
    pub access: Arc<dyn AccessController>,
    /// The built-in token service, when `auth.mode = "builtin"`.
    pub tokens: Option<Arc<BuiltinAccess>>,
    /// Who may create projects (`auth.project_creation`).
    pub project_creation: ProjectCreation,
    /// What robot account names start with (`auth.robot_prefix`).
    pub robot_prefix: String,
    /// Proxies whose `X-Forwarded-For` names the client (`server.trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// OpenID Connect sign-in (`auth.oidc.issuer` set, `builtin` mode).
    pub oidc: Option<Arc<Oidc>>,
    /// The web UI's settings.
    pub web: WebSettings,
    /// Probes, metrics and the request middleware's settings.
    pub ops: Arc<crate::ops::Ops>,
}

/// How the web UI behaves (from `web.*`, `auth.oidc.*` and `tls.*`).
#[derive(Clone, Debug)]
pub struct WebSettings {
    pub session_seconds: i64,
    pub secure_cookies: bool,
    pub external_url: String,
    pub redirect_path: String,
    pub local_sign_in: bool,
}

impl WebSettings {
    fn from_config(config: &Config) -> WebSettings {
        let oidc = &config.auth.oidc;
        WebSettings {
            session_seconds: (config.web.session_hours * 3600.0).round() as i64,
            secure_cookies: config.tls_enabled() || oidc.external_url.starts_with("https://"),
            external_url: oidc.external_url.clone(),
            redirect_path: oidc.redirect_path.clone(),
            local_sign_in: oidc.local_sign_in || !oidc.enabled(),
        }
    }
}

/// How [`AppState::open_with`] opens the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Server,
    Maintenance,
    Gc { exclusive: bool },
}

impl AppState {
    /// Opens the stores the configuration names, migrating the database, for a maintenance
    /// command that may run beside the server (`gc`).
    pub async fn from_config(config: &Config) -> anyhow::Result<AppState> {
        Self::open(config, false).await
    }

    /// Opens the stores for `serve`: as [`AppState::from_config`], and an embedded SQLite
    /// database becomes this process's alone (locked, manifest lookups cached; see
    /// [`SqlMetadataStore::own_exclusively`]).
    pub async fn for_server(config: &Config) -> anyhow::Result<AppState> {
        Self::open(config, true).await
    }

    /// Opens the stores for garbage collection: the schema must be exactly this binary's
    /// (no migration on the side); `exclusive` takes an embedded SQLite database from any
    /// server (refused while one serves it, whose manifest cache would go stale).
    pub async fn for_gc(config: &Config, exclusive: bool) -> anyhow::Result<AppState> {
        Self::open_with(config, Open::Gc { exclusive }).await
    }

    async fn open(config: &Config, server: bool) -> anyhow::Result<AppState> {
        Self::open_with(
            config,
            if server {
                Open::Server
            } else {
                Open::Maintenance
            },
        )
        .await
    }

    async fn open_with(config: &Config, how: Open) -> anyhow::Result<AppState> {
        let server = how == Open::Server;
        let mut meta =
            SqlMetadataStore::connect(&config.database_url(), config.database.max_connections)
                .await?;
        if let Open::Gc { exclusive } = how {
            meta.check_schema().await?;
            if exclusive {
                meta.own_exclusively().map_err(|e| {
                    anyhow::anyhow!(
                        "{e}. Deleting untagged manifests changes what a running server on the embedded database keeps cached: stop the server first, or let it collect on its schedule (gc.interval_hours with gc.untagged); collecting blobs alone (without --untagged) works beside it"
                    )
                })?;
            }
        } else {
            meta.migrate().await?;
        }
        if server {
            meta.own_exclusively()?;
        }
        let blobs: Arc<dyn BlobStore> = match config.storage.backend {
            StorageBackend::S3 => Arc::new(S3BlobStore::open(&config.storage.s3).await?),
            StorageBackend::Fs => Arc::new(
                FsBlobStore::open_with(
                    config.storage_root(),
                    if config.storage.direct_io {
                        UploadIo::Direct
                    } else {
                        UploadIo::Buffered
                    },
                )
                .await?
                .with_min_free_bytes(config.storage.min_free_bytes),
            ),
        };
        let meta: Arc<dyn MetadataStore> = Arc::new(meta);
        let mut tokens = None;
        let access: Arc<dyn AccessController> = match config.auth.mode {
            AuthMode::Token => Arc::new(TokenAccess::new(&config.auth.token)?),
            AuthMode::None => Arc::new(OpenAccess),
            AuthMode::Builtin => {
                if server {
                    bootstrap(meta.as_ref(), &config.auth.admin_password).await?;
                }
                let builtin = Arc::new(
                    BuiltinAccess::open(
                        meta.clone(),
                        &config.auth.service,
                        &config.auth.robot_prefix,
                        config.tls_enabled(),
                    )
                    .await?
                    .tie_cli_secrets_to_sign_in(
                        config.auth.oidc.enabled() && config.auth.oidc.cli_secret_follows_sign_in,
                    ),
                );
                tokens = Some(builtin.clone());
                builtin
            }
        };
        let oidc = match config.auth.mode == AuthMode::Builtin && config.auth.oidc.enabled() {
            true => Some(Arc::new(Oidc::new(config.auth.oidc.clone(), meta.clone())?)),
            false => None,
        };
        let rules = ContentRules {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            sparse_indexes: config.manifests.sparse_indexes,
            projects_required: config.auth.mode == AuthMode::Builtin,
        };
        let content = Arc::new(Content::new(blobs, meta, rules));
        Ok(AppState {
            ops: Arc::new(crate::ops::Ops::new(content.clone(), config)),
            content,
            access,
            tokens,
            project_creation: config.auth.project_creation,
            robot_prefix: config.auth.robot_prefix.clone(),
            trusted_proxies: TrustedProxies(config.server.trusted_proxies.0.clone().into()),
            oidc,
            web: WebSettings::from_config(config),
        })
    }
}

/// On the first start of a registry with built-in accounts (no user `admin` yet): the
/// system administrator `admin`, with the configured password or a generated one printed
/// once, and the public project `library`.
async fn bootstrap(meta: &dyn MetadataStore, admin_password: &str) -> anyhow::Result<()> {
    let generated = admin_password.is_empty();
    let password = if generated {
        secrets::generate_secret()?
    } else {
        admin_password.to_string()
    };
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || secrets::hash_password(&password)).await??
    };
    let (admin, created) = meta
        .create_user_unless_exists(&NewUser {
            username: "admin".into(),
            realname: "system administrator".into(),
            password_hash: Some(hash),
            sysadmin: true,
            ..Default::default()
        })
        .await?;
    if !created {
        return Ok(());
    }
    if generated {
        // Printed once, on the start that created the account; never logged again.
        tracing::warn!(
            "created the system administrator `admin` with the generated password {password} \
             (shown only now); change it with `berth user password admin`, or start with \
             auth.admin_password (BERTH_AUTH__ADMIN_PASSWORD) set on a new database"
        );
    } else {
        tracing::info!("created the system administrator `admin` with auth.admin_password");
    }
    match meta
        .create_project(&NewProject {
            name: "library".into(),
            public: true,
            owner_id: Some(admin.id),
            owner_role: None,
        })
        .await
    {
        Ok(_) | Err(MetaError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Re-reads the token service's keys every `auth.service.key_refresh_seconds`, so that a
/// key put in force elsewhere (another replica's first start, `berth token rotate-key`)
/// signs here too.
pub fn spawn_key_refresher(tokens: Arc<BuiltinAccess>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(tokens.key_refresh());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            tokens.refresh_keys().await;
        }
    });
}

/// Keeps OpenID Connect sign-ins fresh: every minute (or `auth.oidc.recheck_seconds`, if
/// shorter), refreshes the users' provider tokens that lapse within two minutes or were
/// not refreshed for `recheck_seconds` (a refusal marks the sign-in lapsed, which a tied
/// CLI secret then reports), and removes expired web sessions and abandoned sign-ins.
pub fn spawn_sign_in_keeper(state: AppState) {
    let every = state
        .oidc
        .as_ref()
        .map_or(60, |o| o.config.recheck_seconds.min(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            keep_sign_ins(&state).await;
        }
    });
}

/// One round of [`spawn_sign_in_keeper`]'s work.
pub async fn keep_sign_ins(state: &AppState) {
    let meta = state.content.metadata();
    let now = crate::metadata::now_millis();
    if let Err(e) = meta
        .purge_sign_ins(now, crate::auth::oidc::PENDING_FOR_MS)
        .await
    {
        tracing::warn!(error = %e, "removing expired web sessions failed");
    }
    let Some(oidc) = &state.oidc else { return };
    let recheck = oidc.config.recheck_seconds as i64 * 1000;
    let due = match meta.oidc_sessions_due(now + 120_000, now - recheck).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "reading sign-ins to refresh failed");
            return;
        }
    };
    for s in due {
        let next = match oidc.refresh(&s).await {
            Ok(fresh) => fresh,
            Err(crate::auth::oidc::OidcError::Unreachable(why)) => {
                tracing::warn!(user_id = s.user_id, %why, "refreshing a sign-in: the provider is unreachable; retrying later");
                continue;
            }
            Err(e) => {
                tracing::info!(user_id = s.user_id, error = %e, "a sign-in could not be refreshed: it has lapsed");
                crate::metadata::signin::OidcSession {
                    failure: Some(e.to_string()),
                    ..s
                }
            }
        };
        if let Err(e) = meta.put_oidc_session(&next).await {
            tracing::warn!(error = %e, "storing a refreshed sign-in failed");
        }
    }
}

/// Runs the purge of abandoned uploads every `every` until the process ends.
pub fn spawn_upload_purger(state: AppState, max_age: Duration, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state.content.purge_uploads(max_age).await {
                Ok(p) if p.sessions + p.orphans > 0 => tracing::info!(
                    sessions = p.sessions,
                    orphans = p.orphans,
                    "purged abandoned uploads"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging abandoned uploads failed"),
            }
        }
    });
}

/// Every `every`, a garbage collection (`config.gc`); with several replicas the lease lets
/// one run at a time, and the others skip their turn. The first run waits one interval.
pub fn spawn_collector(state: AppState, options: crate::jobs::gc::GcOptions, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let progress = crate::jobs::gc::log_progress();
        loop {
            tick.tick().await;
            match crate::jobs::gc::collect(&state.content, &options, &progress).await {
                Ok(r) => tracing::info!(
                    run = %r.run,
                    blobs = r.blobs,
                    bytes = r.bytes,
                    manifests = r.manifests,
                    failed = r.failed.len(),
                    seconds = r.took.as_secs_f64(),
                    "garbage collection finished"
                ),
                Err(crate::jobs::gc::GcError::Busy { holder, .. }) => {
                    tracing::info!(%holder, "garbage collection skipped: another replica is collecting")
                }
                Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
            }
        }
    });
}
