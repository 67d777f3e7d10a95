//! Blobs: `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, `Range` reads (one table: a
//! failing case prints its name), and how the store keeps one copy of content shared by
//! repositories.

#[macro_use]
mod common;
use common::*;

/// 100 bytes: "0123456789" ten times, so any range is easy to read.
fn hundred() -> Vec<u8> {
    b"0123456789".repeat(10)
}

/// A read of a blob (GET or HEAD, with or without a Range) and the answer it must get.
struct Read {
    name: &'static str,
    method: reqwest::Method,
    digest: String,
    range: Option<&'static str>,
    status: u16,
    /// The Content-Range the answer carries, where it must carry one.
    content_range: Option<&'static str>,
    /// The bytes the answer serves (after HEAD, its Content-Length counts them), with the
    /// blob's digest; `None` for a refusal.
    bytes: Option<Vec<u8>>,
    /// The error code of a GET that is refused.
    code: Option<&'static str>,
}

in_both_modes!(blob_reads_answer_by_method_and_range);
async fn blob_reads_answer_by_method_and_range(auth: Auth) {
    use reqwest::Method;
    let (b, c) = auth.start(&["app"]).await;
    let bytes = hundred();
    let digest = push_blob(&c, &b, "app", &bytes).await;
    let empty = push_blob(&c, &b, "app", b"").await;
    let unknown = sha256(b"other");
    let read =
        |name, method, range, status, content_range, part: Option<std::ops::Range<usize>>| Read {
            name,
            method,
            digest: digest.clone(),
            range,
            status,
            content_range,
            bytes: part.map(|p| bytes[p].to_vec()),
            code: None,
        };
    let cases = [
        read("GET", Method::GET, None, 200, None, Some(0..100)),
        read("HEAD", Method::HEAD, None, 200, None, Some(0..100)),
        read(
            "range",
            Method::GET,
            Some("bytes=10-19"),
            206,
            Some("bytes 10-19/100"),
            Some(10..20),
        ),
        read(
            "HEAD of a range",
            Method::HEAD,
            Some("bytes=0-9"),
            206,
            Some("bytes 0-9/100"),
            Some(0..10),
        ),
        read(
            "suffix range",
            Method::GET,
            Some("bytes=-7"),
            206,
            Some("bytes 93-99/100"),
            Some(93..100),
        ),
        // A suffix longer than the blob is the whole blob.
        read(
            "long suffix range",
            Method::GET,
            Some("bytes=-500"),
            206,
            Some("bytes 0-99/100"),
            Some(0..100),
        ),
        read(
            "open range",
            Method::GET,
            Some("bytes=42-"),
            206,
            Some("bytes 42-99/100"),
            Some(42..100),
        ),
        read(
            "range past the end",
            Method::GET,
            Some("bytes=90-1000"),
            206,
            Some("bytes 90-99/100"),
            Some(90..100),
        ),
        read(
            "range from the end",
            Method::GET,
            Some("bytes=100-"),
            416,
            Some("bytes */100"),
            None,
        ),
        read(
            "range beyond the end",
            Method::GET,
            Some("bytes=200-300"),
            416,
            Some("bytes */100"),
            None,
        ),
        read(
            "empty suffix",
            Method::GET,
            Some("bytes=-0"),
            416,
            Some("bytes */100"),
            None,
        ),
        Read {
            digest: empty.clone(),
            bytes: Some(Vec::new()),
            ..read("GET of zero bytes", Method::GET, None, 200, None, None)
        },
        Read {
            digest: empty.clone(),
            bytes: Some(Vec::new()),
            ..read("HEAD of zero bytes", Method::HEAD, None, 200, None, None)
        },
        Read {
            digest: unknown.clone(),
            code: Some("BLOB_UNKNOWN"),
            ..read("GET of an unknown blob", Method::GET, None, 404, None, None)
        },
        Read {
            digest: unknown.clone(),
            ..read(
                "HEAD of an unknown blob",
                Method::HEAD,
                None,
                404,
                None,
                None,
            )
        },
    ];
    for case in cases {
        let name = case.name;
        let mut rq = c.request(
            case.method.clone(),
            b.url(&format!("/v2/app/blobs/{}", case.digest)),
        );
        if let Some(range) = case.range {
            rq = rq.header("range", range);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(r.status(), case.status, "case {name}");
        assert_api_version(&r);
        if let Some(content_range) = case.content_range {
            assert_eq!(
                header_str(&r, "content-range"),
                content_range,
                "case {name}"
            );
        }
        if let Some(code) = case.code {
            expect_error(r, case.status, code).await;
            continue;
        }
        if let Some(want) = &case.bytes {
            assert_eq!(
                header_str(&r, "docker-content-digest"),
                case.digest,
                "case {name}"
            );
            assert_eq!(
                header_str(&r, "content-length"),
                want.len().to_string(),
                "case {name}"
            );
        }
        let got = r.bytes().await.unwrap();
        match (&case.bytes, case.method == Method::HEAD) {
            (_, true) => assert!(got.is_empty(), "case {name}: HEAD has no body"),
            (Some(want), false) => assert_eq!(got.as_ref(), want.as_slice(), "case {name}"),
            (None, false) => {}
        }
    }
    assert_eq!(b.stored_blob(&digest), bytes);
    let mut files = vec![b.blob_path(&digest), b.blob_path(&empty)];
    files.sort();
    assert_eq!(b.blob_files(), files, "one file for each blob");
}

in_both_modes!(sha512_blob_is_served_under_its_sha512_digest);
async fn sha512_blob_is_served_under_its_sha512_digest(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let bytes = hundred();
    let digest = push_blob_sha512(&c, &b, "app", &bytes).await;
    let r = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(b.blob_files(), vec![b.blob_path(&digest)]);
    assert!(
        b.blob_path(&digest)
            .starts_with(b.storage_root().join("blobs").join("sha512"))
    );
    // The same bytes were never pushed by their sha256 digest.
    assert_eq!(blob_status(&c, &b, "app", &sha256(&bytes)).await, 404);
}

in_both_modes!(same_content_pushed_to_two_repositories_is_one_file);
async fn same_content_pushed_to_two_repositories_is_one_file(auth: Auth) {
    let (b, c) = auth.start(&["repo-a", "repo-b"]).await;
    let bytes = hundred();
    let d1 = push_blob(&c, &b, "repo-a", &bytes).await;
    let d2 = push_blob(&c, &b, "repo-b", &bytes).await;
    assert_eq!(d1, d2);
    assert_eq!(b.blob_files(), vec![b.blob_path(&d1)]);
    assert_eq!(blob_status(&c, &b, "repo-a", &d1).await, 200);
    assert_eq!(blob_status(&c, &b, "repo-b", &d1).await, 200);
    // And once more into the same repository.
    push_blob(&c, &b, "repo-a", &bytes).await;
    assert_eq!(b.blob_files(), vec![b.blob_path(&d1)]);
    assert!(b.upload_files().is_empty());
}

in_both_modes!(blob_is_served_only_by_repositories_it_was_pushed_to);
async fn blob_is_served_only_by_repositories_it_was_pushed_to(auth: Auth) {
    let (b, c) = auth.start(&["repo-a", "repo-b"]).await;
    let digest = push_blob(&c, &b, "repo-a", &hundred()).await;
    push_blob(&c, &b, "repo-b", b"other").await;
    let r = c
        .get(b.url(&format!("/v2/repo-b/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;
}

in_both_modes!(blob_delete_unlinks_it_from_that_repository_only);
async fn blob_delete_unlinks_it_from_that_repository_only(auth: Auth) {
    let (b, c) = auth.start(&["repo-a", "repo-b"]).await;
    let bytes = hundred();
    let digest = push_blob(&c, &b, "repo-a", &bytes).await;
    push_blob(&c, &b, "repo-b", &bytes).await;

    let r = c
        .delete(b.url(&format!("/v2/repo-a/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_api_version(&r);
    let r = c
        .get(b.url(&format!("/v2/repo-a/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;
    let r = c
        .head(b.url(&format!("/v2/repo-a/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The other repository still serves the shared bytes, from the one file.
    let r = c
        .get(b.url(&format!("/v2/repo-b/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(b.blob_files(), vec![b.blob_path(&digest)]);

    // Deleting it again from repo-a: it is not there.
    let r = c
        .delete(b.url(&format!("/v2/repo-a/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;
}

in_both_modes!(deleted_blob_can_be_pushed_again);
async fn deleted_blob_can_be_pushed_again(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let bytes = hundred();
    let digest = push_blob(&c, &b, "app", &bytes).await;
    assert_eq!(
        c.delete(b.url(&format!("/v2/app/blobs/{digest}")))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    push_blob(&c, &b, "app", &bytes).await;
    let r = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(b.blob_files(), vec![b.blob_path(&digest)]);
}

in_both_modes!(blob_get_of_a_layer_named_by_a_manifest);
async fn blob_get_of_a_layer_named_by_a_manifest(auth: Auth) {
    // Pulling an image: the manifest's descriptors lead to blobs the repository serves.
    let (b, c) = auth.start(&["app"]).await;
    let layer = hundred();
    let (_, m) = push_image(&c, &b, "app", "v1", &layer).await;
    let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
    for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap()) {
        let digest = d["digest"].as_str().unwrap();
        let r = c
            .get(b.url(&format!("/v2/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = r.bytes().await.unwrap();
        assert_eq!(got.len() as u64, d["size"].as_u64().unwrap());
        assert_eq!(sha256(&got), digest);
    }
}

in_both_modes!(deleted_blob_can_no_longer_back_a_new_manifest);
async fn deleted_blob_can_no_longer_back_a_new_manifest(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push_blob(&c, &b, "app", config).await;
    let ld = push_blob(&c, &b, "app", b"layer").await;
    assert_eq!(
        c.delete(b.url(&format!("/v2/app/blobs/{ld}")))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    let m = image_manifest((OCI_CONFIG, &cd, config.len()), &[(OCI_LAYER, &ld, 5)]);
    let r = put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(manifest_status(&c, &b, "app", "v1").await, 404);
}
