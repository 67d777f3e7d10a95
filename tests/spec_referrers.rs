//! The referrers API: `GET /v2/<name>/referrers/<digest>[?artifactType=]`. How the list
//! describes each kind of referrer is one table: a failing case prints its name.

#[macro_use]
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
async fn push_referrer(c: &impl Http, b: &Berth, repo: &str, m: &[u8]) -> String {
    push_blob(c, b, repo, b"{}").await;
    let digest = sha256(m);
    let r = put_manifest_as(c, b, repo, &digest, OCI_MANIFEST, m).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

/// GETs the referrers of `subject`, asserting the response is an OCI image index.
async fn referrers(
    c: &impl Http,
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
    if query.is_empty() {
        assert!(
            r.headers().get("oci-filters-applied").is_none(),
            "no filter asked, none applied"
        );
    }
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

/// A registry with the image `<repo>:v1` pushed (and, with auth on, the projects `repo`
/// and `also`); returns its digest and size.
async fn with_subject(
    auth: Auth,
    repo: &str,
    also: &[&str],
) -> (Berth, RegistryClient, String, usize) {
    let projects: Vec<&str> = std::iter::once(repo).chain(also.iter().copied()).collect();
    let (b, c) = auth.start(&projects).await;
    let (subject, m) = push_image(&c, &b, repo, "v1", b"layer").await;
    (b, c, subject, m.len())
}

/// A referrer of the subject, and how the referrers list must describe it.
struct Listed {
    name: &'static str,
    media_type: &'static str,
    body: Vec<u8>,
    /// Pushed by this tag; `None`: by digest.
    tag: Option<&'static str>,
    /// Its `artifactType` in the list; `None`: omitted.
    artifact_type: Option<&'static str>,
    /// Its annotations in the list; `Null`: none (or empty).
    annotations: Value,
}

in_both_modes!(referrers_are_listed_with_their_artifact_type_and_annotations);
async fn referrers_are_listed_with_their_artifact_type_and_annotations(auth: Auth) {
    let (b, c, subject, size) = with_subject(auth, "app", &[]).await;
    let (child, cm) = push_image(&c, &b, "app", "child", b"child layer").await;
    // A referrer of another manifest is not listed.
    let (other, om) = push_image(&c, &b, "app", "v2", b"other layer").await;
    push_referrer(
        &c,
        &b,
        "app",
        &artifact(Some(SIGNATURE), EMPTY, (&other, om.len()), Value::Null),
    )
    .await;

    let config_type = "application/vnd.example.config.v1+json";
    let manifest = |name, artifact_type, config, annotations: Value, listed_as| Listed {
        name,
        media_type: OCI_MANIFEST,
        body: artifact(artifact_type, config, (&subject, size), annotations.clone()),
        tag: None,
        artifact_type: listed_as,
        annotations,
    };
    let index = |name, tag, artifact_type: Option<&str>, annotations: Value, listed_as| {
        let mut index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{ "mediaType": OCI_MANIFEST, "digest": child, "size": cm.len() }],
            "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": size },
        });
        if let Some(at) = artifact_type {
            index["artifactType"] = at.into();
        }
        if !annotations.is_null() {
            index["annotations"] = annotations.clone();
        }
        Listed {
            name,
            media_type: OCI_INDEX,
            body: serde_json::to_vec(&index).unwrap(),
            tag,
            artifact_type: listed_as,
            annotations,
        }
    };
    let bundle = "application/vnd.example.bundle";
    let cases = [
        manifest(
            "signature with annotations",
            Some(SIGNATURE),
            EMPTY,
            json!({ "org.example.signer": "alice" }),
            Some(SIGNATURE),
        ),
        manifest("SBOM", Some(SBOM), EMPTY, Value::Null, Some(SBOM)),
        // "If the artifactType is empty or missing in the image manifest, the value of
        // artifactType MUST be set to the config descriptor mediaType value."
        manifest(
            "manifest without artifactType",
            None,
            config_type,
            Value::Null,
            Some(config_type),
        ),
        manifest(
            "manifest with an empty artifactType",
            Some(""),
            config_type,
            Value::Null,
            Some(config_type),
        ),
        index(
            "index with an artifactType",
            Some("bundle"),
            Some(bundle),
            json!({ "org.example.kind": "bundle" }),
            Some(bundle),
        ),
        // "If the artifactType is empty or missing in an index, the artifactType MUST be omitted."
        index("index without artifactType", None, None, Value::Null, None),
        index(
            "index with an empty artifactType",
            None,
            Some(""),
            Value::Null,
            None,
        ),
    ];

    let mut listed = Vec::new();
    for case in &cases {
        let name = case.name;
        push_blob(&c, &b, "app", b"{}").await;
        let digest = sha256(&case.body);
        let reference = case.tag.map_or(digest.clone(), String::from);
        let r = put_manifest_as(&c, &b, "app", &reference, case.media_type, &case.body).await;
        assert_eq!(r.status(), 201, "case {name}: {:?}", r.text().await);
        assert_eq!(header_str(&r, "oci-subject"), subject, "case {name}");
        listed.push((digest.clone(), case.artifact_type));

        let (_, list) = referrers(&c, &b, "app", &subject, "").await;
        assert_eq!(list.len(), listed.len(), "case {name}: {list:?}");
        let d = find(&list, &digest);
        assert_eq!(d["mediaType"], case.media_type, "case {name}");
        assert_eq!(d["size"], case.body.len(), "case {name}");
        match case.artifact_type {
            Some(at) => assert_eq!(d["artifactType"], at, "case {name}"),
            None => assert!(d.get("artifactType").is_none(), "case {name}: {d}"),
        }
        if case.annotations.is_null() {
            assert!(
                d.get("annotations")
                    .is_none_or(|a| a.as_object().is_some_and(|o| o.is_empty())),
                "case {name}: {d}"
            );
        } else {
            assert_eq!(d["annotations"], case.annotations, "case {name}");
        }
    }

    // Filtered by artifactType (also the one taken from the config), the list says so and
    // holds exactly the referrers of that type.
    for at in [
        SIGNATURE,
        SBOM,
        config_type,
        bundle,
        "application/vnd.example.none",
    ] {
        let query = format!("?artifactType={}", at.replace('+', "%2B"));
        let (h, list) = referrers(&c, &b, "app", &subject, &query).await;
        assert_eq!(
            h.get("oci-filters-applied").map(|v| v.to_str().unwrap()),
            Some("artifactType"),
            "filter {at}"
        );
        let mut got: Vec<&str> = list.iter().map(|d| d["digest"].as_str().unwrap()).collect();
        let mut want: Vec<&str> = listed
            .iter()
            .filter(|(_, listed_as)| *listed_as == Some(at))
            .map(|(d, _)| d.as_str())
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "filter {at}");
        assert!(
            list.iter().all(|d| d["artifactType"] == at),
            "filter {at}: {list:?}"
        );
    }
}

in_both_modes!(referrers_of_an_unknown_subject_are_an_empty_index);
async fn referrers_of_an_unknown_subject_are_an_empty_index(auth: Auth) {
    let (b, c, _, _) = with_subject(auth, "app", &["nowhere"]).await;
    let (_, list) = referrers(&c, &b, "app", &sha256(b"no such manifest"), "").await;
    assert!(list.is_empty());
    // Even in a repository that does not exist yet.
    let (_, list) = referrers(&c, &b, "nowhere", &sha256(b"no such manifest"), "").await;
    assert!(list.is_empty());
}

in_both_modes!(referrers_may_be_pushed_before_their_subject);
async fn referrers_may_be_pushed_before_their_subject(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
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

in_both_modes!(referrers_are_per_repository);
async fn referrers_are_per_repository(auth: Auth) {
    let (b, c, subject, size) = with_subject(auth, "repo-a", &["repo-b"]).await;
    push_image(&c, &b, "repo-b", "v1", b"layer").await;
    push_referrer(
        &c,
        &b,
        "repo-a",
        &artifact(Some(SIGNATURE), EMPTY, (&subject, size), Value::Null),
    )
    .await;
    let (_, list) = referrers(&c, &b, "repo-b", &subject, "").await;
    assert!(list.is_empty(), "{list:?}");
}

in_both_modes!(deleted_referrer_leaves_the_list);
async fn deleted_referrer_leaves_the_list(auth: Auth) {
    let (b, c, subject, size) = with_subject(auth, "app", &[]).await;
    let d = push_referrer(
        &c,
        &b,
        "app",
        &artifact(Some(SIGNATURE), EMPTY, (&subject, size), Value::Null),
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

in_both_modes!(referrers_of_an_invalid_digest_is_digest_invalid);
async fn referrers_of_an_invalid_digest_is_digest_invalid(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
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
