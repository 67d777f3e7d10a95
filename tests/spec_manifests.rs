//! Manifests: `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`, the rules of the
//! OCI distribution-spec v1.1. What a registry must accept, and what it must refuse for lack
//! of what a manifest names, are tables: a failing case prints its name.

#[macro_use]
mod common;
use common::*;

use base64::Engine as _;
use serde_json::json;

const CONFIG: &[u8] = IMAGE_CONFIG;

/// Pushes a config and one layer to `repo`; returns an OCI image manifest over them.
async fn image_over(c: &impl Http, b: &Berth, repo: &str, layer: &[u8]) -> Vec<u8> {
    let cd = push_blob(c, b, repo, CONFIG).await;
    let ld = push_blob(c, b, repo, layer).await;
    image_manifest(
        (OCI_CONFIG, &cd, CONFIG.len()),
        &[(OCI_LAYER, &ld, layer.len())],
    )
}

async fn get_manifest(c: &impl Http, b: &Berth, repo: &str, reference: &str) -> reqwest::Response {
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
    c: &impl Http,
    b: &Berth,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) {
    let get = reqwest::Method::GET;
    assert_served(
        c,
        b,
        "",
        &get,
        repo,
        reference,
        media_type,
        bytes,
        &sha256(bytes),
    )
    .await;
}

/// Asserts a manifest GET (or HEAD) answers 200 with the headers of `bytes` under `digest`,
/// of `media_type`, and with exactly those bytes (HEAD: none). `case` names the case.
#[allow(clippy::too_many_arguments)]
async fn assert_served(
    c: &impl Http,
    b: &Berth,
    case: &str,
    method: &reqwest::Method,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
    digest: &str,
) {
    let r = c
        .request(
            method.clone(),
            b.url(&format!("/v2/{repo}/manifests/{reference}")),
        )
        .header(
            "accept",
            [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", "),
        )
        .send()
        .await
        .unwrap();
    let what = format!("case {case}: {method} {repo}:{reference}");
    assert_eq!(r.status(), 200, "{what}");
    assert_api_version(&r);
    assert_eq!(header_str(&r, "content-type"), media_type, "{what}");
    assert_eq!(
        header_str(&r, "content-length"),
        bytes.len().to_string(),
        "{what}"
    );
    assert_eq!(header_str(&r, "docker-content-digest"), digest, "{what}");
    let got = r.bytes().await.unwrap();
    if *method == reqwest::Method::HEAD {
        assert!(got.is_empty(), "{what}: HEAD has no body");
    } else {
        assert_eq!(got.as_ref(), bytes, "{what} is not byte-exact");
    }
}

/// A manifest the registry must accept, and serve byte-exact by digest and by every tag the
/// push sets, to GET and HEAD alike.
struct Accepted {
    name: &'static str,
    repo: &'static str,
    /// Blobs pushed to `repo` first (under their sha512 digests when `sha512`).
    blobs: Vec<Vec<u8>>,
    /// Manifests put to `repo` first: reference, media type, bytes.
    before: Vec<(&'static str, &'static str, Vec<u8>)>,
    reference: String,
    /// The Content-Type of the PUT; `None`: none.
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// The media type it is served as.
    served_as: &'static str,
    sha512: bool,
    /// The `OCI-Subject` of the answer, where the manifest has a subject.
    subject: Option<String>,
    /// The tags this push sets, and all the tags of `repo` afterwards.
    tagged: Vec<String>,
    tags: Vec<String>,
}

/// A push of `body` to `repo:reference` as `content_type`, which tags it with `reference`.
fn accepted(
    name: &'static str,
    repo: &'static str,
    reference: &str,
    content_type: &'static str,
    body: Vec<u8>,
) -> Accepted {
    Accepted {
        name,
        repo,
        blobs: vec![CONFIG.to_vec(), b"layer".to_vec()],
        before: Vec::new(),
        reference: reference.to_string(),
        content_type: Some(content_type),
        body,
        served_as: content_type,
        sha512: false,
        subject: None,
        tagged: vec![reference.to_string()],
        tags: vec![reference.to_string()],
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

in_both_modes!(manifests_of_every_kind_are_accepted_and_served_byte_exact);
async fn manifests_of_every_kind_are_accepted_and_served_byte_exact(auth: Auth) {
    let image = image_over_layer(b"layer");
    let docker_config = "application/vnd.docker.container.image.v1+json";
    let empty = b"{}";
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut cases = Vec::new();

    cases.push(accepted(
        "OCI image by tag",
        "team/app",
        "v1",
        OCI_MANIFEST,
        image.clone(),
    ));
    // No "mediaType" in the body: the request's Content-Type says what it is.
    cases.push(Accepted {
        blobs: vec![CONFIG.to_vec()],
        ..accepted(
            "image without a mediaType field",
            "bare",
            "bare",
            OCI_MANIFEST,
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "config": { "mediaType": OCI_CONFIG, "digest": sha256(CONFIG), "size": CONFIG.len() },
                "layers": [],
            }))
            .unwrap(),
        )
    });
    // Sent without a Content-Type: the body's mediaType says what it is.
    cases.push(Accepted {
        content_type: None,
        ..accepted(
            "image sent without a Content-Type",
            "no-content-type",
            "v1",
            OCI_MANIFEST,
            image.clone(),
        )
    });

    let (amd64, arm64) = (
        image_over_layer(b"amd64 layer"),
        image_over_layer(b"arm64 layer"),
    );
    cases.push(Accepted {
        blobs: vec![CONFIG.to_vec(), b"amd64 layer".to_vec(), b"arm64 layer".to_vec()],
        before: vec![("amd64", OCI_MANIFEST, amd64.clone()), ("arm64", OCI_MANIFEST, arm64.clone())],
        tags: strings(&["amd64", "arm64", "latest"]),
        ..accepted(
            "OCI image index",
            "multi",
            "latest",
            OCI_INDEX,
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    { "mediaType": OCI_MANIFEST, "digest": sha256(&amd64), "size": amd64.len(), "platform": { "architecture": "amd64", "os": "linux" } },
                    { "mediaType": OCI_MANIFEST, "digest": sha256(&arm64), "size": arm64.len(), "platform": { "architecture": "arm64", "os": "linux" } },
                ],
            }))
            .unwrap(),
        )
    });

    let leaf = image_over_layer(b"leaf layer");
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": sha256(&leaf), "size": leaf.len() }],
    }))
    .unwrap();
    cases.push(Accepted {
        blobs: vec![CONFIG.to_vec(), b"leaf layer".to_vec()],
        before: vec![("leaf", OCI_MANIFEST, leaf.clone()), ("inner", OCI_INDEX, inner.clone())],
        tags: strings(&["inner", "leaf", "outer"]),
        ..accepted(
            "index in an index",
            "nest",
            "outer",
            OCI_INDEX,
            serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [{ "mediaType": OCI_INDEX, "digest": sha256(&inner), "size": inner.len() }],
            }))
            .unwrap(),
        )
    });

    let docker_image_config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let docker_layer = b"docker layer bytes";
    cases.push(Accepted {
        blobs: vec![docker_image_config.to_vec(), docker_layer.to_vec()],
        ..accepted(
            "Docker schema 2",
            "docker/app",
            "v2",
            DOCKER_MANIFEST,
            serde_json::to_vec_pretty(&json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": { "mediaType": docker_config, "digest": sha256(docker_image_config), "size": docker_image_config.len() },
                "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha256(docker_layer), "size": docker_layer.len() }],
            }))
            .unwrap(),
        )
    });

    let child = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": docker_config, "digest": sha256(CONFIG), "size": CONFIG.len() },
        "layers": [],
    }))
    .unwrap();
    cases.push(Accepted {
        blobs: vec![CONFIG.to_vec()],
        before: vec![("amd64", DOCKER_MANIFEST, child.clone())],
        tags: strings(&["amd64", "latest"]),
        ..accepted(
            "Docker manifest list",
            "docker/multi",
            "latest",
            DOCKER_LIST,
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_LIST,
                "manifests": [{ "mediaType": DOCKER_MANIFEST, "digest": sha256(&child), "size": child.len(),
                                "platform": { "architecture": "amd64", "os": "linux" } }],
            }))
            .unwrap(),
        )
    });

    // Keys out of the usual order, tabs, CRLF, spaces before colons, unicode escapes and
    // fields no spec defines: none of it may be normalised away.
    let odd = format!(
        "{{\r\n\t\"layers\" :[ {{\"size\":5,\"digest\":\"{}\",\"mediaType\":\"{OCI_LAYER}\", \"x-layer-note\": [1, 2.50, null]}} ],\n  \
         \"x-vendor\": {{\"nested\": {{\"deep\": true}}, \"text\": \"caf\\u00e9\"}},\n\"config\":{{ \"digest\":\"{}\", \"size\":{},\"mediaType\":\"{OCI_CONFIG}\" }},\
         \"mediaType\":\"{OCI_MANIFEST}\",   \"schemaVersion\" : 2 }}\n\n",
        sha256(b"layer"),
        sha256(CONFIG),
        CONFIG.len()
    );
    cases.push(accepted(
        "unknown fields, odd whitespace and key order",
        "exact",
        "odd",
        OCI_MANIFEST,
        odd.into_bytes(),
    ));

    // The empty config is embedded in the descriptor (`data`), so it need not be pushed.
    cases.push(Accepted {
        blobs: vec![b"payload".to_vec()],
        ..accepted(
            "config given by its data field",
            "artifacts",
            "v1",
            OCI_MANIFEST,
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.thing",
                "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2,
                            "data": b64(empty) },
                "layers": [{ "mediaType": "application/vnd.example.payload", "digest": sha256(b"payload"), "size": 7 }],
            }))
            .unwrap(),
        )
    });

    let foreign = sha256(b"a windows base layer that lives elsewhere");
    cases.push(Accepted {
        blobs: vec![CONFIG.to_vec()],
        ..accepted(
            "foreign layer with urls, not pushed",
            "win",
            "v1",
            DOCKER_MANIFEST,
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": { "mediaType": docker_config, "digest": sha256(CONFIG), "size": CONFIG.len() },
                "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": foreign,
                             "size": 41, "urls": ["https://example.invalid/layer"] }],
            }))
            .unwrap(),
        )
    });

    cases.push(Accepted {
        blobs: vec![CONFIG.to_vec(), Vec::new()],
        ..accepted(
            "zero-byte layer",
            "empty",
            "v1",
            OCI_MANIFEST,
            image_manifest(
                (OCI_CONFIG, &sha256(CONFIG), CONFIG.len()),
                &[(OCI_LAYER, &sha256(b""), 0)],
            ),
        )
    });

    // Blobs and the manifest under sha512 digests; pushed by digest with no tag.
    let five12 = b"a layer addressed by sha512";
    let m = image_manifest(
        (OCI_CONFIG, &sha512(CONFIG), CONFIG.len()),
        &[(OCI_LAYER, &sha512(five12), five12.len())],
    );
    cases.push(Accepted {
        blobs: vec![CONFIG.to_vec(), five12.to_vec()],
        sha512: true,
        tagged: vec![],
        tags: vec![],
        ..accepted("sha512 digests", "five12", &sha512(&m), OCI_MANIFEST, m)
    });

    cases.push(Accepted {
        tagged: strings(&["a", "b"]),
        tags: strings(&["a", "b"]),
        ..accepted(
            "by digest with ?tag= parameters",
            "tag-params",
            &format!("{}?tag=a&tag=b", sha256(&image)),
            OCI_MANIFEST,
            image.clone(),
        )
    });

    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2 },
        "layers": [],
        "subject": { "mediaType": OCI_MANIFEST, "digest": sha256(&image), "size": image.len() },
    }))
    .unwrap();
    cases.push(Accepted {
        blobs: vec![CONFIG.to_vec(), b"layer".to_vec(), empty.to_vec()],
        before: vec![("v1", OCI_MANIFEST, image.clone())],
        subject: Some(sha256(&image)),
        tagged: vec![],
        tags: strings(&["v1"]),
        ..accepted(
            "with a subject",
            "signed",
            &sha256(&sig),
            OCI_MANIFEST,
            sig.clone(),
        )
    });

    let long = format!("_{}", "A.b-9".repeat(26))
        .chars()
        .take(128)
        .collect::<String>();
    assert_eq!(long.len(), 128);
    cases.push(accepted(
        "tag of 128 characters",
        "long-tag",
        &long,
        OCI_MANIFEST,
        image.clone(),
    ));

    cases.push(Accepted {
        before: vec![("v1", OCI_MANIFEST, image.clone())],
        ..accepted(
            "the same manifest again",
            "again",
            "v1",
            OCI_MANIFEST,
            image.clone(),
        )
    });

    for repo in [
        "manifests",
        "a/manifests",
        "blobs/uploads",
        "x/tags",
        "referrers/blobs",
        "a.b_c__d---e/f0/g",
    ] {
        cases.push(accepted(
            "repository name with endpoint keywords",
            repo,
            "list",
            OCI_MANIFEST,
            image.clone(),
        ));
    }

    let (b, c) = auth.start(&projects_of(cases.iter().map(|c| c.repo))).await;
    let mut repos = Vec::new();
    for case in cases {
        let (name, repo) = (case.name, case.repo);
        let hash = |bytes: &[u8]| {
            if case.sha512 {
                sha512(bytes)
            } else {
                sha256(bytes)
            }
        };
        for blob in &case.blobs {
            if case.sha512 {
                push_blob_sha512(&c, &b, repo, blob).await;
            } else {
                push_blob(&c, &b, repo, blob).await;
            }
        }
        for (reference, media_type, body) in &case.before {
            let r = put_manifest_as(&c, &b, repo, reference, media_type, body).await;
            assert_eq!(r.status(), 201, "case {name}: pushing {reference} first");
        }

        let mut rq = c
            .put(b.url(&format!("/v2/{repo}/manifests/{}", case.reference)))
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            rq = rq.header("content-type", content_type);
        }
        let r = rq.send().await.unwrap();
        let digest = hash(&case.body);
        assert_eq!(r.status(), 201, "case {name}: {:?}", r.text().await);
        assert_api_version(&r);
        assert_eq!(
            header_str(&r, "docker-content-digest"),
            digest,
            "case {name}"
        );
        assert_eq!(
            header_str(&r, "location"),
            format!("/v2/{repo}/manifests/{digest}"),
            "case {name}"
        );
        assert_eq!(
            header_str(&r, "oci-subject"),
            case.subject.unwrap_or_default(),
            "case {name}: OCI-Subject names the subject, if any"
        );

        for reference in case.tagged.iter().chain([&digest]) {
            for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
                assert_served(
                    &c,
                    &b,
                    name,
                    &method,
                    repo,
                    reference,
                    case.served_as,
                    &case.body,
                    &digest,
                )
                .await;
            }
        }
        let mut tags = tags_of(&c, &b, repo).await.unwrap_or_default();
        tags.sort();
        assert_eq!(tags, case.tags, "case {name}: tags of {repo}");
        for blob in &case.blobs {
            let d = hash(blob);
            let r = c
                .get(b.url(&format!("/v2/{repo}/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "case {name}: blob {d}");
            assert_eq!(header_str(&r, "content-length"), blob.len().to_string());
            assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
            assert_eq!(b.stored_blob(&d), *blob, "case {name}: blob {d} as stored");
        }
        let r = c
            .get(b.url(&format!("/v2/{repo}/referrers/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "case {name}: referrers in {repo}");
        repos.push(repo.to_string());
    }
    let mut all = catalog_of(&c, &b).await;
    all.sort();
    repos.sort();
    assert_eq!(all, repos, "the catalog lists every repository pushed to");
}

in_both_modes!(manifests_naming_what_the_repository_lacks_are_refused);
async fn manifests_naming_what_the_repository_lacks_are_refused(auth: Auth) {
    let (b, c) = auth.start(&["app", "artifacts", "fresh", "other"]).await;
    // `app` holds the config only; `other` holds an image.
    push_blob(&c, &b, "app", CONFIG).await;
    let (d, m) = push_image(&c, &b, "other", "v1", b"layer").await;

    let missing = sha256(b"never pushed");
    let lacking = image_manifest(
        (OCI_CONFIG, &sha256(CONFIG), CONFIG.len()),
        &[(OCI_LAYER, &missing, 12)],
    );
    // The child exists, but in another repository.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": d, "size": m.len() }],
    }))
    .unwrap();
    let lying_data = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2,
                    "data": base64::engine::general_purpose::STANDARD.encode(b"[]") },
        "layers": [],
    }))
    .unwrap();
    refuse_all(
        &c,
        &b,
        vec![
            Refusal::manifest(
                "a layer the repository lacks",
                "app",
                "v1",
                OCI_MANIFEST,
                &lacking,
                400,
                "MANIFEST_BLOB_UNKNOWN",
            )
            .says(&missing)
            .gone("/v2/app/manifests/v1")
            .gone(format!("/v2/app/manifests/{}", sha256(&lacking))),
            Refusal::manifest(
                "a child in another repository",
                "fresh",
                "latest",
                OCI_INDEX,
                &index,
                400,
                "MANIFEST_BLOB_UNKNOWN",
            )
            .gone(format!("/v2/fresh/manifests/{}", sha256(&index)))
            // The refused push created no repository.
            .gone("/v2/fresh/tags/list"),
            Refusal::manifest(
                "data that does not match its digest",
                "artifacts",
                "v1",
                OCI_MANIFEST,
                &lying_data,
                400,
                "MANIFEST_INVALID",
            )
            .gone("/v2/artifacts/tags/list"),
        ],
    )
    .await;
    assert_eq!(tags_of(&c, &b, "app").await, Some(vec![]));
}

in_both_modes!(blobs_of_another_repository_are_not_usable_without_a_mount);
async fn blobs_of_another_repository_are_not_usable_without_a_mount(auth: Auth) {
    let (b, c) = auth.start(&["repo-a", "repo-b"]).await;
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

in_both_modes!(delete_by_digest_removes_the_manifest_and_its_tags);
async fn delete_by_digest_removes_the_manifest_and_its_tags(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
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

in_both_modes!(delete_of_a_tag_leaves_the_manifest_gettable_by_digest);
async fn delete_of_a_tag_leaves_the_manifest_gettable_by_digest(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
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

in_both_modes!(overwriting_a_tag_moves_it);
async fn overwriting_a_tag_moves_it(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
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

in_both_modes!(manifests_of_one_repository_are_not_visible_in_another);
async fn manifests_of_one_repository_are_not_visible_in_another(auth: Auth) {
    let (b, c) = auth.start(&["repo-a", "repo-b"]).await;
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

in_both_modes!(answers_follow_every_write_even_for_references_just_read);
/// A server on SQLite keeps manifest lookups in memory; every answer must still follow the
/// writes before it, also for references read (and so cached) just before the write.
async fn answers_follow_every_write_even_for_references_just_read(auth: Auth) {
    let (b, c) = auth.start(&["cache"]).await;
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
