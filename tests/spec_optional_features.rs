//! What the OCI distribution spec lets a registry offer beyond the required API, and the
//! checks that come with it: `tag` parameters on a manifest push by digest (`OCI-Tag`), a
//! digest algorithm asked for on a push by tag (`?digest=`), sparse indexes (off by
//! default), descriptors whose size is not the stored blob's, and blob mounts without
//! `from`. One test per rule, over HTTP against the real server; after every refused
//! push the test reads back what the registry holds.

#[macro_use]
mod common;
use common::keys::*;
use common::*;

use serde_json::{Value, json};

// ---- Helpers of this file ----

/// A config and one layer of `layer_len` bytes pushed to `repo`: `(config, layer)` as
/// `(digest, size)`.
async fn push_parts(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    layer_len: usize,
    seed: u64,
) -> ((String, usize), (String, usize)) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
    let layer = pattern(layer_len, seed);
    let cd = push_blob(c, b, repo, config.as_bytes()).await;
    let ld = push_blob(c, b, repo, &layer).await;
    ((cd, config.len()), (ld, layer.len()))
}

/// An image manifest over `config` and `layer` with the sizes given (true or not).
fn manifest_of(config: (&str, usize), layer: (&str, usize)) -> Vec<u8> {
    image_manifest(
        (OCI_CONFIG, config.0, config.1),
        &[(OCI_LAYER, layer.0, layer.1)],
    )
}

/// An OCI image index over `children` (`(digest, size)`, image manifests), with an
/// optional subject (`(digest, size)`) and artifact type.
fn index_of(
    children: &[(String, usize)],
    subject: Option<(&str, usize)>,
    artifact_type: Option<&str>,
) -> Vec<u8> {
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(d, s)| json!({
            "mediaType": OCI_MANIFEST,
            "digest": d,
            "size": s,
            "platform": { "architecture": "amd64", "os": "linux" },
        })).collect::<Vec<_>>(),
    });
    if let Some((d, s)) = subject {
        v["subject"] = json!({ "mediaType": OCI_MANIFEST, "digest": d, "size": s });
    }
    if let Some(t) = artifact_type {
        v["artifactType"] = t.into();
    }
    serde_json::to_vec(&v).expect("json")
}

/// `n` image-manifest digests no repository holds (with plausible sizes).
fn absent_children(n: usize) -> Vec<(String, usize)> {
    (0..n)
        .map(|i| {
            let m = format!("absent child manifest {i}");
            (sha256(m.as_bytes()), 400 + i)
        })
        .collect()
}

/// `PUT /v2/<repo>/manifests/<reference>` with query parameters.
async fn put_manifest_query(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    reference: &str,
    query: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> reqwest::Response {
    c.put(b.url(&format!("/v2/{repo}/manifests/{reference}")))
        .query(query)
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("put manifest")
}

/// `GET` (or `HEAD`) of a manifest: status, `Docker-Content-Digest` and body.
async fn fetch_manifest(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    reference: &str,
    head: bool,
) -> (u16, String, Vec<u8>) {
    let url = b.url(&format!("/v2/{repo}/manifests/{reference}"));
    let r = if head { c.head(url) } else { c.get(url) }
        .header("accept", accept_any_manifest())
        .send()
        .await
        .expect("fetch manifest");
    let status = r.status().as_u16();
    let digest = header_str(&r, "docker-content-digest");
    let body = r.bytes().await.expect("manifest body").to_vec();
    (status, digest, body)
}

/// The digest a tag resolves to (`HEAD`), or `None` when it answers 404.
async fn resolve(c: &impl Http, b: &Berth, repo: &str, tag: &str) -> Option<String> {
    let (status, digest, _) = fetch_manifest(c, b, repo, tag, true).await;
    match status {
        200 => Some(digest),
        404 => None,
        s => panic!("HEAD {repo}:{tag} answered {s}"),
    }
}

/// Like `expect_error`, but returns the whole first error entry (code, message, detail).
async fn error_entry(r: reqwest::Response, status: u16, code: &str) -> Value {
    let url = r.url().clone();
    assert_eq!(r.status(), status, "status of {url}");
    assert_api_version(&r);
    let text = r.text().await.expect("error body");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body {text:?} is not JSON: {e}"));
    let entry = v["errors"][0].clone();
    assert_eq!(entry["code"], code, "error body from {url}: {text}");
    assert!(
        entry["message"].as_str().is_some_and(|m| m.len() > 10),
        "error body {text} has no message a person can act on"
    );
    entry
}

/// Asserts `message` mentions every one of `what`.
fn assert_names(message: &str, what: &[&str]) {
    for w in what {
        assert!(message.contains(w), "message {message:?} does not name {w}");
    }
}

/// `POST /v2/<repo>/blobs/uploads/?mount=<digest>` without `from`.
async fn mount_without_from(
    c: &impl Http,
    b: &Berth,
    repo: &str,
    digest: &str,
) -> reqwest::Response {
    c.post(b.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}")))
        .header("content-length", "0")
        .send()
        .await
        .expect("mount")
}

/// The status of `HEAD /v2/<repo>/blobs/<digest>`.
async fn blob_head(c: &impl Http, b: &Berth, repo: &str, digest: &str) -> u16 {
    c.head(b.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("head blob")
        .status()
        .as_u16()
}

fn env(pairs: &[(&str, &str)]) -> Options {
    Options {
        env: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    }
}

const SPARSE: (&str, &str) = ("BERTH_MANIFESTS__SPARSE_INDEXES", "true");

// ---- `tag` parameters on a push by digest ----

in_both_modes!(tag_parameters_on_a_push_by_digest_set_every_tag_and_answer_one_oci_tag_each);
async fn tag_parameters_on_a_push_by_digest_set_every_tag_and_answer_one_oci_tag_each(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 100, 1).await;
    let m = manifest_of((&config.0, config.1), (&layer.0, layer.1));
    let digest = sha256(&m);

    let r = put_manifest_query(
        &c,
        &b,
        "app",
        &digest,
        &[("tag", "a"), ("tag", "b")],
        OCI_MANIFEST,
        &m,
    )
    .await;
    assert_eq!(r.status(), 201, "{:?}", r.headers());
    assert_api_version(&r);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert!(
        header_str(&r, "location").ends_with(&format!("/v2/app/manifests/{digest}")),
        "Location {:?}",
        header_str(&r, "location")
    );
    let mut oci_tags: Vec<String> = r
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().expect("OCI-Tag is text").to_string())
        .collect();
    oci_tags.sort();
    assert_eq!(
        oci_tags,
        vec!["a", "b"],
        "one OCI-Tag header per tag applied"
    );

    for tag in ["a", "b"] {
        let (status, d, body) = fetch_manifest(&c, &b, "app", tag, false).await;
        assert_eq!((status, d.as_str()), (200, digest.as_str()), "tag {tag}");
        assert_eq!(body, m, "tag {tag} serves the pushed bytes");
    }
    assert_eq!(
        tags_of(&c, &b, "app").await,
        Some(vec!["a".into(), "b".into()])
    );
}

in_both_modes!(an_invalid_tag_parameter_refuses_the_whole_push_and_stores_nothing);
async fn an_invalid_tag_parameter_refuses_the_whole_push_and_stores_nothing(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 100, 2).await;
    let m = manifest_of((&config.0, config.1), (&layer.0, layer.1));
    let digest = sha256(&m);

    let r = put_manifest_query(
        &c,
        &b,
        "app",
        &digest,
        &[("tag", "good"), ("tag", "-bad")],
        OCI_MANIFEST,
        &m,
    )
    .await;
    assert!(
        r.headers().get("oci-tag").is_none(),
        "a refused push applied no tag"
    );
    let message = expect_error(r, 400, "MANIFEST_INVALID").await;
    assert_names(&message, &["-bad"]);

    assert_eq!(manifest_status(&c, &b, "app", &digest).await, 404);
    assert_eq!(resolve(&c, &b, "app", "good").await, None);
    assert_eq!(
        tags_of(&c, &b, "app").await.unwrap_or_default(),
        Vec::<String>::new()
    );
}

in_both_modes!(a_push_by_tag_or_without_tag_parameters_answers_no_oci_tag);
async fn a_push_by_tag_or_without_tag_parameters_answers_no_oci_tag(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 100, 3).await;
    let m = manifest_of((&config.0, config.1), (&layer.0, layer.1));

    let r = put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert!(
        r.headers().get("oci-tag").is_none(),
        "a push by tag answered OCI-Tag {:?}",
        header_str(&r, "oci-tag")
    );
    let r = put_manifest_as(&c, &b, "app", &sha256(&m), OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert!(
        r.headers().get("oci-tag").is_none(),
        "a push by digest without tag parameters answered OCI-Tag"
    );
    assert_eq!(tags_of(&c, &b, "app").await, Some(vec!["v1".into()]));
}

// ---- The digest algorithm of a push by tag ----

/// Pushes `m` to `app:v1` with `?digest=<param>` and checks it is stored, tagged and
/// served under sha512.
async fn assert_pushed_as_sha512(c: &impl Http, b: &Berth, m: &[u8], param: &str) {
    let digest = sha512(m);
    let r = put_manifest_query(c, b, "app", "v1", &[("digest", param)], OCI_MANIFEST, m).await;
    assert_eq!(r.status(), 201, "?digest={param}: {:?}", r.headers());
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert!(
        header_str(&r, "location").ends_with(&format!("/v2/app/manifests/{digest}")),
        "Location {:?}",
        header_str(&r, "location")
    );
    let (status, d, body) = fetch_manifest(c, b, "app", "v1", false).await;
    assert_eq!((status, d.as_str()), (200, digest.as_str()), "GET by tag");
    assert_eq!(body, m, "GET by tag serves the exact bytes");
    let (status, d, body) = fetch_manifest(c, b, "app", "v1", true).await;
    assert_eq!((status, d.as_str()), (200, digest.as_str()), "HEAD by tag");
    assert!(body.is_empty());
    let (status, d, body) = fetch_manifest(c, b, "app", &digest, false).await;
    assert_eq!(
        (status, d.as_str()),
        (200, digest.as_str()),
        "GET by digest"
    );
    assert_eq!(body, m);
}

in_both_modes!(a_push_by_tag_with_digest_sha512_is_stored_under_sha512);
async fn a_push_by_tag_with_digest_sha512_is_stored_under_sha512(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 100, 4).await;
    let m = manifest_of((&config.0, config.1), (&layer.0, layer.1));
    assert_pushed_as_sha512(&c, &b, &m, "sha512").await;
    // Stored under sha512 only.
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&m)).await, 404);
}

in_both_modes!(a_push_by_tag_with_a_whole_sha512_digest_parameter_is_stored_under_it);
async fn a_push_by_tag_with_a_whole_sha512_digest_parameter_is_stored_under_it(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 100, 5).await;
    let m = manifest_of((&config.0, config.1), (&layer.0, layer.1));
    assert_pushed_as_sha512(&c, &b, &m, &sha512(&m)).await;
}

in_both_modes!(an_unsupported_digest_algorithm_parameter_is_digest_invalid);
async fn an_unsupported_digest_algorithm_parameter_is_digest_invalid(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 100, 6).await;
    let m = manifest_of((&config.0, config.1), (&layer.0, layer.1));

    let r = put_manifest_query(&c, &b, "app", "v1", &[("digest", "md5")], OCI_MANIFEST, &m).await;
    let message = expect_error(r, 400, "DIGEST_INVALID").await;
    assert_names(&message, &["md5"]);
    assert_eq!(resolve(&c, &b, "app", "v1").await, None);
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&m)).await, 404);
    assert_eq!(manifest_status(&c, &b, "app", &sha512(&m)).await, 404);
}

in_both_modes!(a_digest_parameter_that_is_not_the_bodys_digest_is_refused_and_stores_nothing);
async fn a_digest_parameter_that_is_not_the_bodys_digest_is_refused_and_stores_nothing(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 100, 7).await;
    let good = manifest_of((&config.0, config.1), (&layer.0, layer.1));
    let r = put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &good).await;
    assert_eq!(r.status(), 201);

    let (config2, layer2) = push_parts(&c, &b, "app", 200, 8).await;
    let m = manifest_of((&config2.0, config2.1), (&layer2.0, layer2.1));
    let claimed = sha512(b"other bytes");
    let r = put_manifest_query(
        &c,
        &b,
        "app",
        "v1",
        &[("digest", &claimed)],
        OCI_MANIFEST,
        &m,
    )
    .await;
    let message = expect_error(r, 400, "DIGEST_INVALID").await;
    assert_names(&message, &[&claimed, &sha512(&m)]);

    assert_eq!(
        resolve(&c, &b, "app", "v1").await,
        Some(sha256(&good)),
        "v1 did not move"
    );
    for d in [sha512(&m), sha256(&m), claimed] {
        assert_eq!(manifest_status(&c, &b, "app", &d).await, 404, "{d}");
    }
    assert_eq!(tags_of(&c, &b, "app").await, Some(vec!["v1".into()]));
}

in_both_modes!(a_push_by_tag_without_a_digest_parameter_is_sha256);
async fn a_push_by_tag_without_a_digest_parameter_is_sha256(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 100, 9).await;
    let m = manifest_of((&config.0, config.1), (&layer.0, layer.1));
    let r = put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header_str(&r, "docker-content-digest"), sha256(&m));
    let (status, d, _) = fetch_manifest(&c, &b, "app", "v1", true).await;
    assert_eq!((status, d), (200, sha256(&m)));
    assert_eq!(manifest_status(&c, &b, "app", &sha512(&m)).await, 404);
}

// ---- Sparse indexes ----

in_both_modes!(an_index_whose_children_are_missing_is_refused_by_default);
async fn an_index_whose_children_are_missing_is_refused_by_default(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let children = absent_children(1);
    let m = index_of(&children, None, None);

    let r = put_manifest_as(&c, &b, "app", "multi", OCI_INDEX, &m).await;
    let entry = error_entry(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    let message = entry["message"].as_str().unwrap_or_default();
    assert_names(message, &[&children[0].0]);
    assert_eq!(resolve(&c, &b, "app", "multi").await, None);
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&m)).await, 404);
}

in_both_modes!(sparse_indexes_accept_an_index_whose_children_are_missing);
async fn sparse_indexes_accept_an_index_whose_children_are_missing(auth: Auth) {
    let (b, c) = auth.start_with(env(&[SPARSE]), &["app"]).await;
    // One child present, two absent.
    let (config, layer) = push_parts(&c, &b, "app", 100, 10).await;
    let present = manifest_of((&config.0, config.1), (&layer.0, layer.1));
    let r = put_manifest_as(&c, &b, "app", &sha256(&present), OCI_MANIFEST, &present).await;
    assert_eq!(r.status(), 201);
    let mut children = vec![(sha256(&present), present.len())];
    children.extend(absent_children(2));
    let m = index_of(&children, None, None);
    let digest = sha256(&m);

    let r = put_manifest_as(&c, &b, "app", "multi", OCI_INDEX, &m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = c
        .get(b.url("/v2/app/manifests/multi"))
        .header("accept", OCI_INDEX)
        .send()
        .await
        .expect("get index");
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "content-type"), OCI_INDEX);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        m,
        "served byte-exact"
    );
    assert_eq!(manifest_status(&c, &b, "app", &digest).await, 200);
}

in_both_modes!(sparse_indexes_do_not_excuse_an_image_manifest_missing_its_blobs);
async fn sparse_indexes_do_not_excuse_an_image_manifest_missing_its_blobs(auth: Auth) {
    let (b, c) = auth.start_with(env(&[SPARSE]), &["app"]).await;
    let config = push_blob(&c, &b, "app", br#"{"os":"linux"}"#).await;
    let absent_layer = sha256(b"a layer nobody pushed");
    let m = manifest_of((&config, 14), (&absent_layer, 21));
    let r = put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
    let message = expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert_names(&message, &[&absent_layer]);
    assert_eq!(resolve(&c, &b, "app", "v1").await, None);
}

in_both_modes!(sparse_indexes_still_refuse_an_index_over_the_size_limit);
async fn sparse_indexes_still_refuse_an_index_over_the_size_limit(auth: Auth) {
    let (b, c) = auth
        .start_with(
            env(&[SPARSE, ("BERTH_LIMITS__MAX_MANIFEST_BYTES", "1024")]),
            &["app"],
        )
        .await;
    let small = index_of(&absent_children(1), None, None);
    assert!(small.len() < 1024);
    let r = put_manifest_as(&c, &b, "app", "small", OCI_INDEX, &small).await;
    assert_eq!(r.status(), 201, "an index under the limit is accepted");

    let big = index_of(&absent_children(20), None, None);
    assert!(big.len() > 1024);
    let r = put_manifest_as(&c, &b, "app", "big", OCI_INDEX, &big).await;
    let message = expect_error(r, 413, "MANIFEST_INVALID").await;
    assert_names(&message, &["1024"]);
    assert_eq!(resolve(&c, &b, "app", "big").await, None);
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&big)).await, 404);
    assert_eq!(tags_of(&c, &b, "app").await, Some(vec!["small".into()]));
}

in_both_modes!(sparse_indexes_still_refuse_a_wrong_media_type);
async fn sparse_indexes_still_refuse_a_wrong_media_type(auth: Auth) {
    let (b, c) = auth.start_with(env(&[SPARSE]), &["app"]).await;
    let m = index_of(&absent_children(1), None, None);

    // The body says index, the Content-Type says image manifest.
    let r = put_manifest_as(&c, &b, "app", "v1", OCI_MANIFEST, &m).await;
    let message = expect_error(r, 400, "MANIFEST_INVALID").await;
    assert_names(&message, &[OCI_INDEX, OCI_MANIFEST]);

    // A media type that is not a manifest's.
    let mut v: Value = serde_json::from_slice(&m).expect("json");
    v["mediaType"] = "application/vnd.example.not-a-manifest+json".into();
    let odd = serde_json::to_vec(&v).expect("json");
    let r = put_manifest_as(&c, &b, "app", "v2", "application/json", &odd).await;
    let message = expect_error(r, 400, "MANIFEST_INVALID").await;
    assert_names(&message, &["application/vnd.example.not-a-manifest+json"]);

    for tag in ["v1", "v2"] {
        assert_eq!(resolve(&c, &b, "app", tag).await, None, "{tag}");
    }
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&m)).await, 404);
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&odd)).await, 404);
}

in_both_modes!(a_sparse_index_with_a_subject_answers_oci_subject_and_is_a_referrer);
async fn a_sparse_index_with_a_subject_answers_oci_subject_and_is_a_referrer(auth: Auth) {
    let (b, c) = auth.start_with(env(&[SPARSE]), &["app"]).await;
    let (subject, subject_bytes) = push_image(&c, &b, "app", "v1", b"the subject's layer").await;
    let artifact_type = "application/vnd.example.attestations.v1";
    let m = index_of(
        &absent_children(2),
        Some((&subject, subject_bytes.len())),
        Some(artifact_type),
    );
    let digest = sha256(&m);

    let r = put_manifest_as(&c, &b, "app", &digest, OCI_INDEX, &m).await;
    assert_eq!(r.status(), 201, "{:?}", r.headers());
    assert_eq!(header_str(&r, "oci-subject"), subject);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);

    let r = c
        .get(b.url(&format!("/v2/app/referrers/{subject}")))
        .send()
        .await
        .expect("referrers");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("referrers JSON");
    let list = v["manifests"].as_array().expect("manifests list");
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["digest"], digest);
    assert_eq!(list[0]["mediaType"], OCI_INDEX);
    assert_eq!(list[0]["artifactType"], artifact_type);
    assert_eq!(list[0]["size"], m.len());
}

// ---- Descriptors that lie about their size ----

/// Pushes a good `app:v1` (config + a 1,000-byte layer), then a manifest to `v1` whose
/// descriptors are `config` and `layer`; returns the good digest, the lying manifest and
/// the refusal's error entry.
async fn push_lying_over_good(
    c: &impl Http,
    b: &Berth,
    lie: impl FnOnce((&str, usize), (&str, usize)) -> Vec<u8>,
) -> (String, Vec<u8>, Value) {
    let (config, layer) = push_parts(c, b, "app", 1000, 11).await;
    assert_eq!(layer.1, 1000);
    let good = manifest_of((&config.0, config.1), (&layer.0, layer.1));
    let r = put_manifest_as(c, b, "app", "v1", OCI_MANIFEST, &good).await;
    assert_eq!(r.status(), 201, "a manifest with true sizes is accepted");

    let lying = lie((&config.0, config.1), (&layer.0, layer.1));
    let r = put_manifest_as(c, b, "app", "v1", OCI_MANIFEST, &lying).await;
    let entry = error_entry(r, 400, "MANIFEST_INVALID").await;

    // Nothing moved: v1 is the good manifest, the lying one is nowhere.
    assert_eq!(resolve(c, b, "app", "v1").await, Some(sha256(&good)));
    assert_eq!(manifest_status(c, b, "app", &sha256(&lying)).await, 404);
    assert_eq!(tags_of(c, b, "app").await, Some(vec!["v1".into()]));
    (sha256(&good), lying, entry)
}

fn assert_descriptor_refusal(entry: &Value, digest: &str, declared: u64, stored: u64) {
    let message = entry["message"].as_str().unwrap_or_default();
    assert_names(
        message,
        &[digest, &declared.to_string(), &stored.to_string()],
    );
    assert_eq!(entry["detail"]["digest"], digest, "{entry}");
    assert_eq!(entry["detail"]["declared"], declared, "{entry}");
    assert_eq!(entry["detail"]["stored"], stored, "{entry}");
}

in_both_modes!(a_layer_descriptor_smaller_than_the_stored_layer_is_manifest_invalid);
async fn a_layer_descriptor_smaller_than_the_stored_layer_is_manifest_invalid(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let mut layer_digest = String::new();
    let (_, _, entry) = push_lying_over_good(&c, &b, |config, layer| {
        layer_digest = layer.0.to_string();
        manifest_of(config, (layer.0, 999))
    })
    .await;
    assert_descriptor_refusal(&entry, &layer_digest, 999, 1000);
}

in_both_modes!(a_layer_descriptor_larger_than_the_stored_layer_is_manifest_invalid);
async fn a_layer_descriptor_larger_than_the_stored_layer_is_manifest_invalid(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let mut layer_digest = String::new();
    let (_, _, entry) = push_lying_over_good(&c, &b, |config, layer| {
        layer_digest = layer.0.to_string();
        manifest_of(config, (layer.0, 1001))
    })
    .await;
    assert_descriptor_refusal(&entry, &layer_digest, 1001, 1000);
}

in_both_modes!(a_config_descriptor_whose_size_is_not_the_stored_configs_is_manifest_invalid);
async fn a_config_descriptor_whose_size_is_not_the_stored_configs_is_manifest_invalid(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let mut config_digest = String::new();
    let mut config_len = 0;
    let (_, _, entry) = push_lying_over_good(&c, &b, |config, layer| {
        config_digest = config.0.to_string();
        config_len = config.1;
        manifest_of((config.0, 5), layer)
    })
    .await;
    assert!(config_len > 5);
    assert_descriptor_refusal(&entry, &config_digest, 5, config_len as u64);
}

in_both_modes!(a_lying_manifest_pushed_by_digest_is_not_stored);
async fn a_lying_manifest_pushed_by_digest_is_not_stored(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let (config, layer) = push_parts(&c, &b, "app", 1000, 12).await;
    let lying = manifest_of((&config.0, config.1), (&layer.0, 999));
    let r = put_manifest_query(
        &c,
        &b,
        "app",
        &sha256(&lying),
        &[("tag", "t")],
        OCI_MANIFEST,
        &lying,
    )
    .await;
    let entry = error_entry(r, 400, "MANIFEST_INVALID").await;
    assert_descriptor_refusal(&entry, &layer.0, 999, 1000);
    assert_eq!(manifest_status(&c, &b, "app", &sha256(&lying)).await, 404);
    assert_eq!(resolve(&c, &b, "app", "t").await, None);
}

// ---- Blob mounts without `from` ----

in_both_modes!(a_mount_without_from_links_a_blob_another_repository_has);
async fn a_mount_without_from_links_a_blob_another_repository_has(auth: Auth) {
    let (b, c) = auth.start(&["source", "target"]).await;
    let bytes = pattern(3000, 13);
    let digest = push_blob(&c, &b, "source/repo", &bytes).await;
    assert_eq!(blob_head(&c, &b, "target/repo", &digest).await, 404);

    let mut r = mount_without_from(&c, &b, "target/repo", &digest).await;
    if auth == Auth::Builtin {
        // With auth on, the repositories a token's holder may pull are those the token
        // names. The client's token names only target/repo (docker asks no more for a
        // push): the mount opens an upload session and links nothing.
        assert_eq!(r.status(), 202, "{:?}", r.headers());
        assert!(!header_str(&r, "docker-upload-uuid").is_empty());
        assert_eq!(blob_head(&c, &b, "target/repo", &digest).await, 404);
        // A token that names the source too (its holder may pull there) mounts it.
        let scopes = [
            "repository:target/repo:pull,push",
            "repository:source/repo:pull",
        ];
        let token = token_for(&b, SPEC_USER, &scopes).await;
        r = client()
            .post(b.url(&format!("/v2/target/repo/blobs/uploads/?mount={digest}")))
            .bearer_auth(token)
            .header("content-length", "0")
            .send()
            .await
            .expect("mount");
    }
    assert_eq!(r.status(), 201, "{:?}", r.headers());
    assert_api_version(&r);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert!(
        header_str(&r, "location").ends_with(&format!("/v2/target/repo/blobs/{digest}")),
        "Location {:?}",
        header_str(&r, "location")
    );
    assert!(r.headers().get("docker-upload-uuid").is_none());

    let r = c
        .head(b.url(&format!("/v2/target/repo/blobs/{digest}")))
        .send()
        .await
        .expect("head blob");
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "content-length"), bytes.len().to_string());
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    let r = c
        .get(b.url(&format!("/v2/target/repo/blobs/{digest}")))
        .send()
        .await
        .expect("get blob");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("blob").to_vec(), bytes);
}

in_both_modes!(a_mount_without_from_of_a_blob_no_repository_has_opens_an_upload);
async fn a_mount_without_from_of_a_blob_no_repository_has_opens_an_upload(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    let bytes = pattern(500, 14);
    let digest = sha256(&bytes);

    let r = mount_without_from(&c, &b, "app", &digest).await;
    assert_eq!(r.status(), 202, "{:?}", r.headers());
    let location = header_str(&r, "location");
    assert!(
        location.contains("/v2/app/blobs/uploads/"),
        "Location {location:?}"
    );
    assert!(!header_str(&r, "docker-upload-uuid").is_empty());
    assert_eq!(blob_head(&c, &b, "app", &digest).await, 404);

    // An ordinary session: finishing it stores the blob.
    let url = with_query(&location_url(&b, &location), &format!("digest={digest}"));
    let r = c
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .expect("finish upload");
    assert_eq!(r.status(), 201);
    assert_eq!(blob_head(&c, &b, "app", &digest).await, 200);
}

// With token authentication: keys made with openssl, tokens signed here as a token service
// would (tests/common/keys.rs, as in tests/auth_token.rs).

/// One RSA key pair (`rsa`), which [`start_trusting`] is told to trust.
fn token_key() -> Keys {
    Keys::generate(&[("rsa", jsonwebtoken::Algorithm::RS256)])
}

/// A client sending a token signed with `key` that grants `access`
/// (`[(repository, actions)]`).
fn token_client(key: &Keys, access: &[(&str, &[&str])]) -> reqwest::Client {
    let access: Vec<(&str, &str, &[&str])> =
        access.iter().map(|&(n, a)| ("repository", n, a)).collect();
    bearer(&key.sign("rsa", &token_claims(&access)))
}

const PUSH: &[&str] = &["pull", "push"];
const PULL: &[&str] = &["pull"];

#[tokio::test]
async fn a_mount_without_from_never_mounts_a_blob_the_caller_may_not_pull() {
    let key = token_key();
    let b = start_trusting(&key, &["rsa"]);
    let admin = token_client(&key, &[("secret/repo", PUSH), ("team/app", PUSH)]);
    let digest = push_blob(&admin, &b, "secret/repo", &pattern(2000, 15)).await;

    // May push to team/app but not pull from secret/repo: an upload session, as for a
    // blob no repository has, and nothing linked.
    let pusher = token_client(&key, &[("team/app", PUSH)]);
    let r = mount_without_from(&pusher, &b, "team/app", &digest).await;
    assert_eq!(
        r.status(),
        202,
        "a blob only in a repository the token may not pull was mounted"
    );
    assert!(!header_str(&r, "docker-upload-uuid").is_empty());
    assert!(header_str(&r, "location").contains("/v2/team/app/blobs/uploads/"));
    assert_eq!(blob_head(&admin, &b, "team/app", &digest).await, 404);

    // With pull on the repository that has it, the same request mounts it.
    let both = token_client(&key, &[("secret/repo", PULL), ("team/app", PUSH)]);
    let r = mount_without_from(&both, &b, "team/app", &digest).await;
    assert_eq!(r.status(), 201, "{:?}", r.headers());
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(blob_head(&admin, &b, "team/app", &digest).await, 200);
}
