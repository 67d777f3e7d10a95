//! `/healthz` and `/readyz`: unauthenticated, out of the request log by default, and
//! `/readyz` follows the stores: 503 naming the part that fails (blob store root gone,
//! PostgreSQL stopped, S3 server down) and 200 again once it is back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

async fn readyz(c: &reqwest::Client, b: &Berth) -> (u16, serde_json::Value) {
    let r = c.get(b.url("/readyz")).send().await.expect("readyz");
    let status = r.status().as_u16();
    (status, r.json().await.expect("readyz body is JSON"))
}

/// Polls `/readyz` until it answers `want` (bounded by `within`); returns the last body.
async fn wait_ready(
    c: &reqwest::Client,
    b: &Berth,
    want: u16,
    within: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readyz(c, b).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after {within:?}, wanted {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The named check in a readiness report.
fn check<'a>(body: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    body["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {body}"))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn probes_answer_200_without_credentials_and_stay_out_of_the_log() {
    let b = Berth::start_with(Options {
        env: vec![("BERTH_AUTH__MODE".into(), "builtin".into())],
        ..Options::default()
    });
    let c = client();
    let r = c.get(b.url("/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "ok\n");
    let (status, body) = readyz(&c, &b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for name in ["database", "blob store"] {
        assert_eq!(check(&body, name)["ok"], true, "{body}");
    }
    // A request that is logged, so the log is known to be written.
    let r = c.get(b.url("/v2/")).send().await.expect("v2");
    assert_eq!(r.status(), 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.log_text().contains("path=/v2/") {
        assert!(
            Instant::now() < deadline,
            "no request line: {}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = b.log_text();
    assert!(!log.contains("/healthz"), "probe logged: {log}");
    assert!(!log.contains("/readyz"), "probe logged: {log}");
}

#[tokio::test]
async fn log_probes_puts_them_in_the_request_log() {
    let b = Berth::start_with(Options {
        env: vec![("BERTH_SERVER__LOG_PROBES".into(), "true".into())],
        ..Options::default()
    });
    let c = client();
    assert_eq!(readyz(&c, &b).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.log_text().contains("path=/readyz") {
        assert!(
            Instant::now() < deadline,
            "probe not logged: {}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_is_503_while_the_blob_store_root_is_gone() {
    let b = Berth::start();
    let c = client();
    assert_eq!(readyz(&c, &b).await.0, 200);
    let root = b.storage_root();
    let moved = root.with_file_name("storage-moved-away");
    std::fs::rename(&root, &moved).expect("move the store away");
    let body = wait_ready(&c, &b, 503, Duration::from_secs(10)).await;
    assert_eq!(body["status"], "unavailable");
    let blobs = check(&body, "blob store");
    assert_eq!(blobs["ok"], false);
    assert!(
        blobs["reason"]
            .as_str()
            .unwrap_or("")
            .contains("No such file"),
        "{body}"
    );
    assert_eq!(check(&body, "database")["ok"], true, "{body}");
    // Still alive: liveness does not depend on the stores.
    let r = c.get(b.url("/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), 200);
    std::fs::rename(&moved, &root).expect("move the store back");
    let body = wait_ready(&c, &b, 200, Duration::from_secs(10)).await;
    assert_eq!(body["status"], "ready");
}

/// A PostgreSQL cluster of the test's own (the shared one serves other tests), started as
/// the `postgres` user on a free port; stopped and removed on drop.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    running: bool,
}

impl PrivatePostgres {
    /// `None` (the test skips) without root or PostgreSQL's server binaries.
    fn create() -> Option<PrivatePostgres> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: a private PostgreSQL needs root (to run it as `postgres`)");
            return None;
        }
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists() && b.join("pg_ctl").exists());
        let Some(bin) = bin else {
            eprintln!("SKIPPED: no PostgreSQL server binaries under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("berth-ops-pg")
            .tempdir_in("/tmp")
            .expect("temp dir");
        run_ok(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()),
        );
        let data = dir.path().join("data");
        run_ok(as_postgres(&bin.join("initdb")).args([
            "-D",
            data.to_str().expect("path"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]));
        let mut pg = PrivatePostgres {
            bin,
            dir,
            port: free_port(),
            running: false,
        };
        pg.start();
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&mut self) {
        let dir = self.dir.path();
        run_ok(as_postgres(&self.bin.join("pg_ctl")).args([
            "-D",
            dir.join("data").to_str().expect("path"),
            "-l",
            dir.join("server.log").to_str().expect("path"),
            "-w",
            "-t",
            "60",
            "-o",
            &format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                dir.display()
            ),
            "start",
        ]));
        self.running = true;
    }

    fn stop(&mut self) {
        run_ok(as_postgres(&self.bin.join("pg_ctl")).args([
            "-D",
            self.dir.path().join("data").to_str().expect("path"),
            "-m",
            "fast",
            "-t",
            "60",
            "stop",
        ]));
        self.running = false;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(&self.bin.join("pg_ctl"))
                .args([
                    "-D",
                    self.dir.path().join("data").to_str().unwrap_or(""),
                    "-m",
                    "immediate",
                    "stop",
                ])
                .status();
        }
    }
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"])
        .arg(program)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

fn run_ok(c: &mut Command) {
    let out = c.output().expect("run command");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn readyz_is_503_while_postgres_is_stopped() {
    let Some(mut pg) = PrivatePostgres::create() else {
        return;
    };
    let b = Berth::start_with(Options {
        database_url: Some(pg.url()),
        ..Options::default()
    });
    let c = client();
    assert_eq!(readyz(&c, &b).await.0, 200);
    pg.stop();
    let body = wait_ready(&c, &b, 503, Duration::from_secs(15)).await;
    let db = check(&body, "database");
    assert_eq!(db["ok"], false, "{body}");
    assert!(!db["reason"].as_str().unwrap_or("").is_empty(), "{body}");
    assert_eq!(check(&body, "blob store")["ok"], true, "{body}");
    // A request that needs the database fails, and the metrics count it.
    let r = c
        .get(b.url("/v2/library/app/manifests/v1"))
        .send()
        .await
        .expect("manifest GET");
    assert!(r.status().is_server_error(), "{}", r.status());
    let errors = database_errors(&c, &b).await;
    assert!(errors >= 1.0, "berth_database_errors_total = {errors}");
    pg.start();
    wait_ready(&c, &b, 200, Duration::from_secs(20)).await;
}

/// `berth_database_errors_total` from `/metrics`.
async fn database_errors(c: &reqwest::Client, b: &Berth) -> f64 {
    metric_value(c, b, "berth_database_errors_total")
        .await
        .expect("berth_database_errors_total")
}

/// A moto S3 server of the test's own; killed on drop.
struct PrivateS3 {
    python: String,
    port: u16,
    child: Option<Child>,
}

impl PrivateS3 {
    /// `None` (the test skips) when no Python here has moto.
    fn create() -> Option<PrivateS3> {
        let python = std::env::var("BERTH_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let has_moto = Command::new(&python)
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_moto {
            eprintln!("SKIPPED: {python} cannot import moto.server (scripts/test.sh installs it)");
            return None;
        }
        let mut s3 = PrivateS3 {
            python,
            port: free_port(),
            child: None,
        };
        s3.start();
        Some(s3)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server and creates the bucket `berth` (moto keeps nothing across restarts).
    fn start(&mut self) {
        let child = Command::new(&self.python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn create_bucket(endpoint: &str) {
    s3_client(endpoint)
        .create_bucket()
        .bucket("berth")
        .send()
        .await
        .expect("create bucket");
}

#[tokio::test]
async fn readyz_is_503_while_the_s3_server_is_down() {
    let Some(mut s3) = PrivateS3::create() else {
        return;
    };
    create_bucket(&s3.endpoint()).await;
    let env = [
        ("BERTH_STORAGE__BACKEND", "s3".to_string()),
        ("BERTH_STORAGE__S3__BUCKET", "berth".into()),
        ("BERTH_STORAGE__S3__ENDPOINT", s3.endpoint()),
        ("BERTH_STORAGE__S3__FORCE_PATH_STYLE", "true".into()),
        ("BERTH_STORAGE__S3__REGION", "us-east-1".into()),
        ("BERTH_STORAGE__S3__ACCESS_KEY_ID", "test".into()),
        ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", "test".into()),
    ];
    let b = Berth::start_with(Options {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Options::default()
    });
    let c = client();
    assert_eq!(readyz(&c, &b).await.0, 200);
    s3.stop();
    let body = wait_ready(&c, &b, 503, Duration::from_secs(15)).await;
    let blobs = check(&body, "blob store");
    assert_eq!(blobs["ok"], false, "{body}");
    assert!(!blobs["reason"].as_str().unwrap_or("").is_empty(), "{body}");
    assert_eq!(check(&body, "database")["ok"], true, "{body}");
    s3.start();
    create_bucket(&s3.endpoint()).await;
    wait_ready(&c, &b, 200, Duration::from_secs(20)).await;
}
