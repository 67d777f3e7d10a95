//! Test harness: runs the real `berth` binary on a free loopback port with its own data
//! directory (and, when asked, its own PostgreSQL database), and talks to it over HTTP.
#![allow(dead_code)]

/// Real container clients: time-limited commands, private podman/skopeo state, containerd.
pub mod containers;
/// Token signing keys made with openssl, and a server in token mode trusting them.
pub mod keys;
/// The test OpenID Connect provider and the Chromium driver (tests/oidc).
pub mod oidc;
pub mod web;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub use sha2::Digest as _;

#[macro_use]
mod registry_client;
pub use registry_client::*;

/// How a test server is set up.
#[derive(Default, Clone)]
pub struct Options {
    /// `None`: embedded SQLite in the data dir.
    pub database_url: Option<String>,
    /// `None`: a fresh temporary directory.
    pub data_dir: Option<PathBuf>,
    /// Blob store root; `None`: inside the data dir.
    pub storage_root: Option<PathBuf>,
    /// Extra environment (e.g. `BERTH_LIMITS__MAX_MANIFEST_BYTES`).
    pub env: Vec<(String, String)>,
    /// PEM certificate and key for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Keep blobs in the S3 server the test command starts (`BERTH_TEST_S3_ENDPOINT`)
    /// instead of the filesystem. `BERTH_TEST_BACKEND=s3` makes it the default for every
    /// server a test starts.
    pub s3: bool,
    /// The bucket, when servers should share one (replicas); `None`: a new bucket.
    pub s3_bucket: Option<String>,
}

/// The settings that put a server's (or the CLI's) blobs in `bucket` on the test S3 server.
pub fn s3_env(bucket: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BERTH_STORAGE__BACKEND", "s3".into()),
        ("BERTH_STORAGE__S3__BUCKET", bucket.into()),
        ("BERTH_STORAGE__S3__ENDPOINT", s3_endpoint()),
        ("BERTH_STORAGE__S3__FORCE_PATH_STYLE", "true".into()),
        ("BERTH_STORAGE__S3__REGION", "us-east-1".into()),
        ("BERTH_STORAGE__S3__ACCESS_KEY_ID", "test".into()),
        ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", "test".into()),
        (
            "BERTH_STORAGE__S3__PART_SIZE",
            (5 * 1024 * 1024).to_string(),
        ),
    ]
}

/// Whether this test run keeps blobs in S3 (`BERTH_TEST_BACKEND=s3`).
pub fn s3_by_default() -> bool {
    std::env::var("BERTH_TEST_BACKEND").is_ok_and(|v| v == "s3")
}

fn s3_endpoint() -> String {
    std::env::var("BERTH_TEST_S3_ENDPOINT").expect(
        "BERTH_TEST_S3_ENDPOINT is not set: run the tests through scripts/test.sh, which starts an S3 server",
    )
}

/// A client for the test S3 server (any key and secret will do).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Deterministic, incompressible-looking test bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs an S3 call on a runtime of its own (the harness's helpers are synchronous).
fn s3_blocking<T, F>(f: impl FnOnce(aws_sdk_s3::Client) -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move { f(s3_client(&s3_endpoint())).await })
    })
    .join()
    .expect("S3 helper thread")
}

/// Every key in `bucket`, and `<key> (multipart)` for each unfinished multipart upload.
pub fn s3_keys(bucket: &str) -> Vec<String> {
    let bucket = bucket.to_string();
    s3_blocking(move |c| async move {
        let mut keys = Vec::new();
        let objects = c
            .list_objects_v2()
            .bucket(&bucket)
            .send()
            .await
            .expect("list objects");
        for o in objects.contents() {
            keys.push(o.key().unwrap_or_default().to_string());
        }
        let uploads = c
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .expect("list multipart uploads");
        for u in uploads.uploads() {
            keys.push(format!("{} (multipart)", u.key().unwrap_or_default()));
        }
        keys.sort();
        keys
    })
}

pub struct Berth {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (or https).
    pub base: String,
    pub data_dir: PathBuf,
    pub options: Options,
    child: Child,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Berth {
    /// A server on the embedded defaults (SQLite + filesystem in a temp dir).
    pub fn start() -> Berth {
        Berth::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Berth {
        let (tmp, data_dir) = match &options.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir().expect("temp dir");
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let log = data_dir.join(format!("berth-{}.log", uuid_like()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("BERTH_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The test command's own settings (`BERTH_TEST_POSTGRES_URL`, ...) are not server
        // configuration, and the server refuses unknown `BERTH_*` keys.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BERTH_TEST_") {
                cmd.env_remove(key);
            }
        }
        if let Some(url) = &options.database_url {
            cmd.env("BERTH_DATABASE__URL", url);
        }
        if let Some(root) = &options.storage_root {
            cmd.env("BERTH_STORAGE__ROOT", root);
        }
        if let Some((cert, key)) = &options.tls {
            cmd.env("BERTH_TLS__CERT", cert).env("BERTH_TLS__KEY", key);
        }
        let mut options = options;
        if options.s3 || s3_by_default() {
            let bucket = options.s3_bucket.clone().unwrap_or_else(|| {
                // Servers that share a storage root (replicas) share a bucket.
                // So do restarts on one data directory.
                let name = match options.storage_root.as_ref().or(options.data_dir.as_ref()) {
                    Some(root) => format!(
                        "berth-shared-{}",
                        &sha256(root.to_string_lossy().as_bytes())[7..23]
                    ),
                    None => format!("berth-test-{}", uuid_like()),
                };
                let create = name.clone();
                s3_blocking(move |c| async move {
                    if let Err(e) = c.create_bucket().bucket(&create).send().await {
                        use aws_sdk_s3::error::ProvideErrorMetadata;
                        let code = e.code().unwrap_or_default().to_string();
                        assert!(
                            code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists",
                            "create test bucket {create}: {e:?}"
                        );
                    }
                });
                name
            });
            cmd.envs(s3_env(&bucket));
            options.s3 = true;
            options.s3_bucket = Some(bucket);
        }
        // The protocol tests speak to an open registry unless they ask for another mode
        // (`auth.mode` in `options.env`, which is applied after this).
        cmd.env("BERTH_AUTH__MODE", "none");
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn berth");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).ok();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if line.contains("listening") {
                    // Text logs say `addr=HOST:PORT`, JSON logs `"addr":"HOST:PORT"`.
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .or_else(|| {
                            line.split("\"addr\":\"")
                                .nth(1)
                                .and_then(|r| r.split('"').next())
                        });
                    if let Some(addr) = addr {
                        let _ = tx.send(addr.to_string());
                    }
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("berth stderr: {line}");
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "berth did not start within 60s; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Berth {
            addr,
            base: format!("{scheme}://{addr}"),
            data_dir,
            options,
            child,
            log,
            _tmp: tmp,
        }
    }

    /// `host:port`, as clients such as skopeo and podman want it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The blob store root.
    pub fn storage_root(&self) -> PathBuf {
        self.options
            .storage_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("storage"))
    }

    /// Where a committed blob lives in the filesystem store.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').expect("digest");
        self.storage_root()
            .join("blobs")
            .join(alg)
            .join(&hex[..2])
            .join(hex)
    }

    /// Files currently under `uploads/` in the store (S3: keys, and unfinished multipart
    /// uploads, as paths under `storage_root()`).
    pub fn upload_files(&self) -> Vec<PathBuf> {
        match &self.options.s3_bucket {
            Some(bucket) => self.s3_paths(bucket, "uploads/"),
            None => list_files(&self.storage_root().join("uploads")),
        }
    }

    /// Files currently under `blobs/` in the store (S3: keys, as paths under
    /// `storage_root()`, so they compare equal to `blob_path`).
    pub fn blob_files(&self) -> Vec<PathBuf> {
        match &self.options.s3_bucket {
            Some(bucket) => self.s3_paths(bucket, "blobs/"),
            None => list_files(&self.storage_root().join("blobs")),
        }
    }

    /// A committed blob's bytes as the store holds them (file or object).
    pub fn stored_blob(&self, digest: &str) -> Vec<u8> {
        match &self.options.s3_bucket {
            Some(bucket) => {
                let (alg, hex) = digest.split_once(':').expect("digest");
                let (bucket, key) = (bucket.clone(), format!("blobs/{alg}/{}/{hex}", &hex[..2]));
                s3_blocking(move |c| async move {
                    let o = c
                        .get_object()
                        .bucket(&bucket)
                        .key(&key)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("no object {key}: {e:?}"));
                    o.body.collect().await.expect("object body").to_vec()
                })
            }
            None => std::fs::read(self.blob_path(digest))
                .unwrap_or_else(|e| panic!("no blob file for {digest}: {e}")),
        }
    }

    pub fn stored_blob_len(&self, digest: &str) -> u64 {
        match &self.options.s3_bucket {
            Some(_) => self.stored_blob(digest).len() as u64,
            None => std::fs::metadata(self.blob_path(digest))
                .unwrap_or_else(|e| panic!("no blob file for {digest}: {e}"))
                .len(),
        }
    }

    fn s3_paths(&self, bucket: &str, prefix: &str) -> Vec<PathBuf> {
        s3_keys(bucket)
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .map(|k| self.storage_root().join(k))
            .collect()
    }

    /// `berth ARGS` (the admin CLI) on this server's database, with built-in accounts.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_command(args).output().expect("run the berth CLI")
    }

    /// The command [`Berth::cli`] runs, to be started (and killed) by the test itself.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args(args)
            .env_remove("BERTH_CONFIG")
            .env("BERTH_DATA_DIR", &self.data_dir)
            .env("BERTH_AUTH__MODE", "builtin")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null());
        // The test command's own settings are not configuration; the CLI refuses them.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("BERTH_TEST_") {
                cmd.env_remove(key);
            }
        }
        if let Some(url) = &self.options.database_url {
            cmd.env("BERTH_DATABASE__URL", url);
        }
        // The server's blob store, for commands that reach it (gc).
        if let Some(root) = &self.options.storage_root {
            cmd.env("BERTH_STORAGE__ROOT", root);
        }
        if let (true, Some(bucket)) = (self.options.s3, &self.options.s3_bucket) {
            cmd.envs(s3_env(bucket));
        }
        cmd
    }

    /// `berth ARGS`, which must succeed; returns its stdout.
    #[track_caller]
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berth robot create ARGS`; returns the robot's full name and its secret.
    #[track_caller]
    pub fn create_robot(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["robot", "create"];
        all.extend_from_slice(args);
        let out = self.cli_ok(&all);
        (printed(&out, "name"), printed(&out, "secret"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for berth")
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The PostgreSQL server the test command started (`BERTH_TEST_POSTGRES_URL`). Tests
/// that need it fail, rather than skip, without it: run them through `scripts/test.sh`.
pub fn postgres_admin_url() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("BERTH_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    })
}

/// Creates a fresh, empty PostgreSQL database for one test and returns its URL.
pub async fn fresh_postgres_db() -> String {
    use sqlx::Connection;
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to test PostgreSQL");
    let name = format!("berth_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{name}")
}

/// Settings for replicas: servers on one fresh PostgreSQL database sharing a data
/// directory and a storage root in the returned temporary directory (keep it while they run).
pub async fn replica_options() -> (Options, tempfile::TempDir) {
    let url = fresh_postgres_db().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        database_url: Some(url),
        data_dir: Some(dir.path().to_path_buf()),
        storage_root: Some(dir.path().join("storage")),
        ..Options::default()
    };
    (options, dir)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

/// Pushes a blob monolithically (POST with ?digest=); returns its digest.
pub async fn push_blob(c: &impl Http, b: &Berth, repo: &str, bytes: &[u8]) -> String {
    push_blob_as(c, b, repo, bytes, sha256(bytes)).await
}

/// Pushes a blob monolithically under `digest` and asserts the 201.
async fn push_blob_as(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    bytes: &[u8],
    digest: String,
) -> String {
    let r = c
        .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("push blob");
    assert_eq!(
        r.status(),
        201,
        "pushing blob {digest}: {:?}",
        r.text().await
    );
    digest
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An OCI image manifest over a config and layers already pushed: `(media type, digest, size)`.
pub fn image_manifest(config: (&str, &str, usize), layers: &[(&str, &str, usize)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": config.0, "digest": config.1, "size": config.2 },
        "layers": layers.iter().map(|(m, d, s)| serde_json::json!({"mediaType": m, "digest": d, "size": s})).collect::<Vec<_>>(),
    }))
    .expect("json")
}

/// The config blob of the images [`push_image`] pushes.
pub const IMAGE_CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux"}"#;

/// The image manifest [`push_image`] pushes over `layer`.
pub fn image_over_layer(layer: &[u8]) -> Vec<u8> {
    image_manifest(
        (OCI_CONFIG, &sha256(IMAGE_CONFIG), IMAGE_CONFIG.len()),
        &[(OCI_LAYER, &sha256(layer), layer.len())],
    )
}

/// Pushes a small image (config + one layer) and tags it; returns the manifest's digest and bytes.
pub async fn push_image(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    tag: &str,
    layer: &[u8],
) -> (String, Vec<u8>) {
    push_blob(c, b, repo, IMAGE_CONFIG).await;
    push_blob(c, b, repo, layer).await;
    let m = image_over_layer(layer);
    let r = c
        .put(b.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .expect("push manifest");
    assert_eq!(r.status(), 201, "pushing manifest: {:?}", r.text().await);
    (sha256(&m), m)
}

/// The manifest of an image over `config` and `layers` (OCI media types).
pub fn layered_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    let digests: Vec<(String, usize)> = layers.iter().map(|l| (sha256(l), l.len())).collect();
    let refs: Vec<(&str, &str, usize)> = digests
        .iter()
        .map(|(d, n)| (OCI_LAYER, d.as_str(), *n))
        .collect();
    image_manifest((OCI_CONFIG, &sha256(config), config.len()), &refs)
}

/// Pushes `config`, `layers` and the manifest over them as `repo:tag`; the manifest's
/// digest and bytes.
pub async fn push_layered(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> (String, Vec<u8>) {
    push_blob(c, b, repo, config).await;
    for l in layers {
        push_blob(c, b, repo, l).await;
    }
    let m = layered_manifest(config, layers);
    let r = c
        .put(b.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .expect("push manifest");
    assert_eq!(
        r.status(),
        201,
        "pushing {repo}:{tag}: {:?}",
        r.text().await
    );
    (sha256(&m), m)
}

/// The value of the unlabelled series `name` on the server's `/metrics`.
pub async fn metric_value(c: &reqwest::Client, b: &Berth, name: &str) -> Option<f64> {
    let text = c
        .get(b.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// The `errors[0].code` of an error response body.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: serde_json::Value = r.json().await.expect("error body is JSON");
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, made with openssl
/// (webpki-based clients refuse a self-signed CA certificate used as the server's).
pub struct TestCert {
    /// The CA certificate clients should trust.
    pub ca: PathBuf,
    /// The server's certificate chain and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |n: &str| dir.path().join(n);
        let ext = p("ext.cnf");
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        let run = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(status.success(), "openssl {args:?} failed");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Berth test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]);
        TestCert {
            ca: p("ca.pem"),
            cert: p("cert.pem"),
            key: p("key.pem"),
            _dir: dir,
        }
    }
}

// ---- Helpers for the spec-rule tests (tests/spec_*.rs) ----

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The value of the `key: value` line the CLI prints (`berth robot create|refresh`).
#[track_caller]
pub fn printed(stdout: &str, key: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:` line in {stdout:?}"))
        .trim()
        .to_string()
}

/// An `Accept` header value naming every manifest type: OCI image and index, Docker
/// schema 2 and manifest list.
pub fn accept_any_manifest() -> String {
    format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}")
}

/// `GET /v2/<repo>/manifests/<reference>` accepting every manifest type.
pub async fn get_any_manifest(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    reference: &str,
) -> reqwest::Response {
    c.get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", accept_any_manifest())
        .send()
        .await
        .expect("GET manifest")
}

/// A response header as text, or `""` when it is absent.
pub fn header_str(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Asserts `Docker-Distribution-API-Version: registry/2.0`, which every response carries.
pub fn assert_api_version(r: &reqwest::Response) {
    assert_eq!(
        header_str(r, "docker-distribution-api-version"),
        "registry/2.0",
        "{} {} lacks Docker-Distribution-API-Version",
        r.status(),
        r.url()
    );
}

/// Asserts an error response: its status, the API version header, a JSON body of the
/// spec's form `{"errors":[{"code":..,"message":..}]}` with `code` first and a message a
/// person can read; returns the message.
pub async fn expect_error(r: reqwest::Response, status: u16, code: &str) -> String {
    let url = r.url().clone();
    assert_eq!(r.status(), status, "status of {url}");
    assert_api_version(&r);
    let content_type = header_str(&r, "content-type");
    let text = r.text().await.expect("error body");
    error_message(&format!("error from {url}"), &content_type, &text, code)
}

/// Checks an error body of the spec's form (JSON, `code` first, a message a person can
/// read) with `code`; returns the message. `context` says whose body it is.
fn error_message(context: &str, content_type: &str, text: &str, code: &str) -> String {
    assert!(
        content_type.starts_with("application/json"),
        "{context} has Content-Type {content_type:?}"
    );
    let v: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{context}: body {text:?} is not JSON: {e}"));
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{context}: body {text} has no errors array"));
    assert!(
        !errors.is_empty(),
        "{context}: body {text} has an empty errors array"
    );
    assert_eq!(errors[0]["code"], code, "{context}: {text}");
    let message = errors[0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: body {text} has no message"));
    assert!(
        message.len() > 10,
        "{context}: message {message:?} is too terse to act on"
    );
    message.to_string()
}

/// Turns a `Location` header (absolute, or a path on the registry) into a URL.
pub fn location_url(b: &Berth, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        b.url(location)
    }
}

/// Adds `key=value` to a URL's query.
pub fn with_query(url: &str, kv: &str) -> String {
    format!("{url}{}{kv}", if url.contains('?') { '&' } else { '?' })
}

/// Opens an upload session (`POST /v2/<repo>/blobs/uploads/`); returns its Location as a URL.
pub async fn open_upload(c: &impl Http, b: &Berth, repo: &str) -> String {
    let r = c
        .post(b.url(&format!("/v2/{repo}/blobs/uploads/")))
        .header("content-length", "0")
        .send()
        .await
        .expect("open upload");
    assert_eq!(r.status(), 202, "opening an upload in {repo}");
    let location = header_str(&r, "location");
    assert!(!location.is_empty(), "upload session without Location");
    location_url(b, &location)
}

/// Pushes a blob monolithically under its sha512 digest; returns that digest.
pub async fn push_blob_sha512(c: &impl Http, b: &Berth, repo: &str, bytes: &[u8]) -> String {
    push_blob_as(c, b, repo, bytes, sha512(bytes)).await
}

/// `PUT /v2/<repo>/manifests/<reference>` with `content_type`.
pub async fn put_manifest_as(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &[u8],
) -> reqwest::Response {
    c.put(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("put manifest")
}

/// The status of `GET /v2/<repo>/manifests/<reference>`.
pub async fn manifest_status(c: &impl Http, b: &Berth, repo: &str, reference: &str) -> u16 {
    c.get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .send()
        .await
        .expect("get manifest")
        .status()
        .as_u16()
}

/// The status of `GET /v2/<repo>/blobs/<digest>`.
pub async fn blob_status(c: &impl Http, b: &Berth, repo: &str, digest: &str) -> u16 {
    c.get(b.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("get blob")
        .status()
        .as_u16()
}

/// A repository's tags through the tags list API; `None` when it answers 404.
pub async fn tags_of(c: &impl Http, b: &Berth, repo: &str) -> Option<Vec<String>> {
    let r = c
        .get(b.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .expect("tags list");
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200, "tags list of {repo}");
    let v: serde_json::Value = r.json().await.expect("tags list JSON");
    Some(
        v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// Every repository in `/v2/_catalog`.
pub async fn catalog_of(c: &impl Http, b: &Berth) -> Vec<String> {
    let r = c.get(b.url("/v2/_catalog")).send().await.expect("catalog");
    assert_eq!(r.status(), 200, "catalog");
    let v: serde_json::Value = r.json().await.expect("catalog JSON");
    v["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// What both stores hold, as far as the API and the filesystem show it.
#[derive(Debug, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// Each repository in the catalog, with each tag and the digest it resolves to.
    pub repositories: Vec<(String, Vec<(String, String)>)>,
    pub blob_files: Vec<PathBuf>,
    pub upload_files: Vec<PathBuf>,
}

pub async fn store_snapshot(c: &impl Http, b: &Berth) -> StoreSnapshot {
    let mut repositories = Vec::new();
    for repo in catalog_of(c, b).await {
        let mut tags = Vec::new();
        for tag in tags_of(c, b, &repo).await.unwrap_or_default() {
            let r = c
                .head(b.url(&format!("/v2/{repo}/manifests/{tag}")))
                .send()
                .await
                .expect("head manifest");
            tags.push((tag, header_str(&r, "docker-content-digest")));
        }
        repositories.push((repo, tags));
    }
    StoreSnapshot {
        repositories,
        blob_files: b.blob_files(),
        upload_files: b.upload_files(),
    }
}

/// A registry holding one tagged image (`app:v1`, over [`IMAGE_CONFIG`] and the layer
/// `b"layer"`) in `auth`'s mode (the project `app` exists, and `extra` too); returns the
/// image manifest's digest.
pub async fn seeded(auth: Auth, extra: &[&str]) -> (Berth, RegistryClient, String) {
    let projects = projects_of(std::iter::once("app").chain(extra.iter().copied()));
    let (b, c) = auth.start(&projects).await;
    let (digest, _) = push_image(&c, &b, "app", "v1", b"layer").await;
    (b, c, digest)
}

/// Asserts that an upload session is gone: status, PATCH, PUT and DELETE all answer
/// `404 BLOB_UPLOAD_UNKNOWN`. `context` names the case.
pub async fn assert_upload_unknown(c: &impl Http, url: &str, context: &str) {
    let close = with_query(url, &format!("digest={}", sha256(b"abc")));
    for (method, url, range) in [
        (reqwest::Method::GET, url, None),
        (reqwest::Method::PATCH, url, Some("0-2")),
        (reqwest::Method::PUT, close.as_str(), None),
        (reqwest::Method::DELETE, url, None),
    ] {
        let mut rq = c.request(method.clone(), url);
        if method == reqwest::Method::PATCH || method == reqwest::Method::PUT {
            rq = rq.body(b"abc".to_vec());
        }
        if let Some(range) = range {
            rq = rq.header("content-range", range);
        }
        let r = rq.send().await.expect("request to an upload session");
        assert_eq!(
            r.status(),
            404,
            "case {context}: {method} on a session that is gone"
        );
        expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
}

/// What a refused request's response must say in a header.
pub enum HeaderIs {
    Absent,
    Present,
    Eq(String),
}

/// A request the registry must refuse, and the answer it must give; the tables of
/// `tests/spec_*.rs` list these and run them with [`assert_refused`] or [`refuse_all`].
pub struct Refusal {
    /// Printed when the case fails.
    pub name: String,
    pub method: reqwest::Method,
    /// A path on the registry, or a whole URL.
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<reqwest::Body>,
    /// The status, or any of these when the spec leaves the choice open.
    pub statuses: Vec<u16>,
    /// The spec's error code; `None`: the body is not looked at (after HEAD it is empty).
    pub code: Option<&'static str>,
    /// Each must be in the error message; `"a|b"`: either.
    pub says: Vec<String>,
    /// The error's `detail`, when the case says what it must be.
    pub detail: Option<serde_json::Value>,
    pub answers: Vec<(&'static str, HeaderIs)>,
    /// Registry paths that must answer a GET with 404 afterwards.
    pub gone: Vec<String>,
}

impl Refusal {
    /// `method url` refused with `status` and the error `code`.
    pub fn new(
        name: impl Into<String>,
        method: reqwest::Method,
        url: impl Into<String>,
        status: u16,
        code: &'static str,
    ) -> Refusal {
        Refusal {
            name: name.into(),
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            statuses: vec![status],
            code: Some(code),
            says: Vec::new(),
            detail: None,
            answers: Vec::new(),
            gone: Vec::new(),
        }
    }

    /// `method url` answered with `status` only: no error code is asked for.
    pub fn status(
        name: impl Into<String>,
        method: reqwest::Method,
        url: impl Into<String>,
        status: u16,
    ) -> Refusal {
        Refusal {
            code: None,
            ..Refusal::new(name, method, url, status, "")
        }
    }

    /// `PUT /v2/<repo>/manifests/<reference>` of `body` as `content_type`, refused with
    /// `status` and `code`.
    pub fn manifest(
        name: impl Into<String>,
        repo: &str,
        reference: &str,
        content_type: &str,
        body: &[u8],
        status: u16,
        code: &'static str,
    ) -> Refusal {
        Refusal::new(
            name,
            reqwest::Method::PUT,
            format!("/v2/{repo}/manifests/{reference}"),
            status,
            code,
        )
        .header("content-type", content_type)
        .body(body.to_vec())
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Refusal {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Refusal {
        self.body = Some(body.into());
        self
    }

    pub fn or_status(mut self, status: u16) -> Refusal {
        self.statuses.push(status);
        self
    }

    pub fn says(mut self, text: impl Into<String>) -> Refusal {
        self.says.push(text.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Refusal {
        self.detail = Some(detail);
        self
    }

    pub fn answers(mut self, header: &'static str, is: HeaderIs) -> Refusal {
        self.answers.push((header, is));
        self
    }

    pub fn gone(mut self, path: impl Into<String>) -> Refusal {
        self.gone.push(path.into());
        self
    }
}

/// Sends the refused request and asserts the answer the case asks for.
pub async fn assert_refused(c: &impl Http, b: &Berth, case: Refusal) {
    let Refusal {
        name,
        method,
        url,
        headers,
        body,
        statuses,
        code,
        says,
        detail,
        answers,
        gone,
    } = case;
    let context = format!("case {name} ({method} {url})");
    let mut rq = c.request(method.clone(), location_url(b, &url));
    for (k, v) in &headers {
        rq = rq.header(*k, v);
    }
    if let Some(body) = body {
        rq = rq.body(body);
    }
    let r = rq.send().await.unwrap_or_else(|e| panic!("{context}: {e}"));
    assert!(
        statuses.contains(&r.status().as_u16()),
        "{context}: status {} is not one of {statuses:?}",
        r.status()
    );
    assert_eq!(
        header_str(&r, "docker-distribution-api-version"),
        "registry/2.0",
        "{context}: no Docker-Distribution-API-Version"
    );
    for (header, is) in &answers {
        let value = r.headers().get(*header).map(|v| v.to_str().unwrap_or("?"));
        match is {
            HeaderIs::Absent => assert_eq!(value, None, "{context}: {header}"),
            HeaderIs::Present => assert!(
                value.is_some_and(|v| !v.is_empty()),
                "{context}: no {header} header"
            ),
            HeaderIs::Eq(want) => assert_eq!(value, Some(want.as_str()), "{context}: {header}"),
        }
    }
    let content_type = header_str(&r, "content-type");
    let text = r.text().await.expect("response body");
    if method == reqwest::Method::HEAD {
        assert!(text.is_empty(), "{context}: a HEAD answer has a body");
    }
    if let Some(code) = code {
        let message = error_message(&context, &content_type, &text, code);
        for needle in &says {
            assert!(
                needle.split('|').any(|n| message.contains(n)),
                "{context}: the message {message:?} does not say {needle:?}"
            );
        }
        if let Some(detail) = detail {
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(v["errors"][0]["detail"], detail, "{context}: detail");
        }
    }
    for path in gone {
        let r = c.get(b.url(&path)).send().await.expect("GET after refusal");
        assert_eq!(r.status(), 404, "{context}: {path} afterwards");
    }
}

/// Sends each refused request in turn; after each, neither store holds anything new.
pub async fn refuse_all(c: &impl Http, b: &Berth, cases: Vec<Refusal>) {
    let before = store_snapshot(c, b).await;
    for case in cases {
        let name = case.name.clone();
        assert_refused(c, b, case).await;
        assert_eq!(
            store_snapshot(c, b).await,
            before,
            "case {name}: a refused request changed the stores"
        );
    }
}

/// The admin password `Berth::builtin` servers start with.
pub const API_ADMIN_PW: &str = "admin-pass-123";

/// The settings of a server with built-in accounts (`admin` / [`API_ADMIN_PW`]).
fn builtin_env() -> Vec<(String, String)> {
    vec![
        ("BERTH_AUTH__MODE".to_string(), "builtin".to_string()),
        (
            "BERTH_AUTH__ADMIN_PASSWORD".to_string(),
            API_ADMIN_PW.to_string(),
        ),
    ]
}

impl Berth {
    /// A server with built-in accounts (`admin` / [`API_ADMIN_PW`]) and `extra` settings.
    pub fn builtin(extra: &[(&str, &str)]) -> Berth {
        let mut env = builtin_env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Berth::start_with(Options {
            env,
            ..Default::default()
        })
    }
}

/// A request to the REST API, with Basic credentials when `who` is given.
pub async fn api_send(
    b: &Berth,
    method: reqwest::Method,
    path: &str,
    who: Option<(&str, &str)>,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut r = client().request(method, b.url(path));
    if let Some((u, p)) = who {
        r = r.basic_auth(u, Some(p));
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    r.send().await.expect("request")
}

/// Asserts a Harbor-shaped error (`{"errors":[{"code","message"}]}`); returns its message.
pub async fn harbor_error(r: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(r.status().as_u16(), status);
    let v: serde_json::Value = r.json().await.expect("json error body");
    assert_eq!(v["errors"][0]["code"], code, "{v}");
    v["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
