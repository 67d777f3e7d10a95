//! The referrers API: `GET /v2/<name>/referrers/<digest>[?artifactType=]`.

mod common;
use common::*;

use serde_json::{Value, json};

const SIGNATURE: &str = "application/vnd.example.signature.v1";
const SBOM: &str = "application/vnd.example.sbom.v1";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// An artifact manifest whose subject is `subject` (`(digest, size)`), over the empty config.
fn artifact(
    artifact_type: Option<&str>,
    config_type: &str,
    subject: (&str, usize),
    annotations: Value,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": config_type, "digest": sha256(b"{}"), "size": 2 },
        "layers": [{ "mediaType": EMPTY, "digest": sha256(b"{}"), "size": 2 }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject.0, "size": subject.1 },
    });
    if let Some(at) = artifact_type {
        m["artifactType"] = at.into();
    }
    if !annotations.is_null() {
        m["annotations"] = annotations;
    }
    serde_json::to_vec(&m).unwrap()
}

/// Pushes `m` by digest to `repo` (pushing the empty blob first); returns its digest.
async fn push_referrer(c: &reqwest::Client, b: &Berth, repo: &str, m: &[u8]) -> String {
    push_blob(c, b, repo, b"{}").await;
    let digest = sha256(m);
    let r = put_manifest_as(c, b, repo, &digest, OCI_MANIFEST, m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

/// GETs the referrers of `subject`, asserting the response is an OCI image index.
async fn referrers(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    subject: &str,
    query: &str,
) -> (reqwest::header::HeaderMap, Vec<Value>) {
    let r = c
        .get(b.url(&format!("/v2/{repo}/referrers/{subject}{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_api_version(&r);
    assert_eq!(header_str(&r, "content-type"), OCI_INDEX);
    let headers = r.headers().clone();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let manifests = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests list in {v}"))
        .clone();
    (headers, manifests)
}

fn find<'a>(list: &'a [Value], digest: &str) -> &'a Value {
    list.iter()
        .find(|d| d["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not in {list:?}"))
}

#[tokio::test]
async fn referrers_list_the_manifests_whose_subject_is_the_digest() {
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "app", "v1", b"layer").await;
    let (other, om) = push_image(&c, &b, "app", "v2", b"other layer").await;
    let sig = artifact(
        Some(SIGNATURE),
        EMPTY,
        (&subject, sm.len()),
        json!({ "org.example.signer": "alice" }),
    );
    let sbom = artifact(Some(SBOM), EMPTY, (&subject, sm.len()), Value::Null);
    let unrelated = artifact(Some(SIGNATURE), EMPTY, (&other, om.len()), Value::Null);
    let sig_d = push_referrer(&c, &b, "app", &sig).await;
    let sbom_d = push_referrer(&c, &b, "app", &sbom).await;
    push_referrer(&c, &b, "app", &unrelated).await;

    let (h, list) = referrers(&c, &b, "app", &subject, "").await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        h.get("oci-filters-applied").is_none(),
        "no filter asked, none applied"
    );
    let s = find(&list, &sig_d);
    assert_eq!(s["mediaType"], OCI_MANIFEST);
    assert_eq!(s["size"], sig.len());
    assert_eq!(s["artifactType"], SIGNATURE);
    assert_eq!(s["annotations"], json!({ "org.example.signer": "alice" }));
    let s = find(&list, &sbom_d);
    assert_eq!(s["size"], sbom.len());
    assert_eq!(s["artifactType"], SBOM);
    assert!(
        s.get("annotations")
            .is_none_or(|a| a.as_object().is_some_and(|o| o.is_empty()))
    );
}

#[tokio::test]
async fn referrer_artifact_type_falls_back_to_the_config_media_type() {
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "app", "v1", b"layer").await;
    let m = artifact(
        None,
        "application/vnd.example.config.v1+json",
        (&subject, sm.len()),
        Value::Null,
    );
    let d = push_referrer(&c, &b, "app", &m).await;
    let (_, list) = referrers(&c, &b, "app", &subject, "").await;
    assert_eq!(
        find(&list, &d)["artifactType"],
        "application/vnd.example.config.v1+json"
    );
    // And the filter matches on that fallback too.
    let (_, list) = referrers(
        &c,
        &b,
        "app",
        &subject,
        "?artifactType=application/vnd.example.config.v1%2Bjson",
    )
    .await;
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn referrers_filtered_by_artifact_type_say_so() {
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "app", "v1", b"layer").await;
    let sig_d = push_referrer(
        &c,
        &b,
        "app",
        &artifact(Some(SIGNATURE), EMPTY, (&subject, sm.len()), Value::Null),
    )
    .await;
    push_referrer(
        &c,
        &b,
        "app",
        &artifact(Some(SBOM), EMPTY, (&subject, sm.len()), Value::Null),
    )
    .await;

    let (h, list) = referrers(
        &c,
        &b,
        "app",
        &subject,
        &format!("?artifactType={SIGNATURE}"),
    )
    .await;
    assert_eq!(
        h.get("oci-filters-applied").map(|v| v.to_str().unwrap()),
        Some("artifactType")
    );
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], sig_d);
    assert_eq!(list[0]["artifactType"], SIGNATURE);

    let (h, list) = referrers(
        &c,
        &b,
        "app",
        &subject,
        "?artifactType=application/vnd.example.none",
    )
    .await;
    assert_eq!(
        h.get("oci-filters-applied").map(|v| v.to_str().unwrap()),
        Some("artifactType")
    );
    assert!(list.is_empty());
}

#[tokio::test]
async fn referrers_of_an_unknown_subject_are_an_empty_index() {
    let b = Berth::start();
    let c = client();
    push_image(&c, &b, "app", "v1", b"layer").await;
    let (_, list) = referrers(&c, &b, "app", &sha256(b"no such manifest"), "").await;
    assert!(list.is_empty());
    // Even in a repository that does not exist yet.
    let (_, list) = referrers(&c, &b, "nowhere", &sha256(b"no such manifest"), "").await;
    assert!(list.is_empty());
}

#[tokio::test]
async fn referrers_may_be_pushed_before_their_subject() {
    let b = Berth::start();
    let c = client();
    // The subject's digest is known, but it is not pushed yet.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let subject_m = image_manifest(
        (OCI_CONFIG, &sha256(config), config.len()),
        &[(OCI_LAYER, &sha256(b"layer"), 5)],
    );
    let subject = sha256(&subject_m);
    let sig = artifact(
        Some(SIGNATURE),
        EMPTY,
        (&subject, subject_m.len()),
        Value::Null,
    );
    let sig_d = push_referrer(&c, &b, "app", &sig).await;
    assert_eq!(manifest_status(&c, &b, "app", &subject).await, 404);

    let (_, list) = referrers(&c, &b, "app", &subject, "").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sig_d);

    // Now the subject arrives, and the referrer is still listed.
    let (pushed, _) = push_image(&c, &b, "app", "v1", b"layer").await;
    assert_eq!(pushed, subject);
    let (_, list) = referrers(&c, &b, "app", &subject, "").await;
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn referrers_are_per_repository() {
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "repo-a", "v1", b"layer").await;
    push_image(&c, &b, "repo-b", "v1", b"layer").await;
    push_referrer(
        &c,
        &b,
        "repo-a",
        &artifact(Some(SIGNATURE), EMPTY, (&subject, sm.len()), Value::Null),
    )
    .await;
    let (_, list) = referrers(&c, &b, "repo-b", &subject, "").await;
    assert!(list.is_empty(), "{list:?}");
}

#[tokio::test]
async fn index_with_a_subject_is_listed_as_a_referrer() {
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "app", "v1", b"layer").await;
    let (child, cm) = push_image(&c, &b, "app", "child", b"child layer").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": child, "size": cm.len() }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": sm.len() },
        "annotations": { "org.example.kind": "bundle" },
    }))
    .unwrap();
    let r = put_manifest_as(&c, &b, "app", "bundle", OCI_INDEX, &index).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(header_str(&r, "oci-subject"), subject);
    let (_, list) = referrers(&c, &b, "app", &subject, "").await;
    let d = find(&list, &sha256(&index));
    assert_eq!(d["mediaType"], OCI_INDEX);
    assert_eq!(d["size"], index.len());
    assert_eq!(d["artifactType"], "application/vnd.example.bundle");
    assert_eq!(d["annotations"], json!({ "org.example.kind": "bundle" }));
}

#[tokio::test]
async fn deleted_referrer_leaves_the_list() {
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "app", "v1", b"layer").await;
    let d = push_referrer(
        &c,
        &b,
        "app",
        &artifact(Some(SIGNATURE), EMPTY, (&subject, sm.len()), Value::Null),
    )
    .await;
    assert_eq!(referrers(&c, &b, "app", &subject, "").await.1.len(), 1);
    assert_eq!(
        c.delete(b.url(&format!("/v2/app/manifests/{d}")))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert!(referrers(&c, &b, "app", &subject, "").await.1.is_empty());
}

#[tokio::test]
async fn referrers_of_an_invalid_digest_is_digest_invalid() {
    let b = Berth::start();
    let c = client();
    for digest in [
        "sha256:abc",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "latest",
    ] {
        let r = c
            .get(b.url(&format!("/v2/app/referrers/{digest}")))
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "DIGEST_INVALID").await;
    }
}

#[tokio::test]
async fn empty_artifact_type_falls_back_to_the_config_media_type() {
    // "If the artifactType is empty or missing in the image manifest, the value of
    // artifactType MUST be set to the config descriptor mediaType value."
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "app", "v1", b"layer").await;
    let m = artifact(
        Some(""),
        "application/vnd.example.config.v1+json",
        (&subject, sm.len()),
        Value::Null,
    );
    let d = push_referrer(&c, &b, "app", &m).await;
    let (_, list) = referrers(&c, &b, "app", &subject, "").await;
    assert_eq!(
        find(&list, &d)["artifactType"],
        "application/vnd.example.config.v1+json"
    );
}

#[tokio::test]
async fn index_without_artifact_type_is_listed_without_one() {
    // "If the artifactType is empty or missing in an index, the artifactType MUST be omitted."
    let b = Berth::start();
    let c = client();
    let (subject, sm) = push_image(&c, &b, "app", "v1", b"layer").await;
    let (child, cm) = push_image(&c, &b, "app", "child", b"child layer").await;
    for artifact_type in [None, Some("")] {
        let mut index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{ "mediaType": OCI_MANIFEST, "digest": child, "size": cm.len() }],
            "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": sm.len() },
        });
        if let Some(at) = artifact_type {
            index["artifactType"] = at.into();
        }
        let index = serde_json::to_vec(&index).unwrap();
        let r = put_manifest_as(&c, &b, "app", &sha256(&index), OCI_INDEX, &index).await;
        assert_eq!(r.status(), 201);
        let (_, list) = referrers(&c, &b, "app", &subject, "").await;
        let d = find(&list, &sha256(&index));
        assert!(d.get("artifactType").is_none(), "{artifact_type:?}: {d}");
    }
}
