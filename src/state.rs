//! The application's state: the content layer over both stores, and the access
//! controller. The only place that picks backends from the configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::token::TokenAccess;
use crate::auth::{AccessController, OpenAccess};
use crate::config::{AuthMode, Config, StorageBackend};
use crate::content::{Content, ContentRules};
use crate::metadata::SqlMetadataStore;
use crate::storage::BlobStore;
use crate::storage::fs::{FsBlobStore, UploadIo};
use crate::storage::s3::S3BlobStore;

#[derive(Clone)]
pub struct AppState {
    pub content: Arc<Content>,
    pub access: Arc<dyn AccessController>,
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

    async fn open(config: &Config, server: bool) -> anyhow::Result<AppState> {
        let mut meta =
            SqlMetadataStore::connect(&config.database_url(), config.database.max_connections)
                .await?;
        meta.migrate().await?;
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
                .await?,
            ),
        };
        let access: Arc<dyn AccessController> = match config.auth.mode {
            AuthMode::Token => Arc::new(TokenAccess::new(&config.auth.token)?),
            AuthMode::None => Arc::new(OpenAccess),
        };
        let rules = ContentRules {
            max_manifest_bytes: config.limits.max_manifest_bytes,
            sparse_indexes: config.manifests.sparse_indexes,
        };
        Ok(AppState {
            content: Arc::new(Content::new(blobs, Arc::new(meta), rules)),
            access,
        })
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
