use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use berth::admin;
use berth::config::{Config, LogFormat};
use berth::metadata::SqlMetadataStore;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

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
    /// Garbage collection while the registry serves: discard abandoned upload sessions
    /// (older than uploads.purge_after_seconds, or --older-than) and upload data no session
    /// owns, then delete blobs no manifest references any more (and, with --untagged,
    /// manifests no tag keeps); prints what it freed, then exits.
    Gc {
        /// Age in seconds after which an untouched upload session is abandoned.
        #[arg(long)]
        older_than: Option<u64>,
        /// Report what would be freed (blobs, bytes, manifests); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete manifests no tag keeps (untagged images; children of kept indexes
        /// and referrers of kept images stay).
        #[arg(long)]
        untagged: bool,
        /// Spare blobs pushed, mounted or linked within this many seconds (default
        /// gc.grace_seconds). 0 is safe only while nobody pushes.
        #[arg(long)]
        grace_seconds: Option<u64>,
        /// Blobs per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Local users (built-in accounts); works on the database directly, server up or down.
    #[command(subcommand)]
    User(UserCommand),
    /// Projects: the first path segment of repository names.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Robot accounts, named <prefix><project>+<name> (project) or <prefix><name> (system).
    #[command(subcommand)]
    Robot(RobotCommand),
    /// The built-in token service's signing key.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the REST API's OpenAPI document (what GET /api/v2.0/openapi.json serves and
    /// docs/openapi.json keeps) and exit; needs no database.
    Openapi,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Put a new signing key in force; servers sign with it within
    /// auth.service.key_refresh_seconds, and tokens signed with the old one stay valid.
    RotateKey,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints a generated password unless --password is given.
    Create {
        name: String,
        #[arg(long, env = "BERTH_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Make the user a system administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Set (or, without --password, generate and print) a user's password.
    Password {
        name: String,
        #[arg(long, env = "BERTH_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Make a user a system administrator (or, with --revoke, no longer one).
    Admin {
        name: String,
        #[arg(long)]
        revoke: bool,
    },
    List,
    Delete {
        name: String,
    },
    /// Link a user to their identity at the OpenID Connect provider (after the provider was
    /// redeployed and knows them under a new subject); memberships and CLI secret stay.
    Link {
        name: String,
        /// The subject (`sub`) the provider now gives the person (the sign-in page names it).
        #[arg(long, required_unless_present = "unlink")]
        subject: Option<String>,
        /// The provider's issuer URL; default: auth.oidc.issuer.
        #[arg(long)]
        issuer: Option<String>,
        /// Remove the link instead (the user is onboarded afresh at their next sign-in).
        #[arg(long, conflicts_with = "subject")]
        unlink: bool,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    Create {
        name: String,
        /// Anyone may pull from it.
        #[arg(long)]
        public: bool,
    },
    List,
    /// Make a project public or private.
    Visibility {
        name: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
    },
    /// Make a user a member with a role: projectAdmin, maintainer, developer, guest or
    /// limitedGuest.
    Member {
        project: String,
        user: String,
        role: String,
    },
    /// Delete a project; refused while it holds repositories unless --with-repositories.
    Delete {
        name: String,
        #[arg(long)]
        with_repositories: bool,
    },
}

#[derive(Subcommand)]
enum RobotCommand {
    /// Create a robot account and print its name and secret (shown only now).
    Create {
        name: String,
        /// A project robot of this project (else a system robot).
        #[arg(long)]
        project: Option<String>,
        /// For a system robot: a project its access applies to, or * for every project
        /// (repeatable).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// What it may do, as <resource>:<action>, e.g. repository:pull (repeatable).
        #[arg(long, required = true)]
        access: Vec<String>,
        /// Days until it expires; -1: never.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        days: i64,
        #[arg(long, default_value = "")]
        description: String,
    },
    List,
    /// Give a robot a new secret (the old one stops working) and print it.
    Refresh {
        name: String,
    },
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Delete {
        name: String,
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
    if let Command::Openapi = cli.command {
        print!("{}", berth::api::openapi::text());
        return Ok(());
    }
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Command::Serve { listen, data_dir } = &cli.command {
        if let Some(l) = listen {
            config.listen = *l;
        }
        if let Some(d) = data_dir {
            config.data_dir = d.clone();
        }
    }
    let admin_command = matches!(
        cli.command,
        Command::User(_) | Command::Project(_) | Command::Robot(_) | Command::Token(_)
    );
    init_logging(&config, admin_command);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => berth::server::serve(config).await,
            Command::Gc {
                older_than,
                dry_run,
                untagged,
                grace_seconds,
                batch,
            } => {
                // Deleting manifests behind a server's manifest cache (embedded SQLite) is
                // refused while it serves.
                let state = berth::state::AppState::for_gc(&config, untagged && !dry_run)
                    .await
                    .map_err(|e| anyhow::anyhow!("berth gc: {e}"))?;
                let options = berth::jobs::gc::GcOptions {
                    dry_run,
                    untagged,
                    grace: std::time::Duration::from_secs(
                        grace_seconds.unwrap_or(config.gc.grace_seconds),
                    ),
                    batch,
                    started_by: "cli".into(),
                };
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
                // A bar on a terminal, periodic log lines otherwise.
                let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
                    let bar = indicatif::ProgressBar::new_spinner();
                    bar.enable_steady_tick(std::time::Duration::from_millis(200));
                    bar
                });
                let logged = berth::jobs::gc::log_progress();
                let progress = |p: &berth::jobs::gc::Progress| match &bar {
                    Some(bar) => bar.set_message(format!(
                        "{}: {} blobs ({}) {}, {} manifests",
                        p.phase,
                        p.blobs,
                        indicatif::HumanBytes(p.bytes),
                        if dry_run { "would be freed" } else { "freed" },
                        p.manifests
                    )),
                    None => logged(p),
                };
                let report = berth::jobs::gc::collect(&state.content, &options, &progress).await;
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                let report = report?;
                let verb = if report.dry_run {
                    "would free"
                } else {
                    "freed"
                };
                println!(
                    "garbage collection {}: {verb} {} blobs ({} bytes), {} manifests in {:.1} s{}",
                    report.run,
                    report.blobs,
                    report.bytes,
                    report.manifests,
                    report.took.as_secs_f64(),
                    if report.failed.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; the blob store refused to delete {} (kept for the next run): {}",
                            report.failed.len(),
                            report
                                .failed
                                .iter()
                                .map(|(d, e)| format!("{d} ({e})"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                );
                if report.failed.is_empty() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("some blobs could not be deleted"))
                }
            }
            Command::User(c) => admin_user(&config, c).await,
            Command::Project(c) => admin_project(&config, c).await,
            Command::Robot(c) => admin_robot(&config, c).await,
            Command::Token(TokenCommand::RotateKey) => {
                let state = berth::state::AppState::from_config(&config).await?;
                let kid = admin::rotate_signing_key(state.content.metadata().as_ref()).await?;
                println!("signing key {kid} in force");
                Ok(())
            }
            Command::Openapi => Ok(()),
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

async fn admin_user(config: &Config, c: UserCommand) -> anyhow::Result<()> {
    let state = berth::state::AppState::from_config(config).await?;
    let meta = state.content.metadata().as_ref();
    match c {
        UserCommand::Create {
            name,
            password,
            email,
            admin: sysadmin,
        } => {
            let generated = admin::user_create(
                meta,
                &config.auth.robot_prefix,
                &name,
                password,
                email,
                sysadmin,
            )
            .await?;
            println!("created user {name}");
            if let Some(p) = generated {
                println!("password: {p}");
            }
        }
        UserCommand::Password { name, password } => {
            if let Some(p) = admin::user_password(meta, &name, password).await? {
                println!("password: {p}");
            } else {
                println!("password of {name} set");
            }
        }
        UserCommand::Admin { name, revoke } => admin::user_set_admin(meta, &name, !revoke).await?,
        UserCommand::List => admin::user_list(meta)
            .await?
            .iter()
            .for_each(|l| println!("{l}")),
        UserCommand::Delete { name } => admin::user_delete(meta, &name).await?,
        UserCommand::Link {
            name,
            subject,
            issuer,
            unlink,
        } => {
            let issuer = issuer.unwrap_or_else(|| config.auth.oidc.issuer.clone());
            let identity = match (&subject, unlink) {
                (Some(s), false) => Some((issuer.as_str(), s.as_str())),
                _ => None,
            };
            admin::user_link(meta, &name, identity).await?;
            match identity {
                Some((i, s)) => println!("linked {name} to subject {s} of {i}"),
                None => println!("unlinked {name}"),
            }
        }
    }
    Ok(())
}

async fn admin_project(config: &Config, c: ProjectCommand) -> anyhow::Result<()> {
    let state = berth::state::AppState::from_config(config).await?;
    let meta = state.content.metadata().as_ref();
    match c {
        ProjectCommand::Create { name, public } => {
            admin::project_create(meta, &name, public).await?;
            println!("created project {name}");
        }
        ProjectCommand::List => admin::project_list(meta)
            .await?
            .iter()
            .for_each(|l| println!("{l}")),
        ProjectCommand::Visibility { name, visibility } => {
            admin::project_public(meta, &name, visibility == "public").await?
        }
        ProjectCommand::Member {
            project,
            user,
            role,
        } => admin::member_add(meta, &project, &user, &role).await?,
        ProjectCommand::Delete {
            name,
            with_repositories,
        } => {
            for r in admin::project_delete(meta, &name, with_repositories).await? {
                println!("deleted repository {r}");
            }
            println!("deleted project {name}");
        }
    }
    Ok(())
}

async fn admin_robot(config: &Config, c: RobotCommand) -> anyhow::Result<()> {
    let state = berth::state::AppState::from_config(config).await?;
    let meta = state.content.metadata().as_ref();
    let prefix = &config.auth.robot_prefix;
    match c {
        RobotCommand::Create {
            name,
            project,
            namespaces,
            access,
            days,
            description,
        } => {
            let (full, secret) = admin::robot_create(
                meta,
                prefix,
                &name,
                project.as_deref(),
                &namespaces,
                &access,
                days,
                &description,
            )
            .await?;
            println!("name: {full}");
            println!("secret: {secret}");
        }
        RobotCommand::List => admin::robot_list(meta, prefix)
            .await?
            .iter()
            .for_each(|l| println!("{l}")),
        RobotCommand::Refresh { name } => {
            println!(
                "secret: {}",
                admin::robot_refresh(meta, prefix, &name).await?
            );
        }
        RobotCommand::Disable { name } => admin::robot_disable(meta, prefix, &name, true).await?,
        RobotCommand::Enable { name } => admin::robot_disable(meta, prefix, &name, false).await?,
        RobotCommand::Delete { name } => admin::robot_delete(meta, prefix, &name).await?,
    }
    Ok(())
}

fn init_logging(config: &Config, to_stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // The admin commands print their answers on stdout, so their log goes to stderr; the
    // server's log stays on stdout.
    let writer = if to_stderr {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    };
    let ansi = if to_stderr {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
