//! Stateless processes: two servers on one PostgreSQL database and one blob store serve the
//! same registry (any request can land on either), and a server killed with SIGKILL loses
//! nothing it acknowledged.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::stream;
use reqwest::StatusCode;
use serde_json::Value;

/// Two servers sharing a database and a storage root. Fields drop in order: the servers
/// stop before their shared directory is removed.
struct Replicas {
    a: Berth,
    b: Berth,
    _dir: tempfile::TempDir,
}

async fn replicas() -> Replicas {
    let (options, dir) = replica_options().await;
    let a = Berth::start_with(options.clone());
    let b = Berth::start_with(options);
    Replicas { a, b, _dir: dir }
}

/// A `Location` from one server, addressed to `server` (it may be relative or absolute).
fn at(server: &Berth, location: &str) -> String {
    if location.starts_with('/') {
        return server.url(location);
    }
    let after_scheme = location
        .split_once("://")
        .map_or(location, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    server.url(path)
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("response has no {name} header: {:?}", r.headers()))
        .to_str()
        .expect("ASCII header")
        .to_string()
}

/// `POST /v2/<repo>/blobs/uploads/` on `server`; returns the session's `Location`.
async fn start_upload(c: &reqwest::Client, server: &Berth, repo: &str) -> String {
    let r = c
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 202, "starting an upload: {:?}", r.text().await);
    assert_eq!(header(&r, "range"), "0-0");
    header(&r, "location")
}

/// A chunked `PATCH` with `Content-Range` from `offset`; asserts it is acknowledged and
/// returns the new `Range`.
async fn patch_chunk(
    c: &reqwest::Client,
    server: &Berth,
    location: &str,
    offset: usize,
    chunk: &[u8],
) -> String {
    let r = c
        .patch(at(server, location))
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{}-{}", offset, offset + chunk.len() - 1),
        )
        .header("content-length", chunk.len())
        .body(chunk.to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(
        r.status(),
        202,
        "PATCH {offset}+{}: {:?}",
        chunk.len(),
        r.text().await
    );
    let range = header(&r, "range");
    assert_eq!(range, format!("0-{}", offset + chunk.len() - 1));
    range
}

/// The `Range` an upload's status reports.
async fn upload_range(c: &reqwest::Client, server: &Berth, location: &str) -> String {
    let r = c
        .get(at(server, location))
        .send()
        .await
        .expect("GET upload status");
    assert_eq!(r.status(), 204, "upload status: {:?}", r.text().await);
    header(&r, "range")
}

/// GETs a blob and checks its bytes and digest header.
async fn assert_blob(c: &reqwest::Client, server: &Berth, repo: &str, digest: &str, want: &[u8]) {
    let r = c
        .get(server.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(r.status(), 200, "GET blob {digest} from {}", server.base);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let body = r.bytes().await.expect("blob body");
    assert_eq!(
        body.len(),
        want.len(),
        "blob {digest} size from {}",
        server.base
    );
    assert!(
        body[..] == want[..],
        "blob {digest} from {} is byte-exact",
        server.base
    );
    assert_eq!(sha256(&body), digest);
}

/// GETs a manifest and checks its bytes, media type and digest.
async fn assert_manifest(
    c: &reqwest::Client,
    server: &Berth,
    repo: &str,
    reference: &str,
    want: &[u8],
    media_type: &str,
) {
    let r = get_any_manifest(c, server, repo, reference).await;
    assert_eq!(
        r.status(),
        200,
        "GET manifest {repo}:{reference} from {}",
        server.base
    );
    assert_eq!(header(&r, "content-type"), media_type);
    assert_eq!(header(&r, "docker-content-digest"), sha256(want));
    let body = r.bytes().await.expect("manifest body");
    assert!(
        body[..] == want[..],
        "manifest {repo}:{reference} from {} is byte-exact",
        server.base
    );
}

/// The digest a tag resolves to on `server`, by HEAD and by GET (they must agree).
async fn tag_digest(c: &reqwest::Client, server: &Berth, repo: &str, tag: &str) -> String {
    let url = server.url(&format!("/v2/{repo}/manifests/{tag}"));
    let head = c
        .head(&url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("HEAD manifest");
    assert_eq!(head.status(), 200, "HEAD {repo}:{tag} on {}", server.base);
    let get = c
        .get(&url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(get.status(), 200, "GET {repo}:{tag} on {}", server.base);
    let (h, g) = (
        header(&head, "docker-content-digest"),
        header(&get, "docker-content-digest"),
    );
    assert_eq!(
        h, g,
        "HEAD and GET of {repo}:{tag} on {} agree",
        server.base
    );
    assert_eq!(sha256(&get.bytes().await.expect("body")), g);
    g
}

async fn put_manifest(
    c: &reqwest::Client,
    server: &Berth,
    repo: &str,
    reference: &str,
    manifest: &[u8],
) {
    let r = c
        .put(server.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.to_vec())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(
        r.status(),
        201,
        "PUT {repo}:{reference} on {}: {:?}",
        server.base,
        r.text().await
    );
    assert_eq!(header(&r, "docker-content-digest"), sha256(manifest));
}

async fn tags(c: &reqwest::Client, server: &Berth, repo: &str) -> Value {
    let r = c
        .get(server.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .expect("tags list");
    assert_eq!(r.status(), 200, "tags list of {repo} on {}", server.base);
    r.json().await.expect("tags JSON")
}

/// One page of the catalog: its repositories and the `Link` to the next page, if any.
async fn catalog_page(
    c: &reqwest::Client,
    server: &Berth,
    path_and_query: &str,
) -> (Vec<String>, Option<String>) {
    let r = c
        .get(server.url(path_and_query))
        .send()
        .await
        .expect("catalog");
    assert_eq!(r.status(), 200, "{path_and_query} on {}", server.base);
    let link = r
        .headers()
        .get("link")
        .map(|v| v.to_str().expect("ASCII Link").to_string());
    let v: Value = r.json().await.expect("catalog JSON");
    let repos = v["repositories"]
        .as_array()
        .expect("repositories array")
        .iter()
        .map(|x| x.as_str().expect("repository name").to_string())
        .collect();
    (repos, link)
}

/// The path and query in a `Link: <...>; rel="next"` header.
fn link_target(link: &str) -> String {
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    let target = &link[start..end];
    if target.starts_with('/') {
        target.to_string()
    } else {
        let after_scheme = target.split_once("://").map_or(target, |(_, rest)| rest);
        after_scheme
            .find('/')
            .map_or("/".to_string(), |i| after_scheme[i..].to_string())
    }
}

// ---------------------------------------------------------------------------------------
// Replicas on PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_moves_between_replicas_chunk_by_chunk() {
    let rs = replicas().await;
    let (a, b) = (&rs.a, &rs.b);
    let c = client();
    let repo = "team/app";
    let blob = pattern(3 * 1024 * 1024 + 12_345, 1);
    let digest = sha256(&blob);
    let (one, rest) = blob.split_at(1024 * 1024 + 37);
    let (two, three) = rest.split_at(2 * 1024 * 1024);

    let location = start_upload(&c, a, repo).await;
    patch_chunk(&c, b, &location, 0, one).await;
    assert_eq!(
        upload_range(&c, a, &location).await,
        format!("0-{}", one.len() - 1)
    );
    patch_chunk(&c, a, &location, one.len(), two).await;

    // B sees A's progress: a chunk from the old offset is out of order there, and changes
    // nothing.
    let stale = c
        .patch(at(b, &location))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{}-{}", one.len(), one.len() + 9))
        .header("content-length", 10)
        .body(vec![0u8; 10])
        .send()
        .await
        .expect("stale PATCH");
    assert_eq!(stale.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let held = format!("0-{}", one.len() + two.len() - 1);
    assert_eq!(upload_range(&c, b, &location).await, held);
    assert_eq!(upload_range(&c, a, &location).await, held);

    // B finishes it with the last chunk.
    let put_url = format!(
        "{}{}digest={digest}",
        at(b, &location),
        if location.contains('?') { '&' } else { '?' }
    );
    let r = c
        .put(put_url)
        .header("content-type", "application/octet-stream")
        .header("content-length", three.len())
        .body(three.to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "finishing on B: {:?}", r.text().await);
    assert_eq!(header(&r, "docker-content-digest"), digest);

    for server in [a, b] {
        assert_blob(&c, server, repo, &digest, &blob).await;
        let head = c
            .head(server.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .expect("HEAD blob");
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "content-length"), blob.len().to_string());
        // The session is gone everywhere.
        let r = c
            .get(at(server, &location))
            .send()
            .await
            .expect("upload status");
        assert_eq!(r.status(), 404);
    }
    assert!(
        a.upload_files().is_empty(),
        "upload files left: {:?}",
        a.upload_files()
    );
    assert!(a.blob_files().contains(&a.blob_path(&digest)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_manifest_pushed_on_one_replica_is_listed_and_pulled_on_the_other() {
    let rs = replicas().await;
    let (a, b) = (&rs.a, &rs.b);
    let c = client();
    let repo = "team/image";
    let layer = pattern(200_000, 2);
    let (digest, manifest) = push_image(&c, a, repo, "v1", &layer).await;

    assert_eq!(
        tags(&c, b, repo).await,
        serde_json::json!({ "name": repo, "tags": ["v1"] })
    );
    assert_manifest(&c, b, repo, "v1", &manifest, OCI_MANIFEST).await;
    assert_manifest(&c, b, repo, &digest, &manifest, OCI_MANIFEST).await;
    assert_blob(&c, b, repo, &sha256(&layer), &layer).await;

    // And the other way round, with a second tag added on B.
    put_manifest(&c, b, repo, "stable", &manifest).await;
    assert_eq!(
        tags(&c, a, repo).await,
        serde_json::json!({ "name": repo, "tags": ["stable", "v1"] })
    );
    assert_manifest(&c, a, repo, "stable", &manifest, OCI_MANIFEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_moved_on_one_replica_is_seen_by_the_other_immediately() {
    let rs = replicas().await;
    let (a, b) = (&rs.a, &rs.b);
    let c = client();
    let repo = "team/moving";
    let (first, first_bytes) = push_image(&c, a, repo, "latest", b"layer one").await;
    // Both replicas resolve (and may cache) the tag.
    assert_eq!(tag_digest(&c, a, repo, "latest").await, first);
    assert_eq!(tag_digest(&c, b, repo, "latest").await, first);

    let (second, second_bytes) = push_image(&c, b, repo, "latest", b"layer two").await;
    assert_ne!(first, second);
    assert_eq!(
        tag_digest(&c, a, repo, "latest").await,
        second,
        "A sees B's move at once"
    );

    // Back and forth, each move made on one replica and read at once on the other.
    for round in 0..6 {
        let (writer, reader) = if round % 2 == 0 { (a, b) } else { (b, a) };
        let (want, bytes) = if round % 2 == 0 {
            (&first, &first_bytes)
        } else {
            (&second, &second_bytes)
        };
        put_manifest(&c, writer, repo, "latest", bytes).await;
        assert_eq!(
            &tag_digest(&c, reader, repo, "latest").await,
            want,
            "round {round}"
        );
        assert_eq!(
            &tag_digest(&c, writer, repo, "latest").await,
            want,
            "round {round}"
        );
    }

    // A tag deleted on B is gone on A.
    let r = c
        .delete(b.url(&format!("/v2/{repo}/manifests/latest")))
        .send()
        .await
        .expect("DELETE tag");
    assert_eq!(r.status(), 202);
    let r = c
        .get(a.url(&format!("/v2/{repo}/manifests/latest")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    // The manifests stay, by digest, on both.
    assert_manifest(&c, a, repo, &second, &second_bytes, OCI_MANIFEST).await;
    assert_manifest(&c, b, repo, &first, &first_bytes, OCI_MANIFEST).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_agrees_on_both_replicas() {
    let rs = replicas().await;
    let (a, b) = (&rs.a, &rs.b);
    let c = client();
    let repos = [
        "cat/zeta", "cat/b-1", "cat/b.1", "cat/b/c", "cat/b0", "cat/b_1", "alpha", "cat/a",
    ];
    for (i, repo) in repos.iter().enumerate() {
        let server = if i % 2 == 0 { a } else { b };
        push_blob(&c, server, repo, format!("blob for {repo}").as_bytes()).await;
    }
    let mut expected: Vec<String> = repos.iter().map(|s| s.to_string()).collect();
    expected.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));

    let (on_a, link_a) = catalog_page(&c, a, "/v2/_catalog").await;
    let (on_b, link_b) = catalog_page(&c, b, "/v2/_catalog").await;
    assert_eq!(on_a, expected);
    assert_eq!(on_b, expected);
    assert_eq!((link_a, link_b), (None, None));

    // Paginated, each page from the other replica than the one that gave the Link.
    let mut walked = Vec::new();
    let mut next = Some("/v2/_catalog?n=3".to_string());
    let mut turn = 0;
    while let Some(path) = next {
        let server = if turn % 2 == 0 { a } else { b };
        let (page, link) = catalog_page(&c, server, &path).await;
        let (same, same_link) = catalog_page(&c, if turn % 2 == 0 { b } else { a }, &path).await;
        assert_eq!(
            (&page, &link),
            (&same, &same_link),
            "page {path} differs between replicas"
        );
        assert!(page.len() <= 3);
        walked.extend(page);
        next = link.as_deref().map(link_target);
        turn += 1;
        assert!(turn < 10, "pagination does not end");
    }
    assert_eq!(walked, expected);
}

/// A client that retries a PATCH on another replica while the first attempt is still in
/// flight sends two chunks for the same offset. The metadata store lets exactly one of them
/// advance the session; the bytes stored must be that one's.
/// (The writing request claims the session in the shared database, so the loser is refused
/// before it touches the store.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_from_the_same_offset_store_the_acknowledged_one() {
    let rs = replicas().await;
    let (a, b) = (&rs.a, &rs.b);
    let c = client();
    let repo = "team/retry";
    for round in 0..3u64 {
        let left = pattern(8 * 1024 * 1024, 30 + round);
        let right = pattern(8 * 1024 * 1024, 60 + round);
        let location = start_upload(&c, a, repo).await;
        let send = |server: &Berth, bytes: &[u8]| {
            c.patch(at(server, &location))
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("0-{}", bytes.len() - 1))
                .header("content-length", bytes.len())
                .body(bytes.to_vec())
                .send()
        };
        let (ra, rb) = tokio::join!(send(a, &left), send(b, &right));
        let (sa, sb) = (
            ra.expect("PATCH on A").status(),
            rb.expect("PATCH on B").status(),
        );
        let winner = match (sa.as_u16(), sb.as_u16()) {
            (202, 416) => &left,
            (416, 202) => &right,
            other => panic!(
                "round {round}: exactly one PATCH from offset 0 is acknowledged, got {other:?}"
            ),
        };
        let digest = sha256(winner);
        let r = c
            .put(format!("{}?digest={digest}", at(b, &location)))
            .header("content-length", 0)
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 201, "round {round}: {:?}", r.text().await);
        assert_blob(&c, a, repo, &digest, winner).await;
    }
}

// ---------------------------------------------------------------------------------------
// Crash safety (embedded SQLite)

/// A blob the server acknowledged: its digest and bytes.
type Pushed = (String, Vec<u8>);

/// Stops a server the hard way: `Berth`'s `Drop` is `Child::kill`, which is SIGKILL, so
/// nothing gets a chance to flush or shut down.
fn sigkill(server: Berth) {
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_acknowledged_survives_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        data_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let c = client();
    let first = Berth::start_with(options.clone());

    // A monolithic blob, a chunked blob, an image with two tags, a deleted tag, and an
    // upload in progress with one acknowledged chunk.
    let small = pattern(10_000, 10);
    let small_digest = push_blob(&c, &first, "crash/blobs", &small).await;
    let chunked = pattern(2 * 1024 * 1024 + 5, 11);
    let chunked_digest = sha256(&chunked);
    let location = start_upload(&c, &first, "crash/blobs").await;
    patch_chunk(&c, &first, &location, 0, &chunked[..1024 * 1024]).await;
    patch_chunk(&c, &first, &location, 1024 * 1024, &chunked[1024 * 1024..]).await;
    let r = c
        .put(format!("{}?digest={chunked_digest}", at(&first, &location)))
        .header("content-length", 0)
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201);

    let layer = pattern(300_000, 12);
    let (image_digest, image) = push_image(&c, &first, "crash/image", "v1", &layer).await;
    put_manifest(&c, &first, "crash/image", "latest", &image).await;
    put_manifest(&c, &first, "crash/image", "doomed", &image).await;
    let r = c
        .delete(first.url("/v2/crash/image/manifests/doomed"))
        .send()
        .await
        .expect("DELETE tag");
    assert_eq!(r.status(), 202);

    let pending = pattern(1024 * 1024 + 99, 13);
    let pending_location = start_upload(&c, &first, "crash/pending").await;
    patch_chunk(&c, &first, &pending_location, 0, &pending[..700_000]).await;

    sigkill(first);
    let second = Berth::start_with(options);

    assert_blob(&c, &second, "crash/blobs", &small_digest, &small).await;
    assert_blob(&c, &second, "crash/blobs", &chunked_digest, &chunked).await;
    assert_blob(&c, &second, "crash/image", &sha256(&layer), &layer).await;
    assert_manifest(&c, &second, "crash/image", "v1", &image, OCI_MANIFEST).await;
    assert_manifest(&c, &second, "crash/image", "latest", &image, OCI_MANIFEST).await;
    assert_manifest(
        &c,
        &second,
        "crash/image",
        &image_digest,
        &image,
        OCI_MANIFEST,
    )
    .await;
    assert_eq!(
        tags(&c, &second, "crash/image").await,
        serde_json::json!({ "name": "crash/image", "tags": ["latest", "v1"] })
    );
    let (catalog, _) = catalog_page(&c, &second, "/v2/_catalog").await;
    // An upload in progress does not make a repository.
    assert_eq!(catalog, ["crash/blobs", "crash/image"]);

    // The upload in progress continues from its acknowledged length on the new process.
    assert_eq!(
        upload_range(&c, &second, &pending_location).await,
        "0-699999"
    );
    patch_chunk(&c, &second, &pending_location, 700_000, &pending[700_000..]).await;
    let pending_digest = sha256(&pending);
    let r = c
        .put(format!(
            "{}?digest={pending_digest}",
            at(&second, &pending_location)
        ))
        .header("content-length", 0)
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_blob(&c, &second, "crash/pending", &pending_digest, &pending).await;
    let (catalog, _) = catalog_page(&c, &second, "/v2/_catalog").await;
    assert_eq!(catalog, ["crash/blobs", "crash/image", "crash/pending"]);
    assert!(
        second.upload_files().is_empty(),
        "upload files left: {:?}",
        second.upload_files()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_pushes_loses_no_acknowledged_blob_and_leaves_nothing_half_visible() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        data_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let first = Berth::start_with(options.clone());

    // A client pushing blobs one after another; it records each blob the server
    // acknowledged, and stops at the first failure (the kill).
    let acknowledged: Arc<Mutex<Vec<Pushed>>> = Arc::default();
    let pusher = {
        let acknowledged = acknowledged.clone();
        let base = first.base.clone();
        tokio::spawn(async move {
            let c = client();
            for i in 0u64.. {
                let bytes = pattern(256 * 1024 + i as usize, 100 + i);
                let digest = sha256(&bytes);
                let r = c
                    .post(format!(
                        "{base}/v2/crash/many/blobs/uploads/?digest={digest}"
                    ))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        acknowledged.lock().unwrap().push((digest, bytes))
                    }
                    _ => break,
                }
            }
        })
    };
    let waited = std::time::Instant::now();
    while acknowledged.lock().unwrap().len() < 15 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "pushes are too slow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigkill(first);
    pusher.await.expect("pusher task");
    let acknowledged = acknowledged.lock().unwrap().clone();

    let second = Berth::start_with(options);
    let c = client();
    for (digest, bytes) in &acknowledged {
        assert_blob(&c, &second, "crash/many", digest, bytes).await;
    }
    // Every blob file in the store holds exactly the content its name says: a push cut off
    // by the kill is either wholly there or not there at all.
    for path in second.blob_files() {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let bytes = second.stored_blob(&format!("sha256:{name}"));
        assert_eq!(
            sha256(&bytes),
            format!("sha256:{name}"),
            "{} is half-written",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_patch_whose_connection_drops_mid_body_leaves_the_session_at_its_previous_length() {
    let server = Berth::start();
    let c = client();
    let repo = "flaky/net";
    let blob = pattern(3 * 1024 * 1024 + 777, 20);
    let digest = sha256(&blob);
    let first = 1024 * 1024;

    let location = start_upload(&c, &server, repo).await;
    patch_chunk(&c, &server, &location, 0, &blob[..first]).await;
    let acknowledged = format!("0-{}", first - 1);

    // Twice: a chunked PATCH (Content-Range and Content-Length) and a streamed one (neither),
    // each cut off after part of its body.
    for with_range in [true, false] {
        let sent: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::copy_from_slice(&blob[first..first + 256 * 1024])),
            Ok(Bytes::copy_from_slice(
                &blob[first + 256 * 1024..first + 512 * 1024],
            )),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "network went away",
            )),
        ];
        let mut req = c
            .patch(at(&server, &location))
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream::iter(sent)));
        if with_range {
            let rest = blob.len() - first;
            req = req
                .header("content-range", format!("{}-{}", first, blob.len() - 1))
                .header("content-length", rest);
        }
        let r = req.send().await;
        assert!(r.is_err(), "the request cannot complete: {r:?}");
        assert_eq!(
            upload_range(&c, &server, &location).await,
            acknowledged,
            "a PATCH that was never acknowledged does not move the session (with_range={with_range})"
        );
    }

    // The retry from the reported offset finishes with the right digest.
    patch_chunk(&c, &server, &location, first, &blob[first..]).await;
    let r = c
        .put(format!("{}?digest={digest}", at(&server, &location)))
        .header("content-length", 0)
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_blob(&c, &server, repo, &digest, &blob).await;
    assert!(
        server.upload_files().is_empty(),
        "upload files left: {:?}",
        server.upload_files()
    );
}
