//! The process: HTTPS, graceful shutdown, request logs, `berth migrate`, configuration.

mod common;
use common::*;

use futures::StreamExt;
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn serves_https_when_a_certificate_is_configured() {
    let tls = TestCert::generate();
    let b = Berth::start_with(Options {
        tls: Some((tls.cert.clone(), tls.key.clone())),
        ..Default::default()
    });
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let r = c.get(b.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to the TLS port does not get a registry answer.
    let plain = client()
        .get(format!("http://{}/v2/", b.host()))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut b = Berth::start();
    let c = client();
    let r = c
        .post(b.url("/v2/slow/up/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();

    // A PATCH whose body arrives slowly: half now, half after the SIGTERM.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let url = b.url(&location);
    let patch = tokio::spawn(async move { client().patch(url).body(body).send().await });
    tx.send(Ok(vec![1u8; 1000])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = b.pid();
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(vec![2u8; 1000])).await.unwrap();
    drop(tx);

    let r = patch.await.unwrap().expect("in-flight PATCH is answered");
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-1999");
    let status = b.terminate();
    assert!(
        status.success(),
        "berth exits cleanly after SIGTERM: {status:?}"
    );
    assert!(b.log_text().contains("shutting down"));
}

#[tokio::test]
async fn sigterm_closes_the_embedded_database_with_its_log_checkpointed() {
    let mut b = Berth::start();
    let c = client();
    let (_, manifest) = push_image(&c, &b, "shut/down", "v1", &pattern(4096, 3)).await;
    let wal = b.data_dir.join("berth.db-wal");
    assert!(
        wal.exists(),
        "the server writes through SQLite's write-ahead log"
    );
    assert!(b.terminate().success());
    assert!(b.log_text().contains("stopped"));
    // The last connection closed checkpointed the log into berth.db and removed it, so
    // the database file alone holds everything acknowledged.
    for leftover in ["berth.db-wal", "berth.db-shm"] {
        assert!(
            !b.data_dir.join(leftover).exists(),
            "{leftover} left behind after a clean shutdown"
        );
    }
    let again = Berth::start_with(Options {
        data_dir: Some(b.data_dir.clone()),
        ..Options::default()
    });
    let r = c
        .get(again.url("/v2/shut/down/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").as_ref(), manifest.as_slice());
}

/// Adapts a channel receiver into a stream for `reqwest::Body::wrap_stream`.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[tokio::test]
async fn logs_one_line_per_request_with_method_path_status_bytes_latency() {
    let b = Berth::start();
    let r = client()
        .get(b.url("/v2/nope/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = b.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("/v2/nope/manifests/latest"))
        .unwrap_or_else(|| panic!("no request line in log:\n{log}"));
    for field in ["method=GET", "status=404", "bytes=", "latency_us="] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("/v2/nope/manifests/latest"))
            .count(),
        1
    );
    assert!(
        log.contains("listening"),
        "start-up line says where it listens"
    );
    assert!(
        log.contains("storage="),
        "start-up line says where data goes"
    );
}

fn berth() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.env_remove("BERTH_CONFIG").env("BERTH_AUTH__MODE", "none");
    c
}

#[tokio::test]
async fn migrate_command_prepares_a_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub/meta.db");
    let out = berth()
        .arg("migrate")
        .env("BERTH_DATABASE__URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
    // Twice is fine.
    let again = berth()
        .arg("migrate")
        .env("BERTH_DATABASE__URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(again.status.success());
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    for t in ["blobs", "manifests", "repositories", "tags", "uploads"] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }
}

#[tokio::test]
async fn migrate_command_prepares_a_postgres_database() {
    let url = fresh_postgres_db().await;
    let out = berth()
        .arg("migrate")
        .env("BERTH_DATABASE__URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('repositories','manifests','tags','uploads','blobs')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(n, 5);
}

#[tokio::test]
async fn config_file_is_read_and_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(
        &file,
        "[limits]\nmax_manifest_bytes = 100\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let b = Berth::start_with(Options {
        env: vec![("BERTH_CONFIG".into(), file.display().to_string())],
        ..Default::default()
    });
    let big = vec![b' '; 200];
    let r = client()
        .put(b.url("/v2/cfg/test/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "the file's 100-byte limit applies");
    assert!(
        b.log_text().lines().any(|l| l.starts_with('{')),
        "log.format = json from the file"
    );
    drop(b);

    let b = Berth::start_with(Options {
        env: vec![
            ("BERTH_CONFIG".into(), file.display().to_string()),
            ("BERTH_LIMITS__MAX_MANIFEST_BYTES".into(), "100000".into()),
        ],
        ..Default::default()
    });
    let r = client()
        .put(b.url("/v2/cfg/test/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(vec![b' '; 200])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "the environment's larger limit wins; the body is then just invalid"
    );
}

#[tokio::test]
async fn a_second_server_on_one_sqlite_database_is_refused_until_the_first_stops() {
    let mut first = Berth::start();
    let c = client();
    let (digest, _) = push_image(&c, &first, "solo", "v1", b"layer").await;
    let out = berth()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&first.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second server started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another `berth serve`") && err.contains("PostgreSQL"),
        "{err}"
    );
    // The first is unharmed, and a maintenance command may still run beside it.
    assert_eq!(manifest_status(&c, &first, "solo", "v1").await, 200);
    let gc = berth()
        .args(["gc", "--older-than", "0"])
        .env("BERTH_DATA_DIR", &first.data_dir)
        .output()
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    // Once the first stops, the database is free.
    assert!(first.terminate().success());
    let second = Berth::start_with(Options {
        data_dir: Some(first.data_dir.clone()),
        ..Options::default()
    });
    assert_eq!(manifest_status(&c, &second, "solo", &digest).await, 200);
}

#[test]
fn a_bad_config_is_refused_with_a_clear_message() {
    let out = berth()
        .arg("serve")
        .env("BERTH_STORAGE__BACKEND", "floppy")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.backend"), "{err}");
}

/// Peak resident memory of a process, from /proc (Linux), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

#[tokio::test]
async fn a_large_blob_streams_through_without_raising_memory() {
    const SIZE: u64 = 512 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let b = Berth::start();
    let baseline = peak_rss_kib(b.pid());

    // Generate the body on the fly, hashing as we go, so the test holds no copy either.
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(<sha2::Sha256 as sha2::Digest>::new()));
    let h = hasher.clone();
    let body = futures::stream::iter(0..SIZE / CHUNK as u64).map(move |i| {
        let chunk = vec![(i % 251) as u8; CHUNK];
        sha2::Digest::update(&mut *h.lock().unwrap(), &chunk);
        Ok::<_, std::io::Error>(chunk)
    });
    let c = client();
    let r = c
        .post(b.url("/v2/big/blob/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let r = c
        .patch(b.url(&location))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.headers()["range"].to_str().unwrap(),
        format!("0-{}", SIZE - 1)
    );
    let digest = format!(
        "sha256:{}",
        hex::encode(sha2::Digest::finalize(hasher.lock().unwrap().clone()))
    );
    let r = c
        .put(format!("{}?digest={digest}", b.url(&location)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(b.stored_blob_len(&digest), SIZE);

    // And back out, counting bytes without keeping them.
    let mut r = c
        .get(b.url(&format!("/v2/big/blob/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        got += chunk.len() as u64;
    }
    assert_eq!(got, SIZE);

    let peak = peak_rss_kib(b.pid());
    assert!(
        peak < baseline + 64 * 1024,
        "peak RSS grew from {baseline} KiB to {peak} KiB moving a {SIZE}-byte blob"
    );
}

/// Bytes of `path` in the page cache, as util-linux's `fincore` reports them.
fn cached_bytes(path: &std::path::Path) -> u64 {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("run fincore (util-linux)");
    assert!(out.status.success(), "fincore: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("fincore prints a byte count")
}

/// The type of the filesystem holding `path`, as coreutils' `stat -f` names it.
fn filesystem_type(path: &std::path::Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .expect("run stat");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn upload_data_goes_around_the_page_cache_unless_direct_io_is_off() {
    const SIZE: usize = 8 * 1024 * 1024;
    let c = client();
    for direct in [true, false] {
        let env = if direct {
            vec![]
        } else {
            vec![("BERTH_STORAGE__DIRECT_IO".to_string(), "false".to_string())]
        };
        let b = Berth::start_with(Options {
            env,
            s3: false,
            ..Default::default()
        });
        let mode = if direct { "direct" } else { "buffered" };
        assert!(
            b.log_text().contains(&format!(
                "filesystem blob store root={}",
                b.storage_root().display()
            )) && b.log_text().contains(&format!("upload_io=\"{mode}\"")),
            "the log names how upload data is written ({mode}):\n{}",
            b.log_text()
        );
        let bytes = pattern(SIZE, if direct { 1 } else { 2 });
        let digest = push_blob(&c, &b, "io/blob", &bytes).await;
        // Nothing has read the blob since the push: what is cached is what the write left.
        let cached = cached_bytes(&b.blob_path(&digest));
        // (tmpfs takes direct writes since Linux 6.6, but its files live in the page cache.)
        if direct && filesystem_type(&b.storage_root()) != "tmpfs" {
            assert_eq!(
                cached, 0,
                "a blob written directly leaves nothing in the page cache"
            );
        } else if !direct {
            assert!(
                cached >= SIZE as u64 / 2,
                "a blob written through the page cache is (mostly) there: {cached} bytes"
            );
        }
        assert!(
            b.stored_blob(&digest) == bytes,
            "{mode}: the blob is byte-exact"
        );
        let r = c
            .get(b.url(&format!("/v2/io/blob/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.bytes().await.unwrap() == bytes,
            "{mode}: pulled back byte-exact"
        );
    }
}
