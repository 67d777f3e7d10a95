//! Blob uploads: monolithic (POST then PUT, single POST), chunked and streamed PATCH,
//! status, cancel, cross-repository mount, and digest verification. The ways of pushing,
//! misplaced chunks, mounts and wrong digests are tables: a failing case prints its name.

#[macro_use]
mod common;
use common::*;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn patch(c: &impl Http, url: &str, range: Option<&str>, body: &[u8]) -> reqwest::Response {
    let mut rq = c
        .patch(url)
        .header("content-type", "application/octet-stream")
        .body(body.to_vec());
    if let Some(range) = range {
        rq = rq.header("content-range", range);
    }
    rq.send().await.unwrap()
}

async fn status(c: &impl Http, url: &str) -> reqwest::Response {
    c.get(url).send().await.unwrap()
}

/// Closes an upload with `PUT <location>?digest=` and an empty body.
async fn close(c: &impl Http, url: &str, digest: &str) -> reqwest::Response {
    c.put(with_query(url, &format!("digest={digest}")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap()
}

/// Asserts the 201 that makes a blob visible, and that the blob reads back as `bytes`.
async fn assert_created(c: &impl Http, b: &Berth, repo: &str, r: reqwest::Response, bytes: &[u8]) {
    assert_created_as(c, b, repo, repo, r, bytes, &sha256(bytes)).await;
}

/// [`assert_created`] for the case `case`, with the blob under `digest`.
async fn assert_created_as(
    c: &impl Http,
    b: &Berth,
    case: &str,
    repo: &str,
    r: reqwest::Response,
    bytes: &[u8],
    digest: &str,
) {
    assert_eq!(r.status(), 201, "case {case}: {:?}", r.headers());
    assert_api_version(&r);
    assert_eq!(
        header_str(&r, "location"),
        format!("/v2/{repo}/blobs/{digest}"),
        "case {case}"
    );
    assert_eq!(
        header_str(&r, "docker-content-digest"),
        digest,
        "case {case}"
    );
    let got = c
        .get(location_url(b, &header_str(&r, "location")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200, "case {case}");
    assert_eq!(
        header_str(&got, "content-length"),
        bytes.len().to_string(),
        "case {case}"
    );
    assert!(
        got.bytes().await.unwrap().as_ref() == bytes,
        "case {case}: blob {digest} does not read back byte-exact"
    );
    assert!(
        b.stored_blob(digest) == bytes,
        "case {case}: the store holds other bytes"
    );
    assert!(
        b.upload_files().is_empty(),
        "case {case}: upload files left: {:?}",
        b.upload_files()
    );
}

in_both_modes!(post_opens_a_session_with_location_and_upload_uuid);
async fn post_opens_a_session_with_location_and_upload_uuid(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let r = c
        .post(b.url("/v2/app/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_api_version(&r);
    let location = header_str(&r, "location");
    let uuid = header_str(&r, "docker-upload-uuid");
    assert!(!uuid.is_empty());
    assert!(location.starts_with("/v2/app/blobs/uploads/"), "{location}");
    assert!(
        location.contains(&uuid),
        "Location {location} names the session {uuid}"
    );
    assert_eq!(header_str(&r, "range"), "0-0");
    assert_eq!(b.upload_files().len(), 1);
    assert!(b.blob_files().is_empty());
}

/// How a PATCH sends its piece.
#[derive(Clone, Copy, PartialEq)]
enum Piece {
    /// With `Content-Range: <from>-<to - 1>`.
    Ranged,
    /// Without Content-Range: appended where the session stands.
    Appended,
    /// Of unknown length (Transfer-Encoding: chunked), without Content-Range.
    Streamed,
}

/// How a push ends.
#[derive(Clone, Copy, PartialEq)]
enum Last {
    /// One `POST ?digest=` with every byte, no session.
    SinglePost,
    /// `PUT ?digest=` with the bytes no PATCH sent (none: an empty body), with
    /// Content-Range and Content-Type as the flags say.
    Put { range: bool, content_type: bool },
}

/// One way of pushing a blob of `len` bytes: PATCHes that end at the given offsets, then
/// the last request.
struct Push {
    name: &'static str,
    len: usize,
    sha512: bool,
    patches: Vec<(usize, Piece)>,
    last: Last,
}

in_both_modes!(blobs_pushed_every_way_read_back_byte_exact);
async fn blobs_pushed_every_way_read_back_byte_exact(auth: Auth) {
    use Piece::*;
    let close_empty = Last::Put {
        range: false,
        content_type: false,
    };
    let mib = 1024 * 1024;
    let big = 10 * mib + 12_345;
    let push = |name, len, patches, last| Push {
        name,
        len,
        sha512: false,
        patches,
        last,
    };
    let cases = [
        push(
            "POST then PUT",
            1000,
            vec![],
            Last::Put {
                range: false,
                content_type: true,
            },
        ),
        push("single POST", 1000, vec![], Last::SinglePost),
        push(
            "chunks with Content-Range",
            30,
            vec![(10, Ranged), (20, Ranged), (30, Ranged)],
            close_empty,
        ),
        push(
            "chunks without Content-Range",
            64,
            vec![(40, Appended), (64, Appended)],
            close_empty,
        ),
        push(
            "streamed PATCH",
            300_000,
            vec![(300_000, Streamed)],
            close_empty,
        ),
        push(
            "final PUT with the last chunk",
            50,
            vec![(30, Ranged)],
            Last::Put {
                range: true,
                content_type: true,
            },
        ),
        push(
            "final PUT with the rest, no Content-Range",
            50,
            vec![(30, Ranged)],
            Last::Put {
                range: false,
                content_type: false,
            },
        ),
        push("zero bytes", 0, vec![], close_empty),
        Push {
            sha512: true,
            ..push(
                "chunks under a sha512 digest",
                5000,
                vec![(3000, Ranged), (5000, Ranged)],
                close_empty,
            )
        },
        push(
            "10 MiB in 3 MiB chunks",
            big,
            (1..=4).map(|i| ((i * 3 * mib).min(big), Ranged)).collect(),
            close_empty,
        ),
    ];
    let repos: Vec<String> = (0..cases.len()).map(|i| format!("app{i}")).collect();
    let (b, c) = auth
        .start(&projects_of(repos.iter().map(String::as_str)))
        .await;
    for (i, case) in cases.into_iter().enumerate() {
        let name = case.name;
        let repo = format!("app{i}");
        let bytes = common::pattern(case.len, i as u64 + 1);
        let digest = if case.sha512 {
            sha512(&bytes)
        } else {
            sha256(&bytes)
        };
        if case.last == Last::SinglePost {
            let r = c
                .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
                .header("content-type", "application/octet-stream")
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            assert_created_as(&c, &b, name, &repo, r, &bytes, &digest).await;
            continue;
        }
        let session = open_upload(&c, &b, &repo).await;
        let mut url = session.clone();
        let mut at = 0;
        for (end, piece) in case.patches {
            let part = &bytes[at..end];
            let r = match piece {
                Ranged => patch(&c, &url, Some(&format!("{at}-{}", end - 1)), part).await,
                Appended => patch(&c, &url, None, part).await,
                Streamed => {
                    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                        part.chunks(65_536).map(|c| Ok(c.to_vec())).collect();
                    c.patch(&url)
                        .header("content-type", "application/octet-stream")
                        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
                        .send()
                        .await
                        .unwrap()
                }
            };
            assert_eq!(r.status(), 202, "case {name}: PATCH to {end}");
            assert_api_version(&r);
            assert_eq!(
                header_str(&r, "range"),
                format!("0-{}", end - 1),
                "case {name}"
            );
            url = location_url(&b, &header_str(&r, "location"));
            at = end;
        }
        let Last::Put {
            range,
            content_type,
        } = case.last
        else {
            unreachable!()
        };
        let r = if at == bytes.len() && !range && !content_type {
            close(&c, &url, &digest).await
        } else {
            let mut rq = c
                .put(with_query(&url, &format!("digest={digest}")))
                .body(bytes[at..].to_vec());
            if range {
                rq = rq.header("content-range", format!("{at}-{}", bytes.len() - 1));
            }
            if content_type {
                rq = rq.header("content-type", "application/octet-stream");
            }
            rq.send().await.unwrap()
        };
        assert_created_as(&c, &b, name, &repo, r, &bytes, &digest).await;
        // The session is finished.
        assert_upload_unknown(&c, &session, name).await;
    }
}

/// A chunk that does not start where the session stands, after `held` bytes went in; then
/// the right one, by the same method, from `held` on.
struct Misplaced {
    name: &'static str,
    len: usize,
    held: usize,
    method: reqwest::Method,
    bad: std::ops::Range<usize>,
}

in_both_modes!(misplaced_chunks_are_416_and_leave_the_session_where_it_was);
async fn misplaced_chunks_are_416_and_leave_the_session_where_it_was(auth: Auth) {
    use reqwest::Method;
    let cases = [
        Misplaced {
            name: "PATCH leaving a gap",
            len: 30,
            held: 10,
            method: Method::PATCH,
            bad: 15..25,
        },
        Misplaced {
            name: "final PUT not at the offset",
            len: 50,
            held: 30,
            method: Method::PUT,
            bad: 35..50,
        },
    ];
    let (b, c) = auth.start(&["app"]).await;
    for case in cases {
        let name = case.name;
        let bytes = pattern(case.len);
        let digest = sha256(&bytes);
        let held = format!("0-{}", case.held - 1);
        let url = open_upload(&c, &b, "app").await;
        let r = patch(&c, &url, Some(&held), &bytes[..case.held]).await;
        assert_eq!(r.status(), 202, "case {name}");
        let blobs = b.blob_files();
        let send = |range: std::ops::Range<usize>| {
            let url = match case.method {
                Method::PUT => with_query(&url, &format!("digest={digest}")),
                _ => url.clone(),
            };
            c.request(case.method.clone(), url)
                .header(
                    "content-range",
                    format!("{}-{}", range.start, range.end - 1),
                )
                .body(bytes[range].to_vec())
                .send()
        };

        let r = send(case.bad.clone()).await.unwrap();
        assert_eq!(header_str(&r, "range"), held, "case {name}");
        assert_refused_with(r, name, 416, "BLOB_UPLOAD_INVALID").await;
        assert_eq!(b.blob_files(), blobs, "case {name}: a blob appeared");
        let r = status(&c, &url).await;
        assert_eq!(r.status(), 204, "case {name}");
        assert_eq!(header_str(&r, "range"), held, "case {name}");

        // The right chunk still goes on where the session stands.
        let r = send(case.held..case.len).await.unwrap();
        let r = if case.method == Method::PATCH {
            assert_eq!(r.status(), 202, "case {name}");
            close(&c, &url, &digest).await
        } else {
            r
        };
        assert_created_as(&c, &b, name, "app", r, &bytes, &digest).await;
    }
}

/// [`expect_error`] for the case `name`.
async fn assert_refused_with(r: reqwest::Response, name: &str, status: u16, code: &str) -> String {
    assert_eq!(r.status(), status, "case {name}");
    expect_error(r, status, code).await
}

in_both_modes!(chunk_that_overlaps_is_416_and_leaves_the_session_unchanged);
async fn chunk_that_overlaps_is_416_and_leaves_the_session_unchanged(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let bytes = pattern(30);
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-9"), &bytes[..10]).await.status(),
        202
    );
    assert_eq!(
        patch(&c, &url, Some("10-19"), &bytes[10..20])
            .await
            .status(),
        202
    );

    // Resending bytes 15..25, which overlaps what the session holds.
    let r = patch(&c, &url, Some("15-24"), &bytes[15..25]).await;
    assert_eq!(header_str(&r, "range"), "0-19");
    expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    // So does a chunk starting over from zero.
    let r = patch(&c, &url, Some("0-9"), &bytes[..10]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(header_str(&r, "range"), "0-19");

    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-19");
    assert_eq!(std::fs::metadata(&b.upload_files()[0]).unwrap().len(), 20);

    assert_eq!(
        patch(&c, &url, Some("20-29"), &bytes[20..]).await.status(),
        202
    );
    assert_created(
        &c,
        &b,
        "app",
        close(&c, &url, &sha256(&bytes)).await,
        &bytes,
    )
    .await;
}

in_both_modes!(upload_status_reports_range_location_and_uuid);
async fn upload_status_reports_range_location_and_uuid(auth: Auth) {
    let (b, c) = auth.start(&["team"]).await;
    let url = open_upload(&c, &b, "team/app").await;
    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_api_version(&r);
    assert_eq!(header_str(&r, "range"), "0-0");
    let uuid = header_str(&r, "docker-upload-uuid");
    assert!(!uuid.is_empty());
    assert_eq!(location_url(&b, &header_str(&r, "location")), url);
    assert!(url.contains(&uuid));

    assert_eq!(
        patch(&c, &url, Some("0-24"), &pattern(25)).await.status(),
        202
    );
    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-24");
    assert_eq!(header_str(&r, "docker-upload-uuid"), uuid);
    assert!(r.bytes().await.unwrap().is_empty());
}

in_both_modes!(cancelled_upload_is_gone_with_its_bytes);
async fn cancelled_upload_is_gone_with_its_bytes(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-99"), &pattern(100)).await.status(),
        202
    );
    assert_eq!(b.upload_files().len(), 1);

    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_api_version(&r);
    assert_upload_unknown(&c, &url, "cancelled").await;
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());
    assert!(b.blob_files().is_empty());
}

/// `POST ?mount=<digest>&from=<source>` into `target`, where `source` holds `holds` (the
/// blob itself, another blob, or nothing): mounted (201) when it holds the blob, else an
/// ordinary upload session (202).
struct Mount {
    name: &'static str,
    source: &'static str,
    target: &'static str,
    holds: Holds,
}

#[derive(PartialEq)]
enum Holds {
    TheBlob,
    AnotherBlob,
    Nothing,
}

in_both_modes!(mounts_link_the_blob_when_the_source_has_it_and_else_open_an_upload);
async fn mounts_link_the_blob_when_the_source_has_it_and_else_open_an_upload(auth: Auth) {
    let cases = [
        Mount {
            name: "from a repository that has the blob",
            source: "source-a",
            target: "target-a",
            holds: Holds::TheBlob,
        },
        Mount {
            name: "from a repository without the blob",
            source: "source-b",
            target: "target-b",
            holds: Holds::AnotherBlob,
        },
        Mount {
            name: "from an unknown repository",
            source: "nowhere",
            target: "target-c",
            holds: Holds::Nothing,
        },
    ];
    // With auth on, every source's project exists (`nowhere` too: the repository is unknown).
    let (b, c) = auth
        .start(&projects_of(
            cases.iter().flat_map(|c| [c.source, c.target]),
        ))
        .await;
    for (i, case) in cases.into_iter().enumerate() {
        let (name, target) = (case.name, case.target);
        let bytes = common::pattern(500, i as u64 + 1);
        let digest = sha256(&bytes);
        match case.holds {
            Holds::TheBlob => assert_eq!(push_blob(&c, &b, case.source, &bytes).await, digest),
            Holds::AnotherBlob => {
                push_blob(&c, &b, case.source, b"something else").await;
            }
            Holds::Nothing => {}
        }
        let blobs = b.blob_files();
        let r = c
            .post(b.url(&format!(
                "/v2/{target}/blobs/uploads/?mount={digest}&from={}",
                case.source
            )))
            .send()
            .await
            .unwrap();
        assert_api_version(&r);
        if case.holds == Holds::TheBlob {
            assert_created_as(&c, &b, name, target, r, &bytes, &digest).await;
            // No new session (checked above), no new copy.
            assert_eq!(b.blob_files(), blobs, "case {name}");
            assert!(blobs.contains(&b.blob_path(&digest)), "case {name}");
            assert!(
                catalog_of(&c, &b).await.contains(&target.to_string()),
                "case {name}"
            );
        } else {
            assert_eq!(r.status(), 202, "case {name}");
            assert!(
                !header_str(&r, "docker-upload-uuid").is_empty(),
                "case {name}"
            );
            let url = location_url(&b, &header_str(&r, "location"));
            assert!(
                url.contains(&format!("/v2/{target}/blobs/uploads/")),
                "case {name}: {url}"
            );
            assert_eq!(
                blob_status(&c, &b, target, &digest).await,
                404,
                "case {name}"
            );
            // The session it opened is an ordinary one.
            let r = c
                .put(with_query(&url, &format!("digest={digest}")))
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            assert_created_as(&c, &b, name, target, r, &bytes, &digest).await;
        }
    }
}

/// Bytes sent under a digest they do not have: PATCHed (`patched`) and then sent with the
/// digest (`sent`), in a session or in one POST. Refused, and nothing of them is kept.
struct WrongDigest {
    name: &'static str,
    repo: &'static str,
    session: bool,
    patched: Vec<u8>,
    sent: Vec<u8>,
}

in_both_modes!(a_digest_that_does_not_match_is_digest_invalid_and_discards_the_upload);
async fn a_digest_that_does_not_match_is_digest_invalid_and_discards_the_upload(auth: Auth) {
    let cases = [
        WrongDigest {
            name: "chunks, then an empty PUT",
            repo: "fresh",
            session: true,
            patched: pattern(100),
            sent: Vec::new(),
        },
        WrongDigest {
            name: "single POST",
            repo: "fresh",
            session: false,
            patched: Vec::new(),
            sent: pattern(100),
        },
        WrongDigest {
            name: "PUT with the bytes, into a repository that exists",
            repo: "app",
            session: true,
            patched: Vec::new(),
            sent: b"these bytes".to_vec(),
        },
    ];
    let (b, c, _) = seeded(auth, &projects_of(cases.iter().map(|c| c.repo))).await;
    let before = store_snapshot(&c, &b).await;
    let wrong = sha256(b"not these bytes");
    for case in cases {
        let (name, repo) = (case.name, case.repo);
        let actual = sha256(&[case.patched.as_slice(), &case.sent].concat());
        let message = if case.session {
            let url = open_upload(&c, &b, repo).await;
            if !case.patched.is_empty() {
                let range = format!("0-{}", case.patched.len() - 1);
                let r = patch(&c, &url, Some(&range), &case.patched).await;
                assert_eq!(r.status(), 202, "case {name}");
            }
            let r = c
                .put(with_query(&url, &format!("digest={wrong}")))
                .body(case.sent)
                .send()
                .await
                .unwrap();
            let message = assert_refused_with(r, name, 400, "DIGEST_INVALID").await;
            assert_upload_unknown(&c, &url, name).await;
            message
        } else {
            let r = c
                .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={wrong}")))
                .body(case.sent)
                .send()
                .await
                .unwrap();
            assert_refused_with(r, name, 400, "DIGEST_INVALID").await
        };
        assert!(
            message.contains(&wrong) && message.contains(&actual),
            "case {name}: the message names both digests: {message}"
        );
        assert_eq!(store_snapshot(&c, &b).await, before, "case {name}");
        assert_eq!(blob_status(&c, &b, repo, &wrong).await, 404, "case {name}");
        assert_eq!(blob_status(&c, &b, repo, &actual).await, 404, "case {name}");
        if !before.repositories.iter().any(|(r, _)| r == repo) {
            assert_eq!(tags_of(&c, &b, repo).await, None, "case {name}");
        }
    }
}

in_both_modes!(upload_sessions_belong_to_their_repository);
async fn upload_sessions_belong_to_their_repository(auth: Auth) {
    let (b, c) = auth.start(&["repo-a", "repo-b"]).await;
    let url = open_upload(&c, &b, "repo-a").await;
    let other = url.replace("/v2/repo-a/", "/v2/repo-b/");
    assert_upload_unknown(&c, &other, "another repository's session").await;
    // The session in repo-a is untouched.
    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-0");
}

in_both_modes!(concurrent_sessions_for_the_same_blob_make_one_file);
async fn concurrent_sessions_for_the_same_blob_make_one_file(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let bytes = pattern(2048);
    let u1 = open_upload(&c, &b, "app").await;
    let u2 = open_upload(&c, &b, "app").await;
    assert_ne!(u1, u2);
    assert_eq!(patch(&c, &u1, Some("0-2047"), &bytes).await.status(), 202);
    assert_eq!(patch(&c, &u2, Some("0-2047"), &bytes).await.status(), 202);
    assert_eq!(close(&c, &u1, &sha256(&bytes)).await.status(), 201);
    assert_eq!(close(&c, &u2, &sha256(&bytes)).await.status(), 201);
    assert_eq!(b.blob_files(), vec![b.blob_path(&sha256(&bytes))]);
    assert!(b.upload_files().is_empty());
}

in_both_modes!(completed_upload_cannot_be_completed_again);
async fn completed_upload_cannot_be_completed_again(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let bytes = pattern(10);
    let url = open_upload(&c, &b, "app").await;
    let r = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_upload_unknown(&c, &url, "completed").await;
    assert_eq!(b.blob_files(), vec![b.blob_path(&sha256(&bytes))]);
    assert!(b.upload_files().is_empty());
}

in_both_modes!(concurrent_patches_to_one_session_cannot_corrupt_the_blob);
async fn concurrent_patches_to_one_session_cannot_corrupt_the_blob(auth: Auth) {
    // A client retrying a PATCH while its first attempt is still streaming must not end
    // up with a blob whose bytes differ from the digest it was committed under: the
    // request in flight holds the session, the retry is refused with the resumable state.
    let (b, c) = auth.start(&["app"]).await;
    let url = open_upload(&c, &b, "app").await;
    let first = vec![b'a'; 64 * 1024];
    let second = vec![b'b'; 256 * 1024];

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let slow = {
        let c = c.clone();
        let url = url.clone();
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        tokio::spawn(async move {
            let r = c.patch(&url).body(body).send().await.unwrap();
            (r.status().as_u16(), header_str(&r, "range"))
        })
    };
    tx.send(Ok(first.clone())).await.unwrap();
    // Wait until the slow request's first chunk is in the upload file.
    let upload_file = b.upload_files()[0].clone();
    for _ in 0..500 {
        if std::fs::metadata(&upload_file)
            .map(|m| m.len())
            .unwrap_or(0)
            >= first.len() as u64
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The retry is refused while the first attempt writes, and told where the upload is.
    let r = patch(&c, &url, None, &second).await;
    assert_eq!(header_str(&r, "range"), "0-0");
    assert!(
        header_str(&r, "location").contains("/v2/app/blobs/uploads/"),
        "416 names the session to resume"
    );
    assert_eq!(
        header_str(&r, "connection"),
        "close",
        "the unread body leaves the connection unusable, and the client is told"
    );
    let message = expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    assert!(message.contains("another request is writing"), "{message}");
    // A PUT that would finish the upload is refused the same way.
    let r = close(&c, &url, &sha256(&first)).await;
    expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;

    // The first attempt sends the rest of its body and is acknowledged.
    tx.send(Ok(first.clone())).await.unwrap();
    drop(tx);
    let (status, range) = slow.await.unwrap();
    assert_eq!(status, 202);
    assert_eq!(range, format!("0-{}", 2 * first.len() - 1));

    // The session is free again: the refused PUT changed nothing, and it now completes.
    let whole = [first.clone(), first.clone()].concat();
    let digest = sha256(&whole);
    let r = close(&c, &url, &digest).await;
    assert_eq!(r.status(), 201);
    let got = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), whole.as_slice(), "blob served under {digest}");
    assert!(b.upload_files().is_empty());
}

in_both_modes!(a_client_that_hangs_up_mid_patch_does_not_lock_the_session);
async fn a_client_that_hangs_up_mid_patch_does_not_lock_the_session(auth: Auth) {
    // The request in flight holds the session; when its client disconnects the hold is
    // released at once (not after the lease runs out), and nothing it sent is acknowledged.
    let (b, c) = auth.start(&["app"]).await;
    let url = open_upload(&c, &b, "app").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let hung = {
        let c = c.clone();
        let url = url.clone();
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        tokio::spawn(async move { c.patch(&url).body(body).send().await })
    };
    tx.send(Ok(vec![b'x'; 32 * 1024])).await.unwrap();
    let upload_file = b.upload_files()[0].clone();
    for _ in 0..500 {
        if std::fs::metadata(&upload_file)
            .map(|m| m.len())
            .unwrap_or(0)
            > 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    hung.abort();
    drop(tx);

    let bytes = b"after the hang-up".to_vec();
    let mut status = 0;
    for _ in 0..50 {
        let r = patch(&c, &url, Some(&format!("0-{}", bytes.len() - 1)), &bytes).await;
        status = r.status().as_u16();
        if status == 202 {
            assert_eq!(header_str(&r, "range"), format!("0-{}", bytes.len() - 1));
            break;
        }
        assert_eq!(
            status, 416,
            "only 'busy' is acceptable while the hang-up is noticed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 202,
        "the session stayed locked after its client hung up"
    );
    let digest = sha256(&bytes);
    let r = close(&c, &url, &digest).await;
    assert_eq!(r.status(), 201);
    let got = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice());
}
