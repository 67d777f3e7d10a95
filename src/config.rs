//! Typed configuration: defaults, then a TOML file (`--config`, or `BERTH_CONFIG`), then
//! `BERTH_*` environment variables, then command-line flags.
//!
//! Environment variables name a key by its path: `BERTH_LISTEN` is `listen`,
//! `BERTH_DATABASE__URL` is `database.url` (sections are joined with a double underscore).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub uploads: UploadsConfig,
    pub gc: GcConfig,
    pub tls: TlsConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub web: WebConfig,
    pub manifests: ManifestsConfig,
    pub metrics: MetricsConfig,
}

/// A configuration choice among fixed names: parsed once at load time into an enum, and
/// an unknown name is an error that lists the valid ones.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident at $key:literal { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// Every valid name, as the configuration spells it.
            pub const NAMES: &[&str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(s: String) -> Result<Self, String> {
                match s.as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "{} = {other:?} is not supported; use one of: {}",
                        $key,
                        Self::NAMES.join(", ")
                    )),
                }
            }
        }
    };
}

choice! {
    /// Where blobs are kept.
    StorageBackend at "storage.backend" { Fs = "fs", S3 = "s3" }
}

choice! {
    /// Who may do what: Berth's own users, robots and projects with its built-in token
    /// service (`builtin`), everyone everything (`none`), or the holders of bearer tokens of
    /// the Docker token authentication spec signed by an external issuer (`token`).
    AuthMode at "auth.mode" { Builtin = "builtin", None = "none", Token = "token" }
}

choice! {
    /// Who may create projects: system administrators only, or any signed-in user (who
    /// becomes its project admin). Harbor's `project_creation_restriction`.
    ProjectCreation at "auth.project_creation" { AdminOnly = "adminonly", Everyone = "everyone" }
}

choice! {
    /// How log lines are written.
    LogFormat at "log.format" { Text = "text", Json = "json" }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManifestsConfig {
    /// Accept image indexes whose child manifests are not all in the repository (sparse
    /// indexes, e.g. a mirror of some platforms only); every other rule still applies.
    pub sparse_indexes: bool,
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The password of the system administrator `admin`, set when the first server starts
    /// on an empty database; empty: one is generated and printed once in the log.
    pub admin_password: String,
    /// Who may create projects (`builtin` mode).
    pub project_creation: ProjectCreation,
    /// What robot account names start with (Harbor's `robot$`).
    pub robot_prefix: String,
    /// The built-in token service (`builtin` mode).
    pub service: crate::auth::builtin::ServiceConfig,
    /// Tokens from an external issuer (`token` mode).
    pub token: crate::auth::token::TokenConfig,
    /// Signing in with an OpenID Connect provider (`builtin` mode).
    pub oidc: crate::auth::oidc::OidcConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Builtin,
            admin_password: String::new(),
            project_creation: ProjectCreation::AdminOnly,
            robot_prefix: "robot$".into(),
            service: Default::default(),
            token: Default::default(),
            oidc: Default::default(),
        }
    }
}

/// The admin password stays out of any debug output.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field(
                "admin_password",
                &if self.admin_password.is_empty() {
                    ""
                } else {
                    "***"
                },
            )
            .field("project_creation", &self.project_creation)
            .field("robot_prefix", &self.robot_prefix)
            .field("service", &self.service)
            .field("token", &self.token)
            .field("oidc", &self.oidc)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER:PASS@HOST:PORT/DB`; empty means
    /// `sqlite://<data_dir>/berth.db`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Root of the filesystem store; empty means `<data_dir>/storage`.
    pub root: PathBuf,
    /// The filesystem store writes upload data with direct I/O (`O_DIRECT`) where the
    /// filesystem allows it; false: through the page cache.
    pub direct_io: bool,
    /// The filesystem store refuses new uploads (507) while less than this many bytes are
    /// free on its filesystem, so that the metadata database beside it keeps room; 0: only
    /// once it is full.
    pub min_free_bytes: u64,
    /// The S3 store's settings (`backend = "s3"`).
    pub s3: crate::storage::s3::S3Config,
}

/// Garbage collection (`berth gc`, and the schedule inside `berth serve`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// How often `berth serve` collects, in hours (0: never; one replica at a time).
    pub interval_hours: f64,
    /// Blobs touched more recently than this are spared (a push's time between a layer and
    /// its manifest).
    pub grace_seconds: u64,
    /// Scheduled runs also delete manifests no tag keeps.
    pub untagged: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval_hours: 0.0,
            grace_seconds: 3600,
            untagged: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// Upload sessions nobody has written to for this long are discarded, with their data.
    pub purge_after_seconds: u64,
    /// How often `berth serve` looks for such sessions (0: never; `berth gc` still does).
    pub purge_interval_seconds: u64,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            purge_after_seconds: 24 * 3600,
            purge_interval_seconds: 3600,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_manifest_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `berth=debug,tower_http=info`; `RUST_LOG` wins.
    pub level: String,
}

/// The web UI (`builtin` mode).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// How long a web session lasts, in hours (fractions allowed).
    pub session_hours: f64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            session_hours: 12.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace_seconds: u64,
    /// Send blob bytes straight from their files with `sendfile(2)` on plain-HTTP/1
    /// connections to the filesystem store (no copies through Berth's memory).
    pub sendfile: bool,
    /// Proxies in front of Berth whose `X-Forwarded-For` names the client (addresses or
    /// networks: `["10.0.0.0/8", "127.0.0.1"]`, or one comma-separated string from the
    /// environment). Failed logins are throttled per client address.
    pub trusted_proxies: ProxyList,
    /// How long a client has to send a request's whole header, from the moment its
    /// connection opens (after the TLS handshake, which has as long) or its previous
    /// response ends. nginx: `client_header_timeout`.
    pub header_read_timeout_seconds: u64,
    /// How long a connection may stay open with no request in flight (no longer than
    /// `header_read_timeout_seconds` in effect). nginx: `keepalive_timeout`.
    pub keepalive_timeout_seconds: u64,
    /// How long a request body may stop arriving before the request fails (an upload's
    /// session stays, at its last acknowledged offset, for the client to resume). nginx:
    /// `client_body_timeout`.
    pub body_timeout_seconds: u64,
    /// The most client connections open at once; more are closed as soon as they are
    /// accepted. 0: three quarters of the open-file limit. nginx: `worker_connections`.
    pub max_connections: usize,
    /// Log `/healthz`, `/readyz` and `/metrics` requests like any other.
    pub log_probes: bool,
}

/// Prometheus metrics (`/metrics`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Serve `/metrics` on this address only (e.g. `127.0.0.1:9090`), not on the main port;
    /// empty: on the main port.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: String::new(),
        }
    }
}

/// Addresses and networks, from a list or a comma-separated string; a bare address is a
/// network of one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyList(pub Vec<ipnet::IpNet>);

impl<'de> Deserialize<'de> for ProxyList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Text(String),
        }
        let items = match Form::deserialize(d)? {
            Form::List(items) => items,
            Form::Text(text) => text.split(',').map(str::to_string).collect(),
        };
        items
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        serde::de::Error::custom(format!(
                            "{s:?} is not an IP address or network (like 10.0.0.0/8)"
                        ))
                    })
            })
            .collect::<Result<_, _>>()
            .map(ProxyList)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:5000".parse().expect("static address"),
            data_dir: PathBuf::from("./data"),
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            uploads: UploadsConfig::default(),
            gc: GcConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            web: WebConfig::default(),
            manifests: ManifestsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            max_connections: 16,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Fs,
            root: PathBuf::new(),
            direct_io: true,
            min_free_bytes: 64 * 1024 * 1024,
            s3: Default::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_grace_seconds: 30,
            sendfile: true,
            trusted_proxies: ProxyList::default(),
            header_read_timeout_seconds: 30,
            keepalive_timeout_seconds: 75,
            body_timeout_seconds: 60,
            max_connections: 0,
            log_probes: false,
        }
    }
}

impl Config {
    /// Loads the file (if any) and applies `BERTH_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            let Some(path) = key.strip_prefix("BERTH_") else {
                continue;
            };
            // BERTH_CONFIG names the file; BERTH_NEW_PASSWORD is the admin CLI's
            // `--password`; BERTH_TEST_* belongs to the test harness.
            if path == "CONFIG"
                || path == "NEW_PASSWORD"
                || path.is_empty()
                || path.starts_with("TEST_")
            {
                continue;
            }
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            set_path(&mut table, &parts, parse_scalar(&value))
                .with_context(|| format!("environment variable {key}"))?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration (see config/berth.toml for every key)")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.storage.backend == StorageBackend::S3 {
            self.storage.s3.validate()?;
        }
        if self.tls.cert.as_os_str().is_empty() != self.tls.key.as_os_str().is_empty() {
            bail!("tls.cert and tls.key must be set together");
        }
        self.auth.oidc.validate()?;
        // At least a second, at most ten years.
        if !(self.web.session_hours >= 1.0 / 3600.0 && self.web.session_hours <= 87_600.0) {
            bail!("web.session_hours must be between 1/3600 (one second) and 87600 (ten years)");
        }
        let s = &self.server;
        for (key, v) in [
            ("header_read_timeout_seconds", s.header_read_timeout_seconds),
            ("keepalive_timeout_seconds", s.keepalive_timeout_seconds),
            ("body_timeout_seconds", s.body_timeout_seconds),
        ] {
            if v == 0 {
                bail!("server.{key} must be positive");
            }
        }
        if !self.metrics.listen.is_empty() {
            self.metrics_listen()?;
        }
        if !(self.gc.interval_hours >= 0.0 && self.gc.interval_hours <= 87_600.0) {
            bail!("gc.interval_hours must be between 0 (never) and 87600");
        }
        if self.limits.max_manifest_bytes == 0 {
            bail!("limits.max_manifest_bytes must be positive");
        }
        Ok(())
    }

    /// The separate address `/metrics` is served on, if any.
    pub fn metrics_listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.metrics.listen.is_empty() || !self.metrics.enabled {
            return Ok(None);
        }
        self.metrics.listen.parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "metrics.listen = {:?} is not an address (like 127.0.0.1:9090)",
                self.metrics.listen
            )
        })
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("berth.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// Where blobs go, for the start-up log line.
    pub fn storage_description(&self) -> String {
        if self.storage.backend == StorageBackend::S3 {
            let s3 = &self.storage.s3;
            format!(
                "s3://{}/{}{}",
                s3.bucket,
                s3.prefix,
                if s3.endpoint.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", s3.endpoint)
                }
            )
        } else {
            self.storage_root().display().to_string()
        }
    }

    pub fn storage_root(&self) -> PathBuf {
        if self.storage.root.as_os_str().is_empty() {
            self.data_dir.join("storage")
        } else {
            self.storage.root.clone()
        }
    }

    pub fn tls_enabled(&self) -> bool {
        !self.tls.cert.as_os_str().is_empty()
    }
}

/// Environment values are typed the way TOML would read them when they look like a number
/// or a boolean, and are strings otherwise.
fn parse_scalar(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if v.contains('.') {
        if let Ok(f) = v.parse::<f64>() {
            if f.is_finite() {
                return toml::Value::Float(f);
            }
        }
    }
    match v {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(v.to_string()),
    }
}

fn set_path(table: &mut toml::Table, parts: &[String], value: toml::Value) -> anyhow::Result<()> {
    match parts {
        [] => Ok(()),
        [last] => {
            // Keys that are strings in the schema stay strings even if they look numeric.
            let value = match (table.get(last), value) {
                (Some(toml::Value::String(_)), v) => toml::Value::String(scalar_text(&v)),
                (_, v) => v,
            };
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => bail!("{first} is not a section"),
            }
        }
    }
}

fn scalar_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.listen.port(), 5000);
        assert_eq!(c.database_url(), "sqlite://./data/berth.db");
        assert_eq!(c.storage_root(), PathBuf::from("./data/storage"));
    }

    #[test]
    fn environment_overrides() {
        let env = vec![
            ("BERTH_LISTEN".to_string(), "127.0.0.1:6000".to_string()),
            (
                "BERTH_DATABASE__URL".to_string(),
                "postgres://x@y/z".to_string(),
            ),
            (
                "BERTH_LIMITS__MAX_MANIFEST_BYTES".to_string(),
                "1024".to_string(),
            ),
            ("OTHER".to_string(), "ignored".to_string()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:6000");
        assert_eq!(c.database_url(), "postgres://x@y/z");
        assert_eq!(c.limits.max_manifest_bytes, 1024);
    }

    #[test]
    fn session_hours_take_fractions_and_refuse_nonsense() {
        let hours = |v: &str| {
            Config::load(None, vec![("BERTH_WEB__SESSION_HOURS".into(), v.into())])
                .map(|c| c.web.session_hours)
        };
        assert_eq!(hours("0.5").unwrap(), 0.5);
        assert_eq!(hours("24").unwrap(), 24.0);
        for bad in ["0", "-1", "0.0001", "100000", "soon"] {
            assert!(hours(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_from_a_list_or_a_comma_separated_string() {
        let env = vec![(
            "BERTH_SERVER__TRUSTED_PROXIES".to_string(),
            "10.0.0.0/8, 127.0.0.1,::1".to_string(),
        )];
        let c = Config::load(None, env).unwrap();
        let want: Vec<ipnet::IpNet> = ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(c.server.trusted_proxies.0, want);
        let env = vec![(
            "BERTH_SERVER__TRUSTED_PROXIES".to_string(),
            "10.0.0.0/8,proxy.local".to_string(),
        )];
        let err = format!("{:#}", Config::load(None, env).unwrap_err());
        assert!(
            err.contains("\"proxy.local\" is not an IP address"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let env = vec![("BERTH_NOPE".to_string(), "1".to_string())];
        assert!(Config::load(None, env).is_err());
    }

    #[test]
    fn auth_modes_other_than_none_and_token_are_errors() {
        let env = vec![("BERTH_AUTH__MODE".to_string(), "ldap".to_string())];
        let err = Config::load(None, env).unwrap_err();
        assert!(format!("{err:#}").contains("auth.mode"), "{err:#}");
        let env = vec![
            ("BERTH_AUTH__MODE".to_string(), "token".to_string()),
            (
                "BERTH_AUTH__TOKEN__PUBLIC_KEYS".to_string(),
                "/a.pem, /b.pem".to_string(),
            ),
        ];
        let config = Config::load(None, env).unwrap();
        assert_eq!(
            config.auth.token.public_keys,
            vec![PathBuf::from("/a.pem"), PathBuf::from("/b.pem")]
        );
    }

    #[test]
    fn unknown_choices_are_errors_that_list_the_valid_ones() {
        for (var, value, want) in [
            (
                "BERTH_STORAGE__BACKEND",
                "gcs",
                "storage.backend = \"gcs\" is not supported; use one of: fs, s3",
            ),
            (
                "BERTH_AUTH__MODE",
                "ldap",
                "auth.mode = \"ldap\" is not supported; use one of: builtin, none, token",
            ),
            (
                "BERTH_LOG__FORMAT",
                "xml",
                "log.format = \"xml\" is not supported; use one of: text, json",
            ),
        ] {
            let err = Config::load(None, vec![(var.to_string(), value.to_string())]).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{var}: {err:#}");
        }
        let c = Config::load(
            None,
            vec![
                ("BERTH_LOG__FORMAT".to_string(), "json".to_string()),
                (
                    "BERTH_MANIFESTS__SPARSE_INDEXES".to_string(),
                    "true".to_string(),
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.storage.backend, StorageBackend::Fs);
        assert_eq!(c.auth.mode, AuthMode::Builtin, "secure by default");
        assert_eq!(c.auth.robot_prefix, "robot$");
        assert!(c.manifests.sparse_indexes);
    }

    #[test]
    fn shipped_config_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/berth.toml");
        Config::load(Some(&path), Vec::new()).unwrap();
    }
}
