//! Garbage collection's results on every store and database (`berth gc` against a running
//! server): after pushes of images sharing layers and deletes of some manifests and tags,
//! exactly the unreferenced blobs go, every remaining image pulls byte for byte, `--dry-run`
//! changes nothing, the grace period spares fresh blobs, and `--untagged` removes untagged
//! manifests but keeps the referrers of kept images. Runs on SQLite + filesystem, on S3 in
//! the test command's S3 pass, and on PostgreSQL (`scripts/test.sh`).

mod common;

use common::*;
use serde_json::{Value, json};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Pushes an image of `config` and `layers` to `repo:tag`; its manifest digest.
async fn push(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[&[u8]],
) -> String {
    push_layered(c, b, repo, tag, config, layers).await.0
}

/// Pulls `repo:reference` as a client does: the manifest, then every blob it references,
/// each checked against its digest.
async fn pulls_whole(c: &reqwest::Client, b: &Berth, repo: &str, reference: &str) {
    let r = c
        .get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .expect("manifest GET");
    assert_eq!(r.status(), 200, "{repo}:{reference}");
    let m: Value = r.json().await.expect("manifest JSON");
    let mut digests: Vec<String> = m["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
        .collect();
    if let Some(d) = m["config"]["digest"].as_str() {
        digests.push(d.to_string());
    }
    for d in digests {
        let r = c
            .get(b.url(&format!("/v2/{repo}/blobs/{d}")))
            .send()
            .await
            .expect("blob GET");
        assert_eq!(r.status(), 200, "{repo} blob {d}");
        let bytes = r.bytes().await.expect("blob bytes");
        assert_eq!(sha256(&bytes), d, "{repo} blob {d} pulled byte for byte");
    }
}

/// `berth gc ARGS` against `b`'s stores; its summary line.
fn gc(b: &Berth, args: &[&str]) -> String {
    let mut all = vec!["gc"];
    all.extend_from_slice(args);
    let out = b.cli(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "berth {all:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find(|l| l.starts_with("garbage collection"))
        .unwrap_or_else(|| panic!("no summary in {stdout:?}"))
        .to_string()
}

/// The blobs the store holds, by digest.
fn stored(b: &Berth) -> std::collections::BTreeSet<String> {
    b.blob_files()
        .iter()
        .filter_map(|p| {
            let s = p.to_string_lossy();
            let hex = s.rsplit('/').next()?.to_string();
            (hex.len() == 64).then(|| format!("sha256:{hex}"))
        })
        .collect()
}

async fn collects_exactly_the_garbage(mut b: Berth) {
    let c = client();
    let shared: &[u8] = b"a layer both images and the other repository use";
    let (l1, l2, l3) = (
        b"only in a/app:v1".as_slice(),
        b"only in a/app:v2".as_slice(),
        b"only in b/app:v1".as_slice(),
    );
    let (c1, c2, c3) = (
        br#"{"image":"a1"}"#.as_slice(),
        br#"{"image":"a2"}"#.as_slice(),
        br#"{"image":"b1"}"#.as_slice(),
    );
    let a1 = push(&c, &b, "a/app", "v1", c1, &[l1, shared]).await;
    let a2 = push(&c, &b, "a/app", "v2", c2, &[l2, shared]).await;
    push(&c, &b, "b/app", "v1", c3, &[l3, shared]).await;
    // A blob uploaded and never used.
    let lone = push_blob(&c, &b, "a/app", b"uploaded, never referenced").await;
    // A signature of a/app:v2 (untagged, a referrer of a kept image).
    let empty = push_blob(&c, &b, "a/app", b"{}").await;
    let sig_layer = push_blob(&c, &b, "a/app", b"signature bytes").await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig_layer, "size": 15}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": a2, "size": 1},
    }))
    .unwrap();
    let sig_digest = sha256(&sig);
    let r = c
        .put(b.url(&format!("/v2/a/app/manifests/{sig_digest}")))
        .header("content-type", OCI_MANIFEST)
        .body(sig.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // a/app:v1 goes: its own layer and config become garbage, the shared layer does not.
    let r = c
        .delete(b.url(&format!("/v2/a/app/manifests/{a1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let garbage = [sha256(l1), sha256(c1), lone.clone()];
    let garbage_bytes = l1.len() + c1.len() + b"uploaded, never referenced".len();
    let before = stored(&b);
    for g in &garbage {
        assert!(before.contains(g), "{g} is stored before the run");
    }

    // A dry run says what would go and changes nothing.
    let dry = gc(&b, &["--dry-run", "--grace-seconds", "0"]);
    assert!(
        dry.contains(&format!(
            "would free 3 blobs ({garbage_bytes} bytes), 0 manifests"
        )),
        "{dry}"
    );
    assert_eq!(stored(&b), before, "a dry run deleted something");

    // The fresh blobs are spared by the default grace period.
    let spared = gc(&b, &[]);
    assert!(spared.contains("freed 0 blobs (0 bytes)"), "{spared}");
    assert_eq!(stored(&b), before);

    let done = gc(&b, &["--grace-seconds", "0", "--batch", "2"]);
    assert!(
        done.contains(&format!(
            "freed 3 blobs ({garbage_bytes} bytes), 0 manifests"
        )),
        "{done}"
    );
    let after = stored(&b);
    let expected: std::collections::BTreeSet<String> = before
        .iter()
        .filter(|d| !garbage.contains(d))
        .cloned()
        .collect();
    assert_eq!(after, expected, "exactly the garbage went");
    assert_eq!(blob_status(&c, &b, "a/app", &sha256(l1)).await, 404);
    assert_eq!(blob_status(&c, &b, "a/app", &lone).await, 404);
    for (repo, reference) in [
        ("a/app", "v2"),
        ("b/app", "v1"),
        ("a/app", sig_digest.as_str()),
    ] {
        pulls_whole(&c, &b, repo, reference).await;
    }
    // Nothing left to do.
    let again = gc(&b, &["--grace-seconds", "0"]);
    assert!(again.contains("freed 0 blobs (0 bytes)"), "{again}");

    // Untagged: b/app:v1 loses its tag; --untagged removes the manifest, then its own
    // blobs; the signature of the kept a/app:v2 stays (untagged, but its subject is kept).
    let r = c
        .delete(b.url("/v2/b/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let plain = gc(&b, &["--grace-seconds", "0"]);
    assert!(
        plain.contains("freed 0 blobs (0 bytes), 0 manifests"),
        "{plain}"
    );
    if b.options.database_url.is_none() {
        // The embedded database belongs to the server: deleting manifests waits for it.
        b.terminate();
    }
    let untagged = gc(&b, &["--grace-seconds", "0", "--untagged"]);
    assert!(
        untagged.contains(&format!(
            "freed 2 blobs ({} bytes), 1 manifests",
            l3.len() + c3.len()
        )),
        "{untagged}"
    );
    let left = stored(&b);
    assert!(!left.contains(&sha256(l3)) && !left.contains(&sha256(c3)));
    for kept in [
        sha256(shared),
        sha256(l2),
        sha256(c2),
        sig_layer.clone(),
        empty.clone(),
    ] {
        assert!(left.contains(&kept), "{kept} was kept");
    }
}

#[tokio::test]
async fn gc_collects_exactly_the_garbage_on_the_default_stores() {
    collects_exactly_the_garbage(Berth::start()).await;
}

#[tokio::test]
async fn gc_collects_exactly_the_garbage_on_postgresql() {
    let url = fresh_postgres_db().await;
    collects_exactly_the_garbage(Berth::start_with(Options {
        database_url: Some(url),
        ..Options::default()
    }))
    .await;
}

/// An S3 endpoint in front of the test S3 server that refuses `DeleteObjects` (as a bucket
/// whose policy denies deletes does) and passes everything else through.
async fn refusing_deletes(upstream: String) -> (String, tokio::task::JoinHandle<()>) {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let (parts, body) = req.into_parts();
            let query = parts.uri.query().unwrap_or("");
            if parts.method == axum::http::Method::POST && query.split('&').any(|p| p == "delete" || p == "delete=") {
                return Response::builder()
                    .status(403)
                    .header("content-type", "application/xml")
                    .body(Body::from(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>deletes are denied by the bucket policy</Message></Error>",
                    ))
                    .unwrap();
            }
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            let url = format!("{upstream}{}", parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
            let mut forward = http.request(parts.method.clone(), url).body(bytes);
            for (k, v) in &parts.headers {
                if k != axum::http::header::HOST && k != axum::http::header::CONTENT_LENGTH {
                    forward = forward.header(k, v);
                }
            }
            match forward.send().await {
                Ok(r) => {
                    let mut out = Response::builder().status(r.status().as_u16());
                    for (k, v) in r.headers() {
                        out = out.header(k, v);
                    }
                    out.body(Body::from(r.bytes().await.unwrap_or_default())).unwrap()
                }
                Err(e) => Response::builder().status(502).body(Body::from(e.to_string())).unwrap(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), task)
}

/// A store that refuses deletes: the run reports the blobs it could not delete and exits
/// non-zero, their rows and links stay (they still pull), and the next run, once deletes
/// are allowed, frees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_what_the_store_refuses_to_delete_and_the_next_run_frees_it() {
    let Ok(endpoint) = std::env::var("BERTH_TEST_S3_ENDPOINT") else {
        panic!(
            "BERTH_TEST_S3_ENDPOINT is not set: run the tests through scripts/test.sh, which starts an S3 server"
        );
    };
    let b = Berth::start_with(Options {
        s3: true,
        ..Options::default()
    });
    let c = client();
    let doomed = push(
        &c,
        &b,
        "r/app",
        "old",
        br#"{"image":"old"}"#,
        &[b"old layer"],
    )
    .await;
    push(
        &c,
        &b,
        "r/app",
        "new",
        br#"{"image":"new"}"#,
        &[b"new layer"],
    )
    .await;
    let r = c
        .delete(b.url(&format!("/v2/r/app/manifests/{doomed}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let before = stored(&b);

    let (proxy, task) = refusing_deletes(endpoint).await;
    // The CLI blocks this thread; the endpoint is served by the runtime's other worker.
    let mut cmd = b.cli_command(&["gc", "--grace-seconds", "0"]);
    cmd.env("BERTH_STORAGE__S3__ENDPOINT", &proxy);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run berth gc"))
        .await
        .expect("the CLI's thread");
    task.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a refused delete is a failed run: {stdout}"
    );
    assert!(stdout.contains("freed 0 blobs (0 bytes)"), "{stdout}");
    assert!(
        stdout.contains("the blob store refused to delete 2"),
        "{stdout}"
    );
    for d in [sha256(b"old layer"), sha256(br#"{"image":"old"}"#)] {
        assert!(stdout.contains(&d), "{d} is named: {stdout}");
        assert_eq!(blob_status(&c, &b, "r/app", &d).await, 200, "{d} is kept");
    }
    assert_eq!(stored(&b), before, "nothing was deleted");

    // Deletes allowed again: the next run frees them.
    let done = gc(&b, &["--grace-seconds", "0"]);
    assert!(done.contains("freed 2 blobs"), "{done}");
    assert_eq!(
        blob_status(&c, &b, "r/app", &sha256(b"old layer")).await,
        404
    );
    pulls_whole(&c, &b, "r/app", "new").await;
}
