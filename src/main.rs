use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use berth::config::{Config, LogFormat};
use berth::metadata::SqlMetadataStore;

#[derive(Parser)]
#[command(name = "berth", version, about = "An OCI distribution registry server")]
struct Cli {
    /// Configuration file (TOML); see config/berth.toml. Without one, defaults and
    /// BERTH_* environment variables apply.
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:5000 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Where the embedded database and the filesystem blob store live.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Discard abandoned upload sessions (older than uploads.purge_after_seconds, or
    /// --older-than) and upload data no session owns, then exit.
    Gc {
        /// Age in seconds after which an untouched upload session is abandoned.
        #[arg(long)]
        older_than: Option<u64>,
    },
}

/// Tunes glibc's malloc for a server that streams blobs (docs/performance.md, "glibc malloc
/// settings"). Must run before any thread is started.
///
/// - Arenas: at most one per core, so transfer buffers freed on blocking-pool threads do
///   not stay resident in many half-empty arenas.
/// - Fixed mmap (4 MiB) and trim (16 MiB) thresholds instead of glibc's sliding ones, so
///   hyper's read buffers are not handed back to the kernel between chunks and faulted in
///   again; memory freed after a burst stays with the process up to the trim threshold per
///   arena.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only sets allocator parameters; called while the process has
        // one thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores.max(2) as libc::c_int);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
        }
    }
}

fn main() -> anyhow::Result<()> {
    tune_malloc();
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Command::Serve { listen, data_dir } = &cli.command {
        if let Some(l) = listen {
            config.listen = *l;
        }
        if let Some(d) = data_dir {
            config.data_dir = d.clone();
        }
    }
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => berth::server::serve(config).await,
            Command::Gc { older_than } => {
                let state = berth::state::AppState::from_config(&config).await?;
                let age = older_than.unwrap_or(config.uploads.purge_after_seconds);
                let purged = state
                    .content
                    .purge_uploads(std::time::Duration::from_secs(age))
                    .await?;
                tracing::info!(
                    sessions = purged.sessions,
                    orphans = purged.orphans,
                    older_than_seconds = age,
                    "purged abandoned uploads"
                );
                Ok(())
            }
            Command::Migrate => {
                let url = config.database_url();
                let store = SqlMetadataStore::connect(&url, 1)
                    .await
                    .context("connecting to the database")?;
                store.migrate().await?;
                store.close().await;
                tracing::info!(database = %berth::server::redact(&url), "migrations applied");
                Ok(())
            }
        }
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
