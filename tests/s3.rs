//! The S3 blob store through the registry: redirect mode, purging abandoned multipart
//! uploads, and what clients see when the object store is missing or goes away. (The
//! store's own rules are in `tests/blobstore_suite.rs`; the spec and real-client tests run
//! again on S3 from `scripts/test.sh`.)

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::Duration;

fn s3_options() -> Options {
    Options {
        s3: true,
        ..Options::default()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

/// Objects of unfinished uploads in the server's bucket (tails, multipart uploads).
fn upload_objects(b: &Berth) -> Vec<String> {
    s3_keys(b.options.s3_bucket.as_deref().expect("an S3 server"))
        .into_iter()
        .filter(|k| k.starts_with("uploads/"))
        .collect()
}

/// Opens an upload and sends one PATCH bigger than a part, so a multipart upload exists.
async fn half_finished_upload(c: &reqwest::Client, b: &Berth) -> String {
    let url = open_upload(c, b, "team/abandoned").await;
    let chunk = pattern(6 * 1024 * 1024, 1);
    let r = c
        .patch(&url)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", chunk.len() - 1))
        .body(chunk)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let left = upload_objects(b);
    assert!(
        left.iter().any(|k| k.ends_with("(multipart)")),
        "a 6 MiB chunk opens a multipart upload: {left:?}"
    );
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_mode_sends_clients_to_a_presigned_url_that_serves_ranges() {
    let mut options = s3_options();
    options.env = vec![
        ("BERTH_STORAGE__S3__REDIRECT".into(), "true".into()),
        (
            "BERTH_STORAGE__S3__REDIRECT_EXPIRY_SECONDS".into(),
            "60".into(),
        ),
    ];
    let b = Berth::start_with(options);
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bytes = pattern(300_000, 2);
    let digest = push_blob(&client(), &b, "team/app", &bytes).await;

    let r = no_redirects
        .get(b.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    let location = header_str(&r, "location");
    let endpoint = std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap();
    assert!(location.starts_with(&endpoint), "{location}");
    assert!(
        location.contains("X-Amz-Signature=") && location.contains("X-Amz-Expires=60"),
        "a presigned URL with the configured expiry: {location}"
    );

    // The client follows it and gets the bytes, or the range it asks for, from the store.
    let got = client().get(&location).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap().as_ref() == bytes.as_slice());
    let part = client()
        .get(&location)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert!(part.bytes().await.unwrap().as_ref() == &bytes[1000..2000]);
    // A client that follows redirects (reqwest's default policy) ends up with the blob too.
    let followed = reqwest::Client::new()
        .get(b.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert!(followed.bytes().await.unwrap().as_ref() == bytes.as_slice());

    // HEAD is still answered by Berth, and unknown blobs are not redirected.
    let head = no_redirects
        .head(b.url(&format!("/v2/team/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header_str(&head, "content-length"), "300000");
    let missing = no_redirects
        .get(b.url(&format!("/v2/team/app/blobs/{}", sha256(b"nope"))))
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_gc_aborts_the_multipart_uploads_of_abandoned_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = s3_options();
    options.data_dir = Some(dir.path().to_path_buf());
    let b = Berth::start_with(options);
    let c = client();
    let url = half_finished_upload(&c, &b).await;
    // A finished blob in the same bucket, which gc must leave alone.
    let kept = pattern(10_000, 3);
    let kept_digest = push_blob(&c, &b, "team/kept", &kept).await;

    // Younger than the default age: nothing happens.
    let gc = |older_than: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["gc", "--older-than", older_than])
            .env("BERTH_DATA_DIR", dir.path())
            .env("BERTH_AUTH__MODE", "none")
            .env("BERTH_STORAGE__BACKEND", "s3")
            .env(
                "BERTH_STORAGE__S3__BUCKET",
                b.options.s3_bucket.as_deref().unwrap(),
            )
            .env(
                "BERTH_STORAGE__S3__ENDPOINT",
                std::env::var("BERTH_TEST_S3_ENDPOINT").unwrap(),
            )
            .env("BERTH_STORAGE__S3__FORCE_PATH_STYLE", "true")
            .env("BERTH_STORAGE__S3__REGION", "us-east-1")
            .env("BERTH_STORAGE__S3__ACCESS_KEY_ID", "test")
            .env("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", "test")
            .env_remove("BERTH_TEST_BACKEND")
            .stdin(Stdio::null())
            .output()
            .expect("run berth gc");
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "berth gc failed: {log}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        log
    };
    let log = gc("3600");
    assert!(log.contains("sessions=0"), "{log}");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 204);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let log = gc("1");
    assert!(log.contains("sessions=1"), "{log}");
    let left = upload_objects(&b);
    assert!(left.is_empty(), "gc left upload data behind: {left:?}");
    expect_error(
        c.get(&url).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert!(b.stored_blob(&kept_digest) == kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_purges_abandoned_uploads_on_its_own() {
    let mut options = s3_options();
    options.env = vec![
        ("BERTH_UPLOADS__PURGE_AFTER_SECONDS".into(), "1".into()),
        ("BERTH_UPLOADS__PURGE_INTERVAL_SECONDS".into(), "1".into()),
    ];
    let b = Berth::start_with(options);
    let c = client();
    let url = half_finished_upload(&c, &b).await;
    // The purge removes the session, then its data.
    let mut left = upload_objects(&b);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = upload_objects(&b);
    }
    assert!(left.is_empty(), "abandoned upload not purged: {left:?}");
    expect_error(
        c.get(&url).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    // The purge logs once its whole pass is done (after the orphan sweep), and the log
    // reaches the file through the harness's reader thread: give it a moment.
    let mut logged = false;
    for _ in 0..50 {
        logged = b.log_text().contains("purged abandoned uploads");
        if logged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged, "no purge in the log:\n{}", b.log_text());
}

#[test]
fn a_missing_bucket_stops_the_server_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .env("BERTH_AUTH__MODE", "none")
        .env("BERTH_STORAGE__BACKEND", "s3")
        .env("BERTH_STORAGE__S3__BUCKET", "no-such-bucket-here")
        .env(
            "BERTH_STORAGE__S3__ENDPOINT",
            std::env::var("BERTH_TEST_S3_ENDPOINT").expect("BERTH_TEST_S3_ENDPOINT"),
        )
        .env("BERTH_STORAGE__S3__FORCE_PATH_STYLE", "true")
        .env("BERTH_STORAGE__S3__ACCESS_KEY_ID", "test")
        .env("BERTH_STORAGE__S3__SECRET_ACCESS_KEY", "test")
        .env("BERTH_STORAGE__S3__MAX_ATTEMPTS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-bucket-here") && err.contains("the bucket does not exist"),
        "{err}"
    );
}

/// An S3 server of the test's own, so that it can be stopped mid-run.
struct OwnS3 {
    child: std::process::Child,
    endpoint: String,
}

impl OwnS3 {
    fn start() -> OwnS3 {
        OwnS3::start_with(None)
    }

    /// With `tls`, moto serves HTTPS with that certificate.
    fn start_with(tls: Option<&TestCert>) -> OwnS3 {
        let python = std::env::var("BERTH_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args(tls.map_or(Vec::new(), |t| {
                vec![
                    "-c".into(),
                    t.cert.clone().into_os_string(),
                    "-k".into(),
                    t.key.clone().into_os_string(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        // From here on the guard kills and reaps it, whatever happens.
        let s3 = OwnS3 {
            child,
            endpoint: format!(
                "{}://127.0.0.1:{port}",
                if tls.is_some() { "https" } else { "http" }
            ),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s3;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not start on port {port}");
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_is_503_and_acknowledges_nothing() {
    let mut s3 = OwnS3::start();
    let create = reqwest::Client::new()
        .put(format!("{}/outage", s3.endpoint))
        .send()
        .await
        .unwrap();
    assert!(create.status().is_success(), "create bucket: {create:?}");
    let b = Berth::start_with(Options {
        env: vec![
            ("BERTH_STORAGE__BACKEND".into(), "s3".into()),
            ("BERTH_STORAGE__S3__BUCKET".into(), "outage".into()),
            ("BERTH_STORAGE__S3__ENDPOINT".into(), s3.endpoint.clone()),
            ("BERTH_STORAGE__S3__FORCE_PATH_STYLE".into(), "true".into()),
            ("BERTH_STORAGE__S3__ACCESS_KEY_ID".into(), "test".into()),
            ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY".into(), "test".into()),
            ("BERTH_STORAGE__S3__MAX_ATTEMPTS".into(), "2".into()),
        ],
        // This test brings its own S3 server.
        s3: false,
        ..Options::default()
    });
    let c = client();
    let first = pattern(1000, 4);
    let url = open_upload(&c, &b, "team/outage").await;
    let r = c
        .patch(&url)
        .header("content-range", "0-999")
        .body(first.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // The object store goes away.
    let _ = s3.child.kill();
    let _ = s3.child.wait();
    let r = c
        .patch(&url)
        .header("content-range", "1000-1999")
        .body(pattern(1000, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(header_str(&r, "retry-after"), "5");
    let message = expect_error(r, 503, "UNAVAILABLE").await;
    assert!(
        message.contains("blob storage is unavailable") && message.contains("object store"),
        "{message}"
    );
    // Nothing was acknowledged: the session still holds the first chunk only.
    let status = c.get(&url).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(header_str(&status, "range"), "0-999");
    let r = c
        .get(b.url(&format!("/v2/team/outage/blobs/{}", sha256(&first))))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;
    assert!(b.log_text().contains("blob store failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_object_store_is_trusted_through_ca_bundle_and_encryption_is_requested() {
    let tls = TestCert::generate();
    let s3 = OwnS3::start_with(Some(&tls));
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let r = trusting
        .put(format!("{}/secure", s3.endpoint))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {r:?}");
    let env = |ca: Option<&std::path::Path>| {
        let mut env: Vec<(String, String)> = vec![
            ("BERTH_STORAGE__BACKEND".into(), "s3".into()),
            ("BERTH_STORAGE__S3__BUCKET".into(), "secure".into()),
            ("BERTH_STORAGE__S3__ENDPOINT".into(), s3.endpoint.clone()),
            ("BERTH_STORAGE__S3__FORCE_PATH_STYLE".into(), "true".into()),
            ("BERTH_STORAGE__S3__ACCESS_KEY_ID".into(), "test".into()),
            ("BERTH_STORAGE__S3__SECRET_ACCESS_KEY".into(), "test".into()),
            ("BERTH_STORAGE__S3__MAX_ATTEMPTS".into(), "1".into()),
            (
                "BERTH_STORAGE__S3__SERVER_SIDE_ENCRYPTION".into(),
                "AES256".into(),
            ),
        ];
        if let Some(ca) = ca {
            env.push((
                "BERTH_STORAGE__S3__CA_BUNDLE".into(),
                ca.display().to_string(),
            ));
        }
        env
    };

    // Without the CA the store's certificate is refused, and Berth says where it failed.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .envs(env(None))
        .env_remove("BERTH_TEST_BACKEND")
        .stdin(Stdio::null())
        .output()
        .expect("run berth");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening bucket \"secure\""), "{err}");

    // With it, pushes and pulls work, and objects are written with AES256 encryption.
    let b = Berth::start_with(Options {
        env: env(Some(&tls.ca)),
        ..Options::default()
    });
    let c = client();
    let bytes = pattern(7 * 1024 * 1024, 9);
    let digest = push_blob(&c, &b, "team/secure", &bytes).await;
    let got = c
        .get(b.url(&format!("/v2/team/secure/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap().as_ref() == bytes.as_slice());
    // Read back through an S3 client that trusts the same CA.
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(
            tls::TlsContext::builder()
                .with_trust_store(
                    tls::TrustStore::empty().with_pem_certificate(std::fs::read(&tls.ca).unwrap()),
                )
                .build()
                .unwrap(),
        )
        .build_https();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&s3.endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(http)
        .build();
    let hex = digest.trim_start_matches("sha256:");
    let head = aws_sdk_s3::Client::from_conf(conf)
        .head_object()
        .bucket("secure")
        .key(format!("blobs/sha256/{}/{hex}", &hex[..2]))
        .send()
        .await
        .expect("head the stored blob");
    assert_eq!(head.content_length, Some(bytes.len() as i64));
    assert_eq!(
        head.server_side_encryption,
        Some(aws_sdk_s3::types::ServerSideEncryption::Aes256),
        "objects are written with the configured encryption"
    );
}
