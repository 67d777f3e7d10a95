//! Manifests: `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`, one test per rule
//! of the OCI distribution-spec v1.1.

mod common;
use common::*;

use base64::Engine as _;
use serde_json::json;

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux"}"#;

/// Pushes a config and one layer to `repo`; returns an OCI image manifest over them.
async fn image_over(c: &reqwest::Client, b: &Berth, repo: &str, layer: &[u8]) -> Vec<u8> {
    let cd = push_blob(c, b, repo, CONFIG).await;
    let ld = push_blob(c, b, repo, layer).await;
    image_manifest(
        (OCI_CONFIG, &cd, CONFIG.len()),
        &[(OCI_LAYER, &ld, layer.len())],
    )
}

async fn get_manifest(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    reference: &str,
) -> reqwest::Response {
    c.get(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header(
            "accept",
            [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", "),
        )
        .send()
        .await
        .unwrap()
}

/// Asserts a manifest GET answers 200 with exactly `bytes`, of `media_type`.
async fn assert_manifest(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) {
    let r = get_manifest(c, b, repo, reference).await;
    assert_eq!(r.status(), 200, "GET {repo}:{reference}");
    assert_api_version(&r);
    assert_eq!(header_str(&r, "content-type"), media_type);
    assert_eq!(header_str(&r, "content-length"), bytes.len().to_string());
    assert_eq!(header_str(&r, "docker-content-digest"), sha256(bytes));
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        bytes,
        "{repo}:{reference} is not byte-exact"
    );
}

#[tokio::test]
async fn manifest_put_by_tag_answers_201_with_location_and_digest() {
    let b = Berth::start();
    let c = client();
    let m = image_over(&c, &b, "team/app", b"layer").await;
    let r = put_manifest_as(&c, &b, "team/app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_api_version(&r);
    assert_eq!(header_str(&r, "docker-content-digest"), sha256(&m));
    assert_eq!(
        header_str(&r, "location"),
        format!("/v2/team/app/manifests/{}", sha256(&m))
    );
    assert!(
        header_str(&r, "oci-subject").is_empty(),
        "no subject, no OCI-Subject"
    );
    assert_eq!(
        tags_of(&c, &b, "team/app").await,
        Some(vec!["v1".to_string()])
    );
}

#[tokio::test]
async fn manifest_get_by_tag_returns_the_pushed_bytes_and_headers() {
    let b = Berth::start();
    let c = client();
    let (_, m) = push_image(&c, &b, "team/app", "v1", b"layer").await;
    assert_manifest(&c, &b, "team/app", "v1", OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn manifest_get_by_digest_returns_the_pushed_bytes_and_headers() {
    let b = Berth::start();
    let c = client();
    let (digest, m) = push_image(&c, &b, "team/app", "v1", b"layer").await;
    assert_manifest(&c, &b, "team/app", &digest, OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn manifest_head_has_the_get_headers_and_no_body() {
    let b = Berth::start();
    let c = client();
    let (digest, m) = push_image(&c, &b, "team/app", "v1", b"layer").await;
    for reference in ["v1", digest.as_str()] {
        let r = c
            .head(b.url(&format!("/v2/team/app/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "HEAD {reference}");
        assert_api_version(&r);
        assert_eq!(header_str(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header_str(&r, "content-length"), m.len().to_string());
        assert_eq!(header_str(&r, "docker-content-digest"), digest);
        assert!(r.bytes().await.unwrap().is_empty(), "HEAD has no body");
    }
}

#[tokio::test]
async fn manifest_without_media_type_field_is_served_with_its_content_type() {
    let b = Berth::start();
    let c = client();
    let cd = push_blob(&c, &b, "app", CONFIG).await;
    // No "mediaType" in the body: the request's Content-Type says what it is.
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": { "mediaType": OCI_CONFIG, "digest": cd, "size": CONFIG.len() },
        "layers": [],
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "app", "bare", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_manifest(&c, &b, "app", "bare", OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn oci_image_index_is_accepted() {
    let b = Berth::start();
    let c = client();
    let (d1, m1) = push_image(&c, &b, "multi", "amd64", b"amd64 layer").await;
    let (d2, m2) = push_image(&c, &b, "multi", "arm64", b"arm64 layer").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            { "mediaType": OCI_MANIFEST, "digest": d1, "size": m1.len(), "platform": { "architecture": "amd64", "os": "linux" } },
            { "mediaType": OCI_MANIFEST, "digest": d2, "size": m2.len(), "platform": { "architecture": "arm64", "os": "linux" } },
        ],
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "multi", "latest", OCI_INDEX, &index).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "multi", "latest", OCI_INDEX, &index).await;
    assert_manifest(&c, &b, "multi", &sha256(&index), OCI_INDEX, &index).await;
}

#[tokio::test]
async fn docker_schema2_manifest_is_accepted() {
    let b = Berth::start();
    let c = client();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"docker layer bytes";
    let cd = push_blob(&c, &b, "docker/app", config).await;
    let ld = push_blob(&c, &b, "docker/app", layer).await;
    let m = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": ld, "size": layer.len() }],
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "docker/app", "v2", DOCKER_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "docker/app", "v2", DOCKER_MANIFEST, &m).await;
}

#[tokio::test]
async fn docker_manifest_list_is_accepted() {
    let b = Berth::start();
    let c = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push_blob(&c, &b, "docker/multi", config).await;
    let child = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": config.len() },
        "layers": [],
    }))
    .unwrap();
    assert_eq!(
        put_manifest_as(&c, &b, "docker/multi", "amd64", DOCKER_MANIFEST, &child)
            .await
            .status(),
        201
    );
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{ "mediaType": DOCKER_MANIFEST, "digest": sha256(&child), "size": child.len(),
                        "platform": { "architecture": "amd64", "os": "linux" } }],
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "docker/multi", "latest", DOCKER_LIST, &list).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "docker/multi", "latest", DOCKER_LIST, &list).await;
}

#[tokio::test]
async fn index_nested_in_an_index_is_accepted() {
    let b = Berth::start();
    let c = client();
    let (d, m) = push_image(&c, &b, "nest", "leaf", b"leaf layer").await;
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": d, "size": m.len() }],
    }))
    .unwrap();
    assert_eq!(
        put_manifest_as(&c, &b, "nest", "inner", OCI_INDEX, &inner)
            .await
            .status(),
        201
    );
    let outer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_INDEX, "digest": sha256(&inner), "size": inner.len() }],
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "nest", "outer", OCI_INDEX, &outer).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "nest", "outer", OCI_INDEX, &outer).await;
}

#[tokio::test]
async fn unknown_fields_odd_whitespace_and_key_order_are_kept_byte_exact() {
    let b = Berth::start();
    let c = client();
    let cd = push_blob(&c, &b, "exact", CONFIG).await;
    let ld = push_blob(&c, &b, "exact", b"layer").await;
    // Keys out of the usual order, tabs, CRLF, spaces before colons, unicode escapes and
    // fields no spec defines: none of it may be normalised away.
    let m = format!(
        "{{\r\n\t\"layers\" :[ {{\"size\":5,\"digest\":\"{ld}\",\"mediaType\":\"{OCI_LAYER}\", \"x-layer-note\": [1, 2.50, null]}} ],\n  \
         \"x-vendor\": {{\"nested\": {{\"deep\": true}}, \"text\": \"caf\\u00e9\"}},\n\"config\":{{ \"digest\":\"{cd}\", \"size\":{},\"mediaType\":\"{OCI_CONFIG}\" }},\
         \"mediaType\":\"{OCI_MANIFEST}\",   \"schemaVersion\" : 2 }}\n\n",
        CONFIG.len()
    );
    let r = put_manifest_as(&c, &b, "exact", "odd", OCI_MANIFEST, m.as_bytes()).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(
        header_str(&r, "docker-content-digest"),
        sha256(m.as_bytes())
    );
    assert_manifest(&c, &b, "exact", "odd", OCI_MANIFEST, m.as_bytes()).await;
}

#[tokio::test]
async fn descriptor_with_data_field_needs_no_pushed_blob() {
    let b = Berth::start();
    let c = client();
    // The empty config is embedded in the descriptor (`data`), so it need not be pushed.
    let empty = b"{}";
    let ld = push_blob(&c, &b, "artifacts", b"payload").await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2,
                    "data": base64::engine::general_purpose::STANDARD.encode(empty) },
        "layers": [{ "mediaType": "application/vnd.example.payload", "digest": ld, "size": 7 }],
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "artifacts", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "artifacts", "v1", OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn descriptor_whose_data_does_not_match_its_digest_is_manifest_invalid() {
    let b = Berth::start();
    let c = client();
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2,
                    "data": base64::engine::general_purpose::STANDARD.encode(b"[]") },
        "layers": [],
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "artifacts", "v1", OCI_MANIFEST, &m).await;
    expect_error(r, 400, "MANIFEST_INVALID").await;
    assert_eq!(tags_of(&c, &b, "artifacts").await, None);
}

#[tokio::test]
async fn zero_byte_layer_is_accepted() {
    let b = Berth::start();
    let c = client();
    let cd = push_blob(&c, &b, "empty", CONFIG).await;
    let ld = push_blob(&c, &b, "empty", b"").await;
    assert_eq!(ld, sha256(b""));
    let m = image_manifest((OCI_CONFIG, &cd, CONFIG.len()), &[(OCI_LAYER, &ld, 0)]);
    let r = put_manifest_as(&c, &b, "empty", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "empty", "v1", OCI_MANIFEST, &m).await;
    let r = c
        .get(b.url(&format!("/v2/empty/blobs/{ld}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "content-length"), "0");
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(b.stored_blob_len(&ld), 0);
}

#[tokio::test]
async fn sha512_blobs_and_a_manifest_pushed_by_sha512_digest() {
    let b = Berth::start();
    let c = client();
    let layer = b"a layer addressed by sha512";
    let cd = push_blob_sha512(&c, &b, "five12", CONFIG).await;
    let ld = push_blob_sha512(&c, &b, "five12", layer).await;
    assert_eq!(b.stored_blob(&ld), layer);
    let m = image_manifest(
        (OCI_CONFIG, &cd, CONFIG.len()),
        &[(OCI_LAYER, &ld, layer.len())],
    );
    let digest = sha512(&m);
    let r = put_manifest_as(&c, &b, "five12", &digest, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(
        header_str(&r, "location"),
        format!("/v2/five12/manifests/{digest}")
    );

    let r = get_manifest(&c, &b, "five12", &digest).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(header_str(&r, "content-type"), OCI_MANIFEST);
    assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());
    // Pushed by digest with no tag: nothing is tagged.
    assert_eq!(tags_of(&c, &b, "five12").await, Some(vec![]));
}

#[tokio::test]
async fn put_by_digest_with_tag_parameters_tags_each() {
    let b = Berth::start();
    let c = client();
    let m = image_over(&c, &b, "app", b"layer").await;
    let digest = sha256(&m);
    let r = put_manifest_as(
        &c,
        &b,
        "app",
        &format!("{digest}?tag=a&tag=b"),
        OCI_MANIFEST,
        &m,
    )
    .await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(
        tags_of(&c, &b, "app").await,
        Some(vec!["a".to_string(), "b".to_string()])
    );
    assert_manifest(&c, &b, "app", "a", OCI_MANIFEST, &m).await;
    assert_manifest(&c, &b, "app", "b", OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn manifest_naming_a_blob_the_repository_lacks_is_manifest_blob_unknown() {
    let b = Berth::start();
    let c = client();
    let cd = push_blob(&c, &b, "app", CONFIG).await;
    let missing = sha256(b"never pushed");
    let m = image_manifest(
        (OCI_CONFIG, &cd, CONFIG.len()),
        &[(OCI_LAYER, &missing, 12)],
    );
    let before = store_snapshot(&c, &b).await;
    let r = put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
    let message = expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(
        message.contains(&missing),
        "the message names the missing blob: {message}"
    );
    assert_eq!(manifest_status(&c, &b, "app", "v1").await, 404);
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&m)).await, 404);
    assert_eq!(tags_of(&c, &b, "app").await, Some(vec![]));
    assert_eq!(store_snapshot(&c, &b).await, before);
}

#[tokio::test]
async fn index_naming_a_child_manifest_the_repository_lacks_is_manifest_blob_unknown() {
    let b = Berth::start();
    let c = client();
    let (d, m) = push_image(&c, &b, "other", "v1", b"layer").await;
    // The child exists, but in another repository.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": d, "size": m.len() }],
    }))
    .unwrap();
    let before = store_snapshot(&c, &b).await;
    let r = put_manifest_as(&c, &b, "app", "latest", OCI_INDEX, &index).await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(
        tags_of(&c, &b, "app").await,
        None,
        "the refused push created no repository"
    );
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&index)).await, 404);
    assert_eq!(store_snapshot(&c, &b).await, before);
}

#[tokio::test]
async fn blobs_of_another_repository_are_not_usable_without_a_mount() {
    let b = Berth::start();
    let c = client();
    let m = image_over(&c, &b, "repo-a", b"layer").await;
    let r = put_manifest_as(&c, &b, "repo-b", "v1", OCI_MANIFEST, &m).await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(tags_of(&c, &b, "repo-b").await, None);
    assert_eq!(blob_status(&c, &b, "repo-b", &sha256(CONFIG)).await, 404);

    // After mounting both blobs, the same manifest is accepted.
    for blob in [CONFIG, b"layer".as_slice()] {
        let r = c
            .post(b.url(&format!(
                "/v2/repo-b/blobs/uploads/?mount={}&from=repo-a",
                sha256(blob)
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    assert_eq!(
        put_manifest_as(&c, &b, "repo-b", "v1", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn delete_by_digest_removes_the_manifest_and_its_tags() {
    let b = Berth::start();
    let c = client();
    let m = image_over(&c, &b, "app", b"layer").await;
    let digest = sha256(&m);
    let r = put_manifest_as(
        &c,
        &b,
        "app",
        &format!("{digest}?tag=v1&tag=latest"),
        OCI_MANIFEST,
        &m,
    )
    .await;
    assert_eq!(r.status(), 201);
    let (keep, _) = push_image(&c, &b, "app", "other", b"other layer").await;

    let r = c
        .delete(b.url(&format!("/v2/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_api_version(&r);
    expect_error(
        get_manifest(&c, &b, "app", &digest).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        get_manifest(&c, &b, "app", "v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_eq!(manifest_status(&c, &b, "app", "latest").await, 404);
    assert_eq!(
        tags_of(&c, &b, "app").await,
        Some(vec!["other".to_string()])
    );
    assert_eq!(manifest_status(&c, &b, "app", &keep).await, 200);
    // Deleting it again: it is gone.
    let r = c
        .delete(b.url(&format!("/v2/app/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn delete_of_a_tag_leaves_the_manifest_gettable_by_digest() {
    let b = Berth::start();
    let c = client();
    let (digest, m) = push_image(&c, &b, "app", "v1", b"layer").await;
    let r = c
        .delete(b.url("/v2/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(manifest_status(&c, &b, "app", "v1").await, 404);
    assert_eq!(tags_of(&c, &b, "app").await, Some(vec![]));
    assert_manifest(&c, &b, "app", &digest, OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn put_of_a_manifest_with_a_subject_answers_oci_subject() {
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "app", "v1", b"layer").await;
    let empty = push_blob(&c, &b, "app", b"{}").await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": sm.len() },
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "app", &sha256(&sig), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(header_str(&r, "oci-subject"), subject);
    assert_manifest(&c, &b, "app", &sha256(&sig), OCI_MANIFEST, &sig).await;
}

#[tokio::test]
async fn overwriting_a_tag_moves_it() {
    let b = Berth::start();
    let c = client();
    let (first, _) = push_image(&c, &b, "app", "latest", b"first").await;
    let (second, m2) = push_image(&c, &b, "app", "latest", b"second").await;
    assert_ne!(first, second);
    assert_manifest(&c, &b, "app", "latest", OCI_MANIFEST, &m2).await;
    assert_eq!(
        tags_of(&c, &b, "app").await,
        Some(vec!["latest".to_string()])
    );
    // The old manifest is still there by digest.
    assert_eq!(manifest_status(&c, &b, "app", &first).await, 200);
}

#[tokio::test]
async fn pushing_the_same_manifest_again_is_idempotent() {
    let b = Berth::start();
    let c = client();
    let (digest, m) = push_image(&c, &b, "app", "v1", b"layer").await;
    let r = put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_manifest(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(tags_of(&c, &b, "app").await, Some(vec!["v1".to_string()]));
}

#[tokio::test]
async fn manifests_of_one_repository_are_not_visible_in_another() {
    let b = Berth::start();
    let c = client();
    let (digest, _) = push_image(&c, &b, "repo-a", "v1", b"layer").await;
    push_image(&c, &b, "repo-b", "v2", b"other").await;
    expect_error(
        get_manifest(&c, &b, "repo-b", &digest).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        get_manifest(&c, &b, "repo-b", "v1").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn tag_of_128_characters_is_accepted() {
    let b = Berth::start();
    let c = client();
    let m = image_over(&c, &b, "app", b"layer").await;
    let tag = format!("_{}", "A.b-9".repeat(26))
        .chars()
        .take(128)
        .collect::<String>();
    assert_eq!(tag.len(), 128);
    let r = put_manifest_as(&c, &b, "app", &tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "app", &tag, OCI_MANIFEST, &m).await;
    assert_eq!(tags_of(&c, &b, "app").await, Some(vec![tag]));
}

#[tokio::test]
async fn repository_names_may_contain_endpoint_keywords() {
    let b = Berth::start();
    let c = client();
    for repo in [
        "manifests",
        "a/manifests",
        "blobs/uploads",
        "x/tags",
        "referrers/blobs",
        "a.b_c__d---e/f0/g",
    ] {
        let (digest, m) = push_image(&c, &b, repo, "list", b"layer").await;
        assert_manifest(&c, &b, repo, "list", OCI_MANIFEST, &m).await;
        assert_manifest(&c, &b, repo, &digest, OCI_MANIFEST, &m).await;
        assert_eq!(
            tags_of(&c, &b, repo).await,
            Some(vec!["list".to_string()]),
            "{repo}"
        );
        assert_eq!(
            blob_status(&c, &b, repo, &sha256(b"layer")).await,
            200,
            "{repo}"
        );
        let r = c
            .get(b.url(&format!("/v2/{repo}/referrers/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{repo}");
    }
    let mut all = catalog_of(&c, &b).await;
    all.sort();
    assert_eq!(
        all,
        [
            "a.b_c__d---e/f0/g",
            "a/manifests",
            "blobs/uploads",
            "manifests",
            "referrers/blobs",
            "x/tags"
        ]
    );
}

#[tokio::test]
async fn manifest_sent_without_content_type_is_served_with_its_media_type_field() {
    let b = Berth::start();
    let c = client();
    let m = image_over(&c, &b, "app", b"layer").await;
    let r = c
        .put(b.url("/v2/app/manifests/v1"))
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
}

#[tokio::test]
async fn foreign_layer_with_urls_need_not_be_pushed() {
    let b = Berth::start();
    let c = client();
    let cd = push_blob(&c, &b, "win", CONFIG).await;
    let foreign = sha256(b"a windows base layer that lives elsewhere");
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": CONFIG.len() },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": foreign,
                     "size": 41, "urls": ["https://example.invalid/layer"] }],
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "win", "v1", DOCKER_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_manifest(&c, &b, "win", "v1", DOCKER_MANIFEST, &m).await;
}

/// A server on SQLite keeps manifest lookups in memory; every answer must still follow the
/// writes before it, also for references read (and so cached) just before the write.
#[tokio::test]
async fn answers_follow_every_write_even_for_references_just_read() {
    let b = Berth::start();
    let c = client();
    let (first, m1) = push_image(&c, &b, "cache/app", "latest", b"first").await;
    for _ in 0..3 {
        assert_manifest(&c, &b, "cache/app", "latest", OCI_MANIFEST, &m1).await;
        assert_manifest(&c, &b, "cache/app", &first, OCI_MANIFEST, &m1).await;
    }
    // The tag moves.
    let (second, m2) = push_image(&c, &b, "cache/app", "latest", b"second").await;
    assert_manifest(&c, &b, "cache/app", "latest", OCI_MANIFEST, &m2).await;
    assert_manifest(&c, &b, "cache/app", &first, OCI_MANIFEST, &m1).await;
    // The tag goes; the manifest stays by digest.
    let r = c
        .delete(b.url("/v2/cache/app/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    expect_error(
        get_manifest(&c, &b, "cache/app", "latest").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let head = c
        .head(b.url("/v2/cache/app/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert_manifest(&c, &b, "cache/app", &second, OCI_MANIFEST, &m2).await;
    // The manifest goes, by digest, after being read by digest.
    let r = c
        .delete(b.url(&format!("/v2/cache/app/manifests/{first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(manifest_status(&c, &b, "cache/app", &first).await, 404);
    // And comes back when pushed again.
    let r = put_manifest_as(&c, &b, "cache/app", "again", OCI_MANIFEST, &m1).await;
    assert_eq!(r.status(), 201);
    assert_manifest(&c, &b, "cache/app", &first, OCI_MANIFEST, &m1).await;
    assert_manifest(&c, &b, "cache/app", "again", OCI_MANIFEST, &m1).await;
}
