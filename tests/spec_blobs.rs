//! Blobs: `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, `Range` reads, and how the
//! store keeps one copy of content shared by repositories.

mod common;
use common::*;

/// 100 bytes: "0123456789" ten times, so any range is easy to read.
fn hundred() -> Vec<u8> {
    b"0123456789".repeat(10)
}

async fn get_range(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    digest: &str,
    range: &str,
) -> reqwest::Response {
    c.get(b.url(&format!("/v2/{repo}/blobs/{digest}")))
        .header("range", range)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn blob_get_returns_the_bytes_with_digest_and_length() {
    let b = Berth::start();
    let c = client();
    let bytes = hundred();
    let digest = push_blob(&c, &b, "app", &bytes).await;
    let r = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_api_version(&r);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(header_str(&r, "content-length"), "100");
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    assert_eq!(b.stored_blob(&digest), bytes);
}

#[tokio::test]
async fn blob_head_has_the_get_headers_and_no_body() {
    let b = Berth::start();
    let c = client();
    let digest = push_blob(&c, &b, "app", &hundred()).await;
    let r = c
        .head(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_api_version(&r);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(header_str(&r, "content-length"), "100");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn blob_head_of_unknown_blob_is_404() {
    let b = Berth::start();
    let c = client();
    push_blob(&c, &b, "app", b"something").await;
    let r = c
        .head(b.url(&format!("/v2/app/blobs/{}", sha256(b"other"))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_api_version(&r);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn blob_get_of_unknown_blob_is_blob_unknown() {
    let b = Berth::start();
    let c = client();
    push_blob(&c, &b, "app", b"something").await;
    let r = c
        .get(b.url(&format!("/v2/app/blobs/{}", sha256(b"other"))))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn blob_range_request_answers_206_with_content_range() {
    let b = Berth::start();
    let c = client();
    let bytes = hundred();
    let digest = push_blob(&c, &b, "app", &bytes).await;
    let r = get_range(&c, &b, "app", &digest, "bytes=10-19").await;
    assert_eq!(r.status(), 206);
    assert_api_version(&r);
    assert_eq!(header_str(&r, "content-range"), "bytes 10-19/100");
    assert_eq!(header_str(&r, "content-length"), "10");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[10..20]);
}

#[tokio::test]
async fn blob_suffix_range_returns_the_last_bytes() {
    let b = Berth::start();
    let c = client();
    let bytes = hundred();
    let digest = push_blob(&c, &b, "app", &bytes).await;
    let r = get_range(&c, &b, "app", &digest, "bytes=-7").await;
    assert_eq!(r.status(), 206);
    assert_eq!(header_str(&r, "content-range"), "bytes 93-99/100");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[93..]);
    // A suffix longer than the blob is the whole blob.
    let r = get_range(&c, &b, "app", &digest, "bytes=-500").await;
    assert_eq!(r.status(), 206);
    assert_eq!(header_str(&r, "content-range"), "bytes 0-99/100");
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn blob_open_range_returns_the_rest() {
    let b = Berth::start();
    let c = client();
    let bytes = hundred();
    let digest = push_blob(&c, &b, "app", &bytes).await;
    let r = get_range(&c, &b, "app", &digest, "bytes=42-").await;
    assert_eq!(r.status(), 206);
    assert_eq!(header_str(&r, "content-range"), "bytes 42-99/100");
    assert_eq!(header_str(&r, "content-length"), "58");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[42..]);
}

#[tokio::test]
async fn blob_range_past_the_end_is_cut_at_the_end() {
    let b = Berth::start();
    let c = client();
    let bytes = hundred();
    let digest = push_blob(&c, &b, "app", &bytes).await;
    let r = get_range(&c, &b, "app", &digest, "bytes=90-1000").await;
    assert_eq!(r.status(), 206);
    assert_eq!(header_str(&r, "content-range"), "bytes 90-99/100");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[90..]);
}

#[tokio::test]
async fn blob_unsatisfiable_range_is_416_with_the_size() {
    let b = Berth::start();
    let c = client();
    let digest = push_blob(&c, &b, "app", &hundred()).await;
    for range in ["bytes=100-", "bytes=200-300", "bytes=-0"] {
        let r = get_range(&c, &b, "app", &digest, range).await;
        assert_eq!(r.status(), 416, "{range}");
        assert_api_version(&r);
        assert_eq!(header_str(&r, "content-range"), "bytes */100", "{range}");
    }
}

#[tokio::test]
async fn blob_head_with_range_describes_the_part() {
    let b = Berth::start();
    let c = client();
    let digest = push_blob(&c, &b, "app", &hundred()).await;
    let r = c
        .head(b.url(&format!("/v2/app/blobs/{digest}")))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header_str(&r, "content-range"), "bytes 0-9/100");
    assert_eq!(header_str(&r, "content-length"), "10");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn zero_byte_blob_round_trips() {
    let b = Berth::start();
    let c = client();
    let digest = push_blob(&c, &b, "app", b"").await;
    let r = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(header_str(&r, "content-length"), "0");
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .head(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "content-length"), "0");
    assert_eq!(b.blob_files(), vec![b.blob_path(&digest)]);
}

#[tokio::test]
async fn sha512_blob_is_served_under_its_sha512_digest() {
    let b = Berth::start();
    let c = client();
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

#[tokio::test]
async fn same_content_pushed_to_two_repositories_is_one_file() {
    let b = Berth::start();
    let c = client();
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

#[tokio::test]
async fn blob_is_served_only_by_repositories_it_was_pushed_to() {
    let b = Berth::start();
    let c = client();
    let digest = push_blob(&c, &b, "repo-a", &hundred()).await;
    push_blob(&c, &b, "repo-b", b"other").await;
    let r = c
        .get(b.url(&format!("/v2/repo-b/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn blob_delete_unlinks_it_from_that_repository_only() {
    let b = Berth::start();
    let c = client();
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

#[tokio::test]
async fn deleted_blob_can_be_pushed_again() {
    let b = Berth::start();
    let c = client();
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

#[tokio::test]
async fn blob_get_of_a_layer_named_by_a_manifest() {
    // Pulling an image: the manifest's descriptors lead to blobs the repository serves.
    let b = Berth::start();
    let c = client();
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

#[tokio::test]
async fn deleted_blob_can_no_longer_back_a_new_manifest() {
    let b = Berth::start();
    let c = client();
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
