//! Bad input: each mistake gets the spec's error code with a message a person can act on,
//! in the JSON error format, and changes nothing in either store.

mod common;
use common::*;

use serde_json::json;

/// A registry holding one tagged image in `app`, and a snapshot of what it holds.
async fn seeded() -> (Berth, reqwest::Client, String, StoreSnapshot) {
    let b = Berth::start();
    let c = client();
    let (digest, _) = push_image(&c, &b, "app", "v1", b"layer").await;
    let snapshot = store_snapshot(&c, &b).await;
    (b, c, digest, snapshot)
}

async fn assert_unchanged(c: &reqwest::Client, b: &Berth, before: &StoreSnapshot) {
    assert_eq!(
        &store_snapshot(c, b).await,
        before,
        "a refused request changed the stores"
    );
}

fn config_and_layer() -> (String, String) {
    (
        sha256(br#"{"architecture":"amd64","os":"linux"}"#),
        sha256(b"layer"),
    )
}

#[tokio::test]
async fn api_version_check_answers_200_with_the_version_header() {
    let b = Berth::start();
    let c = client();
    for url in [b.url("/v2/"), b.url("/v2")] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_api_version(&r);
    }
    let r = c.head(b.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_api_version(&r);
}

#[tokio::test]
async fn every_response_carries_the_api_version_header() {
    let (b, c, digest, _) = seeded().await;
    let layer = sha256(b"layer");
    let upload = open_upload(&c, &b, "app").await;
    let responses = vec![
        c.get(b.url("/v2/_catalog")).send().await.unwrap(),
        c.get(b.url("/v2/app/tags/list")).send().await.unwrap(),
        c.get(b.url(&format!("/v2/app/manifests/{digest}")))
            .send()
            .await
            .unwrap(),
        c.head(b.url("/v2/app/manifests/v1")).send().await.unwrap(),
        c.get(b.url(&format!("/v2/app/blobs/{layer}")))
            .header("range", "bytes=0-1")
            .send()
            .await
            .unwrap(),
        c.get(b.url(&format!("/v2/app/referrers/{digest}")))
            .send()
            .await
            .unwrap(),
        c.get(&upload).send().await.unwrap(),
        c.delete(&upload).send().await.unwrap(),
        // Errors of every kind.
        c.get(b.url("/v2/app/manifests/nope")).send().await.unwrap(),
        c.head(b.url("/v2/app/manifests/nope"))
            .send()
            .await
            .unwrap(),
        c.get(b.url("/v2/app/blobs/sha256:bad"))
            .send()
            .await
            .unwrap(),
        c.get(b.url("/v2/BAD/tags/list")).send().await.unwrap(),
        c.post(b.url("/v2/app/manifests/v1")).send().await.unwrap(),
        c.get(b.url(&format!("/v2/app/blobs/{layer}")))
            .header("range", "bytes=99-")
            .send()
            .await
            .unwrap(),
        c.get(b.url("/v2/app/unknown-endpoint"))
            .send()
            .await
            .unwrap(),
        c.get(b.url("/v2/nope/tags/list")).send().await.unwrap(),
    ];
    for r in &responses {
        assert_api_version(r);
    }
}

#[tokio::test]
async fn invalid_repository_names_are_name_invalid() {
    let (b, c, digest, before) = seeded().await;
    let long = "a".repeat(256);
    for name in [
        "App",
        "a..b",
        "a-",
        "-a",
        "a//b",
        "a/B",
        "a___b",
        "a_.b",
        long.as_str(),
    ] {
        let message = expect_error(
            c.get(b.url(&format!("/v2/{name}/tags/list")))
                .send()
                .await
                .unwrap(),
            400,
            "NAME_INVALID",
        )
        .await;
        assert!(message.contains("repository name"), "{message}");
        expect_error(
            c.get(b.url(&format!("/v2/{name}/manifests/v1")))
                .send()
                .await
                .unwrap(),
            400,
            "NAME_INVALID",
        )
        .await;
        expect_error(
            c.get(b.url(&format!("/v2/{name}/blobs/{digest}")))
                .send()
                .await
                .unwrap(),
            400,
            "NAME_INVALID",
        )
        .await;
        let m = image_manifest((OCI_CONFIG, &digest, 1), &[]);
        expect_error(
            put_manifest_as(&c, &b, name, "v1", OCI_MANIFEST, &m).await,
            400,
            "NAME_INVALID",
        )
        .await;
        let r = c
            .post(b.url(&format!(
                "/v2/{name}/blobs/uploads/?digest={}",
                sha256(b"x")
            )))
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "NAME_INVALID").await;
        let r = c
            .post(b.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "NAME_INVALID").await;
    }
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn invalid_tags_are_refused_on_push() {
    let (b, c, _, before) = seeded().await;
    let (cd, ld) = config_and_layer();
    let m = image_manifest((OCI_CONFIG, &cd, 37), &[(OCI_LAYER, &ld, 5)]);
    let long = "t".repeat(129);
    for tag in [".hidden", "-dash", long.as_str(), "a%2Bb"] {
        let r = put_manifest_as(&c, &b, "app", tag, OCI_MANIFEST, &m).await;
        let message = expect_error(r, 400, "MANIFEST_INVALID").await;
        assert!(message.contains("tag"), "{message}");
    }
    // A bad tag among `?tag=` parameters refuses the whole push.
    let r = put_manifest_as(
        &c,
        &b,
        "app",
        &format!("{}?tag=good&tag=.bad", sha256(&m)),
        OCI_MANIFEST,
        &m,
    )
    .await;
    expect_error(r, 400, "MANIFEST_INVALID").await;
    assert_unchanged(&c, &b, &before).await;
    assert_eq!(manifest_status(&c, &b, "app", "good").await, 404);
}

#[tokio::test]
async fn invalid_digests_are_digest_invalid() {
    let (b, c, _, before) = seeded().await;
    let bad = [
        "sha256:abc".to_string(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "g".repeat(64)),
        format!("sha512:{}", "a".repeat(64)),
        "sha256:".to_string(),
    ];
    for d in &bad {
        expect_error(
            c.get(b.url(&format!("/v2/app/blobs/{d}")))
                .send()
                .await
                .unwrap(),
            400,
            "DIGEST_INVALID",
        )
        .await;
        expect_error(
            c.delete(b.url(&format!("/v2/app/blobs/{d}")))
                .send()
                .await
                .unwrap(),
            400,
            "DIGEST_INVALID",
        )
        .await;
        expect_error(
            c.get(b.url(&format!("/v2/app/manifests/{d}")))
                .send()
                .await
                .unwrap(),
            400,
            "DIGEST_INVALID",
        )
        .await;
        expect_error(
            c.delete(b.url(&format!("/v2/app/manifests/{d}")))
                .send()
                .await
                .unwrap(),
            400,
            "DIGEST_INVALID",
        )
        .await;
        let r = c
            .post(b.url(&format!("/v2/app/blobs/uploads/?digest={d}")))
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "DIGEST_INVALID").await;
    }
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn unsupported_digest_algorithms_are_digest_invalid() {
    let (b, c, _, before) = seeded().await;
    let md5 = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let message = expect_error(
        c.get(b.url(&format!("/v2/app/blobs/{md5}")))
            .send()
            .await
            .unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert!(
        message.contains("md5") && message.contains("sha256"),
        "the message names the algorithm and the supported ones: {message}"
    );
    expect_error(
        c.get(b.url(&format!("/v2/app/manifests/{md5}")))
            .send()
            .await
            .unwrap(),
        400,
        "DIGEST_INVALID",
    )
    .await;
    let r = c
        .post(b.url(&format!("/v2/app/blobs/uploads/?digest={md5}")))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    let m = image_manifest((OCI_CONFIG, &sha256(b"c"), 1), &[]);
    expect_error(
        put_manifest_as(&c, &b, "app", md5, OCI_MANIFEST, &m).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    // Closing an upload with one: the session survives, nothing is committed.
    let upload = open_upload(&c, &b, "app").await;
    let r = c
        .put(with_query(&upload, &format!("digest={md5}")))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert_eq!(c.get(&upload).send().await.unwrap().status(), 204);
    assert_eq!(c.delete(&upload).send().await.unwrap().status(), 204);
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn descriptor_with_an_invalid_digest_is_refused() {
    let (b, c, _, before) = seeded().await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": "md5:d41d8cd98f00b204e9800998ecf8427e", "size": 2 },
        "layers": [],
    }))
    .unwrap();
    expect_error(
        put_manifest_as(&c, &b, "app", "v2", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn manifest_that_is_not_json_is_manifest_invalid() {
    let (b, c, _, before) = seeded().await;
    for body in [
        &b"not json at all"[..],
        b"",
        b"{\"schemaVersion\": 2,",
        b"[]",
    ] {
        let r = put_manifest_as(&c, &b, "app", "v2", OCI_MANIFEST, body).await;
        expect_error(r, 400, "MANIFEST_INVALID").await;
    }
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn manifest_with_schema_version_other_than_2_is_manifest_invalid() {
    let (b, c, _, before) = seeded().await;
    let (cd, ld) = config_and_layer();
    for version in [json!(1), json!(3), json!("2"), serde_json::Value::Null] {
        let mut m = json!({
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": cd, "size": 37 },
            "layers": [{ "mediaType": OCI_LAYER, "digest": ld, "size": 5 }],
        });
        if !version.is_null() {
            m["schemaVersion"] = version.clone();
        }
        let r = put_manifest_as(
            &c,
            &b,
            "app",
            "v2",
            OCI_MANIFEST,
            &serde_json::to_vec(&m).unwrap(),
        )
        .await;
        let message = expect_error(r, 400, "MANIFEST_INVALID").await;
        assert!(
            message.contains("schemaVersion") || message.contains("JSON"),
            "{version}: {message}"
        );
    }
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn manifest_declaring_a_media_type_that_contradicts_content_type_is_manifest_invalid() {
    let (b, c, _, before) = seeded().await;
    let (cd, ld) = config_and_layer();
    let m = image_manifest((OCI_CONFIG, &cd, 37), &[(OCI_LAYER, &ld, 5)]);
    for content_type in [OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST] {
        let r = put_manifest_as(&c, &b, "app", "v2", content_type, &m).await;
        let message = expect_error(r, 400, "MANIFEST_INVALID").await;
        assert!(
            message.contains(OCI_MANIFEST) && message.contains(content_type),
            "{message}"
        );
    }
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn manifest_of_an_unsupported_media_type_is_manifest_invalid() {
    let (b, c, _, before) = seeded().await;
    let (cd, _) = config_and_layer();
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v1+json",
        "config": { "mediaType": OCI_CONFIG, "digest": cd, "size": 37 }, "layers": [],
    }))
    .unwrap();
    let r = put_manifest_as(
        &c,
        &b,
        "app",
        "v2",
        "application/vnd.docker.distribution.manifest.v1+json",
        &m,
    )
    .await;
    expect_error(r, 400, "MANIFEST_INVALID").await;
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn index_with_layers_is_manifest_invalid() {
    let (b, c, digest, before) = seeded().await;
    let (_, ld) = config_and_layer();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": digest, "size": 1 }],
        "layers": [{ "mediaType": OCI_LAYER, "digest": ld, "size": 5 }],
    }))
    .unwrap();
    let message = expect_error(
        put_manifest_as(&c, &b, "app", "idx", OCI_INDEX, &index).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    assert!(message.contains("layers"), "{message}");
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn image_manifest_without_config_is_manifest_invalid() {
    let (b, c, _, before) = seeded().await;
    let (_, ld) = config_and_layer();
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "layers": [{ "mediaType": OCI_LAYER, "digest": ld, "size": 5 }],
    }))
    .unwrap();
    let message = expect_error(
        put_manifest_as(&c, &b, "app", "v2", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    assert!(message.contains("config"), "{message}");
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn descriptor_with_a_negative_size_is_manifest_invalid() {
    let (b, c, _, before) = seeded().await;
    let (cd, ld) = config_and_layer();
    let m = image_manifest((OCI_CONFIG, &cd, 37), &[]);
    let m = String::from_utf8(m).unwrap().replace(
        "\"layers\":[]",
        &format!("\"layers\":[{{\"mediaType\":\"{OCI_LAYER}\",\"digest\":\"{ld}\",\"size\":-5}}]"),
    );
    expect_error(
        put_manifest_as(&c, &b, "app", "v2", OCI_MANIFEST, m.as_bytes()).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    assert_unchanged(&c, &b, &before).await;
}

async fn limited() -> (Berth, reqwest::Client, StoreSnapshot) {
    let b = Berth::start_with(Options {
        env: vec![("BERTH_LIMITS__MAX_MANIFEST_BYTES".into(), "1024".into())],
        ..Default::default()
    });
    let c = client();
    push_blob(&c, &b, "app", br#"{"architecture":"amd64","os":"linux"}"#).await;
    let snapshot = store_snapshot(&c, &b).await;
    (b, c, snapshot)
}

/// A valid image manifest over the pushed config, padded with annotations to `len` bytes.
fn manifest_of_len(len: usize) -> Vec<u8> {
    let (cd, _) = config_and_layer();
    let mut m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": cd, "size": 37 },
        "layers": [],
        "annotations": { "pad": "" },
    });
    let base = serde_json::to_vec(&m).unwrap().len();
    m["annotations"]["pad"] = "x".repeat(len - base).into();
    let bytes = serde_json::to_vec(&m).unwrap();
    assert_eq!(bytes.len(), len);
    bytes
}

#[tokio::test]
async fn manifest_over_the_size_limit_is_413_manifest_invalid() {
    let (b, c, before) = limited().await;
    let m = manifest_of_len(1025);
    let message = expect_error(
        put_manifest_as(&c, &b, "app", "big", OCI_MANIFEST, &m).await,
        413,
        "MANIFEST_INVALID",
    )
    .await;
    assert!(
        message.contains("1024"),
        "the message names the limit: {message}"
    );
    assert_eq!(manifest_status(&c, &b, "app", "big").await, 404);
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&m)).await, 404);
    assert_unchanged(&c, &b, &before).await;

    // Exactly at the limit is fine.
    let m = manifest_of_len(1024);
    assert_eq!(
        put_manifest_as(&c, &b, "app", "fits", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn streamed_manifest_over_the_size_limit_is_413_manifest_invalid() {
    let (b, c, before) = limited().await;
    let m = manifest_of_len(4000);
    // No Content-Length: the limit holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        m.chunks(500).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .put(b.url("/v2/app/manifests/big"))
        .header("content-type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "MANIFEST_INVALID").await;
    assert_eq!(manifest_status(&c, &b, "app", "big").await, 404);
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn manifest_put_by_a_digest_its_body_does_not_have_is_digest_invalid() {
    let (b, c, _, before) = seeded().await;
    let (cd, ld) = config_and_layer();
    let m = image_manifest((OCI_CONFIG, &cd, 37), &[(OCI_LAYER, &ld, 5)]);
    let wrong = sha256(b"something else");
    let message = expect_error(
        put_manifest_as(&c, &b, "app", &wrong, OCI_MANIFEST, &m).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert!(message.contains(&wrong), "{message}");
    assert_eq!(manifest_status(&c, &b, "app", &wrong).await, 404);
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn chunk_whose_content_range_is_not_at_the_session_offset_is_416() {
    let (b, c, _, before_seed) = seeded().await;
    let upload = open_upload(&c, &b, "app").await;
    let before = store_snapshot(&c, &b).await;
    for range in ["5-9", "1-10"] {
        let r = c
            .patch(&upload)
            .header("content-range", range)
            .body(vec![1u8; 5.max(range.len())])
            .send()
            .await
            .unwrap();
        assert_eq!(header_str(&r, "range"), "0-0");
        assert_eq!(location_url(&b, &header_str(&r, "location")), upload);
        let message = expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
        assert!(
            message.contains("starts at") && message.contains('0'),
            "{message}"
        );
    }
    let r = c.get(&upload).send().await.unwrap();
    assert_eq!(header_str(&r, "range"), "0-0");
    assert_unchanged(&c, &b, &before).await;
    assert_eq!(std::fs::metadata(&b.upload_files()[0]).unwrap().len(), 0);
    assert_eq!(c.delete(&upload).send().await.unwrap().status(), 204);
    assert_unchanged(&c, &b, &before_seed).await;
}

#[tokio::test]
async fn malformed_content_range_is_refused() {
    let b = Berth::start();
    let c = client();
    let upload = open_upload(&c, &b, "app").await;
    let r = c
        .patch(&upload)
        .header("content-range", "ten-twenty")
        .body(vec![1u8; 11])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(status == 416 || status == 400, "{status}");
    let message = expect_error(r, status, "BLOB_UPLOAD_INVALID").await;
    assert!(message.contains("ten-twenty"), "{message}");
    assert_eq!(
        header_str(&c.get(&upload).send().await.unwrap(), "range"),
        "0-0"
    );
}

#[tokio::test]
async fn content_range_that_disagrees_with_content_length_is_size_invalid() {
    let b = Berth::start();
    let c = client();
    let upload = open_upload(&c, &b, "app").await;
    let r = c
        .patch(&upload)
        .header("content-range", "0-9")
        .body(vec![1u8; 4])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "SIZE_INVALID").await;
    assert_eq!(
        header_str(&c.get(&upload).send().await.unwrap(), "range"),
        "0-0"
    );
}

#[tokio::test]
async fn upload_put_without_a_digest_is_digest_invalid() {
    let b = Berth::start();
    let c = client();
    let upload = open_upload(&c, &b, "app").await;
    let r = c.put(&upload).body(b"bytes".to_vec()).send().await.unwrap();
    let message = expect_error(r, 400, "DIGEST_INVALID").await;
    assert!(message.contains("digest="), "{message}");
    // The session is still there and still empty.
    let r = c.get(&upload).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-0");
    assert!(b.blob_files().is_empty());
}

#[tokio::test]
async fn upload_put_with_a_digest_that_does_not_match_is_digest_invalid() {
    let (b, c, _, before) = seeded().await;
    let upload = open_upload(&c, &b, "app").await;
    let wrong = sha256(b"other");
    let r = c
        .put(with_query(&upload, &format!("digest={wrong}")))
        .body(b"these bytes".to_vec())
        .send()
        .await
        .unwrap();
    let message = expect_error(r, 400, "DIGEST_INVALID").await;
    assert!(
        message.contains(&wrong) && message.contains(&sha256(b"these bytes")),
        "{message}"
    );
    expect_error(
        c.get(&upload).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn unknown_upload_ids_are_blob_upload_unknown() {
    let (b, c, _, before) = seeded().await;
    for id in [
        "3f1e5d9c-0000-4000-8000-000000000000",
        "not-a-session",
        "a..b",
        "x%2F..%2Fy",
    ] {
        let url = b.url(&format!("/v2/app/blobs/uploads/{id}"));
        expect_error(
            c.get(&url).send().await.unwrap(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .await;
        let r = c
            .patch(&url)
            .header("content-range", "0-2")
            .body(b"abc".to_vec())
            .send()
            .await
            .unwrap();
        expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
        let r = c
            .put(with_query(&url, &format!("digest={}", sha256(b"abc"))))
            .body(b"abc".to_vec())
            .send()
            .await
            .unwrap();
        expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
        expect_error(
            c.delete(&url).send().await.unwrap(),
            404,
            "BLOB_UPLOAD_UNKNOWN",
        )
        .await;
    }
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn unknown_manifests_are_manifest_unknown() {
    let (b, c, _, before) = seeded().await;
    let absent = sha256(b"absent");
    for reference in ["nope", absent.as_str()] {
        let url = b.url(&format!("/v2/app/manifests/{reference}"));
        let message =
            expect_error(c.get(&url).send().await.unwrap(), 404, "MANIFEST_UNKNOWN").await;
        assert!(message.contains(reference), "{message}");
        expect_error(
            c.delete(&url).send().await.unwrap(),
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
        let r = c.head(&url).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_api_version(&r);
    }
    // In a repository that does not exist at all.
    expect_error(
        c.get(b.url("/v2/nowhere/manifests/v1"))
            .send()
            .await
            .unwrap(),
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn unknown_blobs_are_blob_unknown() {
    let (b, c, _, before) = seeded().await;
    let absent = sha256(b"absent");
    let message = expect_error(
        c.get(b.url(&format!("/v2/app/blobs/{absent}")))
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    assert!(message.contains(&absent), "{message}");
    expect_error(
        c.delete(b.url(&format!("/v2/app/blobs/{absent}")))
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    expect_error(
        c.get(b.url(&format!("/v2/nowhere/blobs/{absent}")))
            .send()
            .await
            .unwrap(),
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    let r = c
        .head(b.url(&format!("/v2/app/blobs/{absent}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn unsupported_methods_are_405_unsupported() {
    let (b, c, digest, before) = seeded().await;
    let layer = sha256(b"layer");
    let upload = open_upload(&c, &b, "app").await;
    let before_upload = store_snapshot(&c, &b).await;
    let cases = [
        (reqwest::Method::POST, b.url("/v2/")),
        (reqwest::Method::DELETE, b.url("/v2/")),
        (reqwest::Method::POST, b.url("/v2/_catalog")),
        (reqwest::Method::DELETE, b.url("/v2/app/tags/list")),
        (reqwest::Method::POST, b.url("/v2/app/manifests/v1")),
        (
            reqwest::Method::PATCH,
            b.url(&format!("/v2/app/manifests/{digest}")),
        ),
        (
            reqwest::Method::PUT,
            b.url(&format!("/v2/app/blobs/{layer}")),
        ),
        (
            reqwest::Method::PATCH,
            b.url(&format!("/v2/app/blobs/{layer}")),
        ),
        (reqwest::Method::GET, b.url("/v2/app/blobs/uploads/")),
        (reqwest::Method::POST, upload.clone()),
        (
            reqwest::Method::DELETE,
            b.url(&format!("/v2/app/referrers/{digest}")),
        ),
    ];
    for (method, url) in cases {
        let r = c.request(method.clone(), &url).send().await.unwrap();
        assert!(
            !header_str(&r, "allow").is_empty(),
            "{method} {url} has no Allow header"
        );
        let message = expect_error(r, 405, "UNSUPPORTED").await;
        assert!(message.contains(method.as_str()), "{message}");
    }
    assert_unchanged(&c, &b, &before_upload).await;
    assert_eq!(c.delete(&upload).send().await.unwrap().status(), 204);
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn error_bodies_follow_the_spec_format() {
    let b = Berth::start();
    let c = client();
    let r = c.get(b.url("/v2/app/manifests/v1")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    let e = errors[0].as_object().unwrap();
    assert_eq!(e["code"], "MANIFEST_UNKNOWN");
    assert!(e["message"].is_string());
    for key in e.keys() {
        assert!(
            ["code", "message", "detail"].contains(&key.as_str()),
            "unexpected error field {key}"
        );
    }
}

#[tokio::test]
async fn manifest_blob_unknown_detail_lists_what_is_missing() {
    let (b, c, _, before) = seeded().await;
    let (cd, _) = config_and_layer();
    let missing = sha256(b"missing layer");
    let m = image_manifest((OCI_CONFIG, &cd, 37), &[(OCI_LAYER, &missing, 13)]);
    let r = put_manifest_as(&c, &b, "app", "v2", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(v["errors"][0]["detail"]["missing"], json!([missing]));
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn unknown_endpoints_are_404() {
    let b = Berth::start();
    let c = client();
    for path in ["/v2/app/unknown", "/v2/app/tags", "/v2/app/tags/list/extra"] {
        let r = c.get(b.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_api_version(&r);
    }
}

#[tokio::test]
async fn refused_push_to_an_existing_tag_leaves_the_tag_where_it_was() {
    let (b, c, digest, before) = seeded().await;
    let (cd, _) = config_and_layer();
    let missing = image_manifest(
        (OCI_CONFIG, &cd, 37),
        &[(OCI_LAYER, &sha256(b"missing"), 7)],
    );
    expect_error(
        put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &missing).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    expect_error(
        put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, b"{").await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    expect_error(
        put_manifest_as(&c, &b, "app", "v1", OCI_INDEX, &missing).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    let r = c.head(b.url("/v2/app/manifests/v1")).send().await.unwrap();
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn image_manifest_with_manifests_is_manifest_invalid() {
    let (b, c, digest, before) = seeded().await;
    let (cd, _) = config_and_layer();
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": cd, "size": 37 },
        "layers": [],
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": digest, "size": 1 }],
    }))
    .unwrap();
    let message = expect_error(
        put_manifest_as(&c, &b, "app", "v2", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_INVALID",
    )
    .await;
    assert!(message.contains("manifests"), "{message}");
    assert_unchanged(&c, &b, &before).await;
}

#[tokio::test]
async fn refused_single_post_upload_leaves_no_session_behind() {
    let (b, c, _, before) = seeded().await;
    let bytes = b"monolithic bytes".to_vec();
    let url = b.url(&format!("/v2/app/blobs/uploads/?digest={}", sha256(&bytes)));
    // A Content-Range that does not start at 0, and one that disagrees with the body.
    let r = c
        .post(&url)
        .header("content-range", "5-20")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(
        header_str(&r, "location").is_empty(),
        "points at a session that is gone"
    );
    expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    let r = c
        .post(&url)
        .header("content-range", "0-99")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "SIZE_INVALID").await;
    assert_unchanged(&c, &b, &before).await;
}
