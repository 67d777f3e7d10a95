//! A database restart is survived (issue 20, item 10): Berth on a private PostgreSQL
//! cluster the test starts, stops and starts again under it. While it is down, requests
//! that need it answer 503 `UNAVAILABLE` with `Retry-After` (not 500 with the driver's
//! text); from the first request after it is back, every push and pull succeeds, though
//! every connection both pools held has died.
//!
//! Needs root (the cluster runs as the `postgres` user) and PostgreSQL's server binaries;
//! skips with a message otherwise. The shared server `scripts/test.sh` starts is not
//! touched.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Connections per pool: fewer than the pushes and pulls that follow a restart, so each
/// stale one is met.
const POOL: usize = 4;

/// A PostgreSQL cluster of this test's own, on a free loopback port.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// `None` (after saying why) when it cannot be run here.
    fn create() -> Option<PrivatePostgres> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: a private PostgreSQL runs as the postgres user, which needs root");
            return None;
        }
        let Some(bin) = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .flatten()
                    .map(|v| v.path().join("bin"))
                    .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
                    .max()
            })
        else {
            eprintln!(
                "SKIPPED: PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are absent"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        run(Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let pg = PrivatePostgres { bin, dir, port };
        run(pg
            .as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.data()));
        pg.start();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the cluster's programs, run as `postgres` from `/` (its home may be closed).
    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .current_dir("/");
        cmd
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut cmd = self.as_postgres("pg_ctl");
        cmd.arg("-D").arg(self.data()).args(args);
        cmd
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(self
            .pg_ctl(&["-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .arg("start"));
    }

    /// Stops it the way an administrator does: every session is told so and closed.
    fn stop(&self) {
        run(&mut self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"]));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]).output();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a PostgreSQL program");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts the answer of a request that needs the stopped database: 503 with `Retry-After`
/// and an OCI error body (none for a HEAD) that does not relay the driver's words.
async fn assert_unavailable(r: reqwest::Response, what: &str, head: bool) {
    assert_eq!(r.status(), 503, "{what} while the database is down");
    let retry: u64 = header_str(&r, "retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("{what}: no Retry-After in seconds"));
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
    if head {
        return;
    }
    let message = expect_error(r, 503, "UNAVAILABLE").await;
    for driver in ["os error", "refused", "database error", "pool", "sqlx"] {
        assert!(
            !message.to_lowercase().contains(driver),
            "{what}: the message relays the driver: {message}"
        );
    }
}

/// A manifest over the shared config and layer with its own annotation, so that each
/// push is a new manifest.
fn manifest_numbered(layer: &[u8], n: usize) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(&image_over_layer(layer)).expect("json");
    m["annotations"] = serde_json::json!({ "n": n.to_string() });
    serde_json::to_vec(&m).expect("json")
}

/// Pushes `count` manifests at once (tags `<prefix>-<i>`), then pulls each back; every
/// request must succeed.
async fn push_and_pull_all(
    c: &reqwest::Client,
    b: &Berth,
    layer: &[u8],
    prefix: &str,
    count: usize,
) {
    let pushes = (0..count).map(|i| {
        let m = manifest_numbered(layer, i);
        async move {
            let r =
                put_manifest_as(c, b, "db/app", &format!("{prefix}-{i}"), OCI_MANIFEST, &m).await;
            assert_eq!(r.status(), 201, "push {prefix}-{i}: {:?}", r.text().await);
        }
    });
    futures::future::join_all(pushes).await;
    let pulls = (0..count).map(|i| async move {
        let r = c
            .get(b.url(&format!("/v2/db/app/manifests/{prefix}-{i}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("pull");
        assert_eq!(r.status(), 200, "pull {prefix}-{i}");
        assert_eq!(
            r.bytes().await.expect("body").as_ref(),
            manifest_numbered(layer, i).as_slice()
        );
    });
    futures::future::join_all(pulls).await;
}

fn berth_on(pg: &PrivatePostgres) -> Berth {
    Berth::start_with(Options {
        database_url: Some(pg.url()),
        env: vec![("BERTH_DATABASE__MAX_CONNECTIONS".into(), POOL.to_string())],
        ..Options::default()
    })
}

#[tokio::test]
async fn while_postgresql_is_down_requests_get_503_with_retry_after_and_from_the_first_request_after_it_is_back_everything_succeeds()
 {
    let Some(pg) = PrivatePostgres::create() else {
        return;
    };
    let b = berth_on(&pg);
    let c = client();
    let layer = pattern(64 * 1024, 1);
    push_image(&c, &b, "db/app", "v1", &layer).await;
    // Several connections open in both pools.
    push_and_pull_all(&c, &b, &layer, "warm", 2 * POOL).await;

    pg.stop();
    let r = c
        .get(b.url("/v2/db/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET");
    assert_unavailable(r, "a manifest GET", false).await;
    let r = c
        .head(b.url("/v2/db/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("HEAD");
    assert_unavailable(r, "a manifest HEAD", true).await;
    let r = c
        .get(b.url(&format!("/v2/db/app/blobs/{}", sha256(&layer))))
        .send()
        .await
        .expect("GET");
    assert_unavailable(r, "a blob GET", false).await;
    let started = Instant::now();
    let r = put_manifest_as(
        &c,
        &b,
        "db/app",
        "down",
        OCI_MANIFEST,
        &manifest_numbered(&layer, 999),
    )
    .await;
    assert_unavailable(r, "a manifest push", false).await;
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "a push waited {:?} for the database",
        started.elapsed()
    );
    let r = c
        .post(b.url("/v2/db/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    assert_unavailable(r, "opening an upload", false).await;

    pg.start();
    push_and_pull_all(&c, &b, &layer, "back", 2 * POOL).await;
    let fresh = pattern(32 * 1024, 2);
    push_image(&c, &b, "db/app", "v2", &fresh).await;

    // A restart no request saw: every pooled connection is dead when the next requests
    // come, and none of them may fail.
    push_and_pull_all(&c, &b, &layer, "warm2", 2 * POOL).await;
    pg.stop();
    pg.start();
    push_and_pull_all(&c, &b, &layer, "after", 2 * POOL).await;
    let layer3 = pattern(16 * 1024, 3);
    push_image(&c, &b, "db/app", "v3", &layer3).await;
    for (tag, l) in [("v1", &layer), ("v2", &fresh), ("v3", &layer3)] {
        let r = c
            .get(b.url(&format!("/v2/db/app/manifests/{tag}")))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200, "pull {tag}");
        assert_eq!(
            r.bytes().await.expect("body").as_ref(),
            image_over_layer(l).as_slice()
        );
        let r = c
            .get(b.url(&format!("/v2/db/app/blobs/{}", sha256(l))))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.expect("blob").as_ref() == l.as_slice());
    }
    let log = b.log_text();
    assert!(
        log.contains("database connection lost; retrying on a new connection"),
        "the restart was not noticed, so the test proved nothing:\n{log}"
    );
}
