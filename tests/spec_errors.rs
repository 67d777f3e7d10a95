//! Bad input: each mistake gets the spec's error code with a message a person can act on,
//! in the JSON error format, and changes nothing in either store. Most tests are tables of
//! [`Refusal`]s: a failing case prints its name.

#[macro_use]
mod common;
use common::*;

use serde_json::json;

in_both_modes!(api_version_check_answers_200_with_the_version_header);
async fn api_version_check_answers_200_with_the_version_header(auth: Auth) {
    let (b, c) = auth.start(&[]).await;
    for url in [b.url("/v2/"), b.url("/v2")] {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_api_version(&r);
    }
    let r = c.head(b.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_api_version(&r);
}

in_both_modes!(every_response_carries_the_api_version_header);
async fn every_response_carries_the_api_version_header(auth: Auth) {
    let (b, c, digest) = seeded(auth, &[]).await;
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

/// The image manifest `app:v1` of [`seeded`] is over this config and layer.
fn config_and_layer() -> (String, String) {
    (sha256(IMAGE_CONFIG), sha256(b"layer"))
}

/// A manifest from JSON.
fn bytes_of(v: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

in_both_modes!(invalid_names_digests_and_tags_are_refused);
async fn invalid_names_digests_and_tags_are_refused(auth: Auth) {
    use reqwest::Method;
    let (b, c, digest) = seeded(auth, &[]).await;
    let (cd, ld) = config_and_layer();
    let mut cases = Vec::new();

    // Names outside the spec's grammar, on every endpoint that takes one.
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
        let m = image_manifest((OCI_CONFIG, &digest, 1), &[]);
        let x = sha256(b"x");
        let refused = |method: Method, path: String| {
            Refusal::new(
                format!("name {name:.20}: {method} {path}"),
                method,
                path,
                400,
                "NAME_INVALID",
            )
            .says("repository name")
        };
        cases.extend([
            refused(Method::GET, format!("/v2/{name}/tags/list")),
            refused(Method::GET, format!("/v2/{name}/manifests/v1")),
            refused(Method::GET, format!("/v2/{name}/blobs/{digest}")),
            refused(Method::PUT, format!("/v2/{name}/manifests/v1"))
                .header("content-type", OCI_MANIFEST)
                .body(m),
            refused(
                Method::POST,
                format!("/v2/{name}/blobs/uploads/?digest={x}"),
            )
            .body(b"x".to_vec()),
            refused(Method::POST, format!("/v2/{name}/blobs/uploads/")),
        ]);
    }

    // Digests that are not digests, wherever one is read.
    for d in [
        "sha256:abc".to_string(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "g".repeat(64)),
        format!("sha512:{}", "a".repeat(64)),
        "sha256:".to_string(),
    ] {
        for (method, path) in [
            (Method::GET, format!("/v2/app/blobs/{d}")),
            (Method::DELETE, format!("/v2/app/blobs/{d}")),
            (Method::GET, format!("/v2/app/manifests/{d}")),
            (Method::DELETE, format!("/v2/app/manifests/{d}")),
            (Method::POST, format!("/v2/app/blobs/uploads/?digest={d}")),
        ] {
            let name = format!("digest {d:.20}: {method} {path}");
            let body = method == Method::POST;
            let refusal = Refusal::new(name, method, path, 400, "DIGEST_INVALID");
            cases.push(if body {
                refusal.body(b"x".to_vec())
            } else {
                refusal
            });
        }
    }

    // An algorithm the registry does not support: the message names it and the supported ones.
    let md5 = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let m = image_manifest((OCI_CONFIG, &sha256(b"c"), 1), &[]);
    for refusal in [
        Refusal::new(
            "md5 blob",
            Method::GET,
            format!("/v2/app/blobs/{md5}"),
            400,
            "DIGEST_INVALID",
        )
        .says("md5")
        .says("sha256"),
        Refusal::new(
            "md5 manifest",
            Method::GET,
            format!("/v2/app/manifests/{md5}"),
            400,
            "DIGEST_INVALID",
        ),
        Refusal::new(
            "md5 upload",
            Method::POST,
            format!("/v2/app/blobs/uploads/?digest={md5}"),
            400,
            "DIGEST_INVALID",
        )
        .body(Vec::new()),
        Refusal::manifest(
            "md5 manifest put",
            "app",
            md5,
            OCI_MANIFEST,
            &m,
            400,
            "DIGEST_INVALID",
        ),
    ] {
        cases.push(refusal);
    }

    // Tags outside the spec's grammar; one bad tag among `?tag=` refuses the whole push.
    let m = image_manifest((OCI_CONFIG, &cd, 37), &[(OCI_LAYER, &ld, 5)]);
    let long = "t".repeat(129);
    for tag in [".hidden", "-dash", long.as_str(), "a%2Bb"] {
        cases.push(
            Refusal::manifest(
                format!("tag {tag:.20}"),
                "app",
                tag,
                OCI_MANIFEST,
                &m,
                400,
                "MANIFEST_INVALID",
            )
            .says("tag"),
        );
    }
    let reference = format!("{}?tag=good&tag=.bad", sha256(&m));
    cases.push(
        Refusal::manifest(
            "a bad ?tag=",
            "app",
            &reference,
            OCI_MANIFEST,
            &m,
            400,
            "MANIFEST_INVALID",
        )
        .gone("/v2/app/manifests/good"),
    );

    refuse_all(&c, &b, cases).await;
}

in_both_modes!(refused_manifests_change_nothing);
async fn refused_manifests_change_nothing(auth: Auth) {
    let (b, c, digest) = seeded(auth, &[]).await;
    let (cd, ld) = config_and_layer();
    let image = image_manifest((OCI_CONFIG, &cd, 37), &[(OCI_LAYER, &ld, 5)]);
    let invalid = |name: &str, reference: &str, content_type: &str, body: &[u8]| {
        Refusal::manifest(
            name,
            "app",
            reference,
            content_type,
            body,
            400,
            "MANIFEST_INVALID",
        )
    };
    let mut cases = Vec::new();

    for (i, body) in [
        &b"not json at all"[..],
        b"",
        b"{\"schemaVersion\": 2,",
        b"[]",
    ]
    .into_iter()
    .enumerate()
    {
        cases.push(invalid(&format!("not JSON {i}"), "v2", OCI_MANIFEST, body));
    }
    for version in [json!(1), json!(3), json!("2"), serde_json::Value::Null] {
        let mut m = json!({
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": cd, "size": 37 },
            "layers": [{ "mediaType": OCI_LAYER, "digest": ld, "size": 5 }],
        });
        if !version.is_null() {
            m["schemaVersion"] = version.clone();
        }
        cases.push(
            invalid(
                &format!("schemaVersion {version}"),
                "v2",
                OCI_MANIFEST,
                &bytes_of(m),
            )
            .says("schemaVersion|JSON"),
        );
    }
    // A mediaType field that contradicts the Content-Type.
    for content_type in [OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST] {
        cases.push(
            invalid(
                &format!("sent as {content_type}"),
                "v2",
                content_type,
                &image,
            )
            .says(OCI_MANIFEST)
            .says(content_type),
        );
    }
    let schema1 = "application/vnd.docker.distribution.manifest.v1+json";
    cases.push(invalid(
        "unsupported media type",
        "v2",
        schema1,
        &bytes_of(json!({
            "schemaVersion": 2, "mediaType": schema1,
            "config": { "mediaType": OCI_CONFIG, "digest": cd, "size": 37 }, "layers": [],
        })),
    ));
    cases.push(
        invalid(
            "index with layers",
            "idx",
            OCI_INDEX,
            &bytes_of(json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX,
                "manifests": [{ "mediaType": OCI_MANIFEST, "digest": digest, "size": 1 }],
                "layers": [{ "mediaType": OCI_LAYER, "digest": ld, "size": 5 }],
            })),
        )
        .says("layers"),
    );
    cases.push(
        invalid(
            "image with manifests",
            "v2",
            OCI_MANIFEST,
            &bytes_of(json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": { "mediaType": OCI_CONFIG, "digest": cd, "size": 37 },
                "layers": [],
                "manifests": [{ "mediaType": OCI_MANIFEST, "digest": digest, "size": 1 }],
            })),
        )
        .says("manifests"),
    );
    cases.push(
        invalid(
            "image without config",
            "v2",
            OCI_MANIFEST,
            &bytes_of(json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "layers": [{ "mediaType": OCI_LAYER, "digest": ld, "size": 5 }],
            })),
        )
        .says("config"),
    );
    let negative = String::from_utf8(image_manifest((OCI_CONFIG, &cd, 37), &[]))
        .unwrap()
        .replace(
            "\"layers\":[]",
            &format!(
                "\"layers\":[{{\"mediaType\":\"{OCI_LAYER}\",\"digest\":\"{ld}\",\"size\":-5}}]"
            ),
        );
    cases.push(invalid(
        "negative size",
        "v2",
        OCI_MANIFEST,
        negative.as_bytes(),
    ));
    cases.push(invalid(
        "descriptor digest of an unsupported algorithm",
        "v2",
        OCI_MANIFEST,
        &bytes_of(json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": "md5:d41d8cd98f00b204e9800998ecf8427e", "size": 2 },
            "layers": [],
        })),
    ));

    // Put by a digest the body does not have.
    let wrong = sha256(b"something else");
    cases.push(
        Refusal::manifest(
            "put by another digest",
            "app",
            &wrong,
            OCI_MANIFEST,
            &image,
            400,
            "DIGEST_INVALID",
        )
        .says(&wrong)
        .gone(format!("/v2/app/manifests/{wrong}")),
    );

    // A layer the repository lacks: the detail lists what is missing.
    let missing = sha256(b"missing layer");
    let lacking = image_manifest((OCI_CONFIG, &cd, 37), &[(OCI_LAYER, &missing, 13)]);
    cases.push(
        Refusal::manifest(
            "missing layer",
            "app",
            "v2",
            OCI_MANIFEST,
            &lacking,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        )
        .detail(json!({ "missing": [missing] })),
    );

    // Refused pushes to the existing tag v1 leave it where it was (the snapshot holds it).
    let missing = image_manifest(
        (OCI_CONFIG, &cd, 37),
        &[(OCI_LAYER, &sha256(b"missing"), 7)],
    );
    cases.push(Refusal::manifest(
        "v1: missing layer",
        "app",
        "v1",
        OCI_MANIFEST,
        &missing,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    ));
    cases.push(invalid("v1: not JSON", "v1", OCI_MANIFEST, b"{"));
    cases.push(invalid(
        "v1: image sent as an index",
        "v1",
        OCI_INDEX,
        &missing,
    ));

    refuse_all(&c, &b, cases).await;
}

/// A registry that takes manifests of 1 KiB at most, holding the config of [`manifest_of_len`].
async fn limited(auth: Auth) -> (Berth, RegistryClient) {
    let options = Options {
        env: vec![("BERTH_LIMITS__MAX_MANIFEST_BYTES".into(), "1024".into())],
        ..Default::default()
    };
    let (b, c) = auth.start_with(options, &["app"]).await;
    push_blob(&c, &b, "app", IMAGE_CONFIG).await;
    (b, c)
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

in_both_modes!(manifests_over_the_size_limit_are_413_manifest_invalid);
async fn manifests_over_the_size_limit_are_413_manifest_invalid(auth: Auth) {
    let (b, c) = limited(auth).await;
    let over = manifest_of_len(1025);
    let streamed = manifest_of_len(4000);
    // No Content-Length: the limit holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        streamed.chunks(500).map(|c| Ok(c.to_vec())).collect();
    let mut stream = Refusal::manifest(
        "streamed",
        "app",
        "big",
        OCI_MANIFEST,
        &[],
        413,
        "MANIFEST_INVALID",
    );
    stream.body = Some(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    refuse_all(
        &c,
        &b,
        vec![
            Refusal::manifest(
                "one byte over",
                "app",
                "big",
                OCI_MANIFEST,
                &over,
                413,
                "MANIFEST_INVALID",
            )
            .says("1024")
            .gone("/v2/app/manifests/big")
            .gone(format!("/v2/app/manifests/{}", sha256(&over))),
            stream.gone("/v2/app/manifests/big"),
        ],
    )
    .await;
    // Exactly at the limit is fine.
    let m = manifest_of_len(1024);
    assert_eq!(
        put_manifest_as(&c, &b, "app", "fits", OCI_MANIFEST, &m)
            .await
            .status(),
        201
    );
}

in_both_modes!(chunk_whose_content_range_is_not_at_the_session_offset_is_416);
async fn chunk_whose_content_range_is_not_at_the_session_offset_is_416(auth: Auth) {
    let (b, c, _) = seeded(auth, &[]).await;
    let before_seed = store_snapshot(&c, &b).await;
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
    assert_eq!(store_snapshot(&c, &b).await, before);
    assert_eq!(std::fs::metadata(&b.upload_files()[0]).unwrap().len(), 0);
    assert_eq!(c.delete(&upload).send().await.unwrap().status(), 204);
    assert_eq!(store_snapshot(&c, &b).await, before_seed);
}

in_both_modes!(refused_upload_requests_leave_the_session_as_it_was);
async fn refused_upload_requests_leave_the_session_as_it_was(auth: Auth) {
    use reqwest::Method;
    let (b, c, _) = seeded(auth, &[]).await;
    let before = store_snapshot(&c, &b).await;
    let md5 = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let bytes = b"monolithic bytes".to_vec();
    let single = format!("/v2/app/blobs/uploads/?digest={}", sha256(&bytes));
    // `{upload}` stands for a session opened for the case, empty.
    let cases = [
        Refusal::new(
            "malformed Content-Range",
            Method::PATCH,
            "{upload}",
            416,
            "BLOB_UPLOAD_INVALID",
        )
        .or_status(400)
        .header("content-range", "ten-twenty")
        .body(vec![1u8; 11])
        .says("ten-twenty"),
        Refusal::new(
            "Content-Range longer than the body",
            Method::PATCH,
            "{upload}",
            400,
            "SIZE_INVALID",
        )
        .header("content-range", "0-9")
        .body(vec![1u8; 4]),
        Refusal::new(
            "close without a digest",
            Method::PUT,
            "{upload}",
            400,
            "DIGEST_INVALID",
        )
        .body(b"bytes".to_vec())
        .says("digest="),
        Refusal::new(
            "close with an unsupported digest",
            Method::PUT,
            format!("{{upload}}?digest={md5}"),
            400,
            "DIGEST_INVALID",
        )
        .body(Vec::new()),
        // A single POST whose Content-Range does not start at 0, or disagrees with the
        // body, leaves no session behind to point at.
        Refusal::new(
            "single POST not at 0",
            Method::POST,
            &single,
            416,
            "BLOB_UPLOAD_INVALID",
        )
        .header("content-range", "5-20")
        .body(bytes.clone())
        .answers("location", HeaderIs::Absent),
        Refusal::new(
            "single POST longer than its body",
            Method::POST,
            &single,
            400,
            "SIZE_INVALID",
        )
        .header("content-range", "0-99")
        .body(bytes.clone()),
    ];
    for mut case in cases {
        let name = case.name.clone();
        let upload = if case.url.starts_with("{upload}") {
            let upload = open_upload(&c, &b, "app").await;
            case.url = case.url.replace("{upload}", &upload);
            Some(upload)
        } else {
            None
        };
        assert_refused(&c, &b, case).await;
        if let Some(upload) = upload {
            let r = c.get(&upload).send().await.unwrap();
            assert_eq!(r.status(), 204, "case {name}: the session is still there");
            assert_eq!(header_str(&r, "range"), "0-0", "case {name}: and empty");
            assert_eq!(c.delete(&upload).send().await.unwrap().status(), 204);
        }
        assert_eq!(
            store_snapshot(&c, &b).await,
            before,
            "case {name}: a refused request changed the stores"
        );
    }
}

in_both_modes!(unknown_sessions_manifests_blobs_and_endpoints_are_404);
async fn unknown_sessions_manifests_blobs_and_endpoints_are_404(auth: Auth) {
    use reqwest::Method;
    // With auth on, the project `nowhere` exists and the caller may pull there: its
    // repositories are unknown as they are without auth.
    let (b, c, _) = seeded(auth, &["nowhere"]).await;
    let mut cases = Vec::new();
    for id in [
        "3f1e5d9c-0000-4000-8000-000000000000",
        "not-a-session",
        "a..b",
        "x%2F..%2Fy",
    ] {
        let url = format!("/v2/app/blobs/uploads/{id}");
        let unknown = |method: Method, url: String| {
            Refusal::new(
                format!("session {id}: {method}"),
                method,
                url,
                404,
                "BLOB_UPLOAD_UNKNOWN",
            )
        };
        cases.push(unknown(Method::GET, url.clone()));
        cases.push(
            unknown(Method::PATCH, url.clone())
                .header("content-range", "0-2")
                .body(b"abc".to_vec()),
        );
        cases.push(
            unknown(
                Method::PUT,
                with_query(&url, &format!("digest={}", sha256(b"abc"))),
            )
            .body(b"abc".to_vec()),
        );
        cases.push(unknown(Method::DELETE, url));
    }
    let absent = sha256(b"absent");
    for reference in ["nope", absent.as_str()] {
        let url = format!("/v2/app/manifests/{reference}");
        cases.push(
            Refusal::new(
                format!("GET manifest {reference}"),
                Method::GET,
                &url,
                404,
                "MANIFEST_UNKNOWN",
            )
            .says(reference),
        );
        cases.push(Refusal::new(
            format!("DELETE manifest {reference}"),
            Method::DELETE,
            &url,
            404,
            "MANIFEST_UNKNOWN",
        ));
        cases.push(Refusal::status(
            format!("HEAD manifest {reference}"),
            Method::HEAD,
            &url,
            404,
        ));
    }
    cases.push(Refusal::new(
        "manifest in no repository",
        Method::GET,
        "/v2/nowhere/manifests/v1",
        404,
        "MANIFEST_UNKNOWN",
    ));
    let url = format!("/v2/app/blobs/{absent}");
    cases.push(Refusal::new("GET blob", Method::GET, &url, 404, "BLOB_UNKNOWN").says(&absent));
    cases.push(Refusal::new(
        "DELETE blob",
        Method::DELETE,
        &url,
        404,
        "BLOB_UNKNOWN",
    ));
    cases.push(Refusal::status("HEAD blob", Method::HEAD, &url, 404));
    cases.push(Refusal::new(
        "blob in no repository",
        Method::GET,
        format!("/v2/nowhere/blobs/{absent}"),
        404,
        "BLOB_UNKNOWN",
    ));
    for path in ["/v2/app/unknown", "/v2/app/tags", "/v2/app/tags/list/extra"] {
        cases.push(Refusal::status(
            format!("endpoint {path}"),
            Method::GET,
            path,
            404,
        ));
    }
    refuse_all(&c, &b, cases).await;
}

in_both_modes!(unsupported_methods_are_405_unsupported);
async fn unsupported_methods_are_405_unsupported(auth: Auth) {
    use reqwest::Method;
    let (b, c, digest) = seeded(auth, &[]).await;
    let before = store_snapshot(&c, &b).await;
    let layer = sha256(b"layer");
    let upload = open_upload(&c, &b, "app").await;
    let cases = [
        (Method::POST, "/v2/".to_string()),
        (Method::DELETE, "/v2/".to_string()),
        (Method::POST, "/v2/_catalog".to_string()),
        (Method::DELETE, "/v2/app/tags/list".to_string()),
        (Method::POST, "/v2/app/manifests/v1".to_string()),
        (Method::PATCH, format!("/v2/app/manifests/{digest}")),
        (Method::PUT, format!("/v2/app/blobs/{layer}")),
        (Method::PATCH, format!("/v2/app/blobs/{layer}")),
        (Method::GET, "/v2/app/blobs/uploads/".to_string()),
        (Method::POST, upload.clone()),
        (Method::DELETE, format!("/v2/app/referrers/{digest}")),
    ]
    .map(|(method, url)| {
        Refusal::new(
            format!("{method} {url}"),
            method.clone(),
            url,
            405,
            "UNSUPPORTED",
        )
        .answers("allow", HeaderIs::Present)
        .says(method.as_str())
    });
    refuse_all(&c, &b, cases.into()).await;
    assert_eq!(c.delete(&upload).send().await.unwrap().status(), 204);
    assert_eq!(store_snapshot(&c, &b).await, before);
}

in_both_modes!(error_bodies_follow_the_spec_format);
async fn error_bodies_follow_the_spec_format(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
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
