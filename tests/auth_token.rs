//! Token authentication at the registry (`auth.mode = "token"`): challenges, the checks on
//! a bearer JWT (signature, issuer, audience, validity window), the access it grants per
//! repository and action, the catalog filtered to what the token may pull, and skopeo
//! pushing and pulling with tokens. Keys are made with openssl; tokens are signed here with
//! the private keys, as a token service would.

mod common;

use std::process::Command;

use common::keys::*;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

/// An RSA and an EC key pair the server trusts, and an RSA pair (`other`) it does not.
fn generate_keys() -> Keys {
    Keys::generate(&[
        ("rsa", Algorithm::RS256),
        ("ec", Algorithm::ES256),
        ("other", Algorithm::RS256),
    ])
}

/// A token signed with key `key` granting `access` (`[(type, name, actions)]`); `tweak`
/// edits the claims before signing.
fn token_with(
    keys: &Keys,
    key: &str,
    access: &[(&str, &str, &[&str])],
    tweak: impl FnOnce(&mut serde_json::Value),
) -> String {
    let mut claims = token_claims(access);
    claims["jti"] = json!(format!("{}", rand_id()));
    tweak(&mut claims);
    keys.sign(key, &claims)
}

fn token(keys: &Keys, access: &[(&str, &str, &[&str])]) -> String {
    token_with(keys, "rsa", access, |_| {})
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn start(keys: &Keys) -> Berth {
    start_trusting(keys, &["rsa", "ec"])
}

/// The challenge's parameters, asserting it is a Bearer challenge.
fn challenge(r: &reqwest::Response) -> String {
    let v = header_str(r, "www-authenticate");
    assert!(
        v.starts_with("Bearer "),
        "401 without a Bearer challenge: {v:?}"
    );
    v
}

const PUSH: &[&str] = &["pull", "push"];
const PULL: &[&str] = &["pull"];

#[tokio::test]
async fn requests_without_a_token_get_a_challenge_naming_realm_service_and_scope() {
    let keys = generate_keys();
    let b = start(&keys);
    let anon = client();

    let r = anon.get(b.url("/v2/")).send().await.expect("GET /v2/");
    let c = challenge(&r);
    assert_eq!(c, format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\""));
    expect_error(r, 401, "UNAUTHORIZED").await;

    let r = anon
        .get(b.url("/v2/team/app/manifests/v1"))
        .send()
        .await
        .expect("GET manifest");
    assert!(
        challenge(&r).ends_with(",scope=\"repository:team/app:pull\""),
        "{}",
        challenge(&r)
    );
    expect_error(r, 401, "UNAUTHORIZED").await;

    let r = anon
        .post(b.url("/v2/team/app/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .expect("POST upload");
    assert!(
        challenge(&r).ends_with(",scope=\"repository:team/app:pull,push\""),
        "{}",
        challenge(&r)
    );
    expect_error(r, 401, "UNAUTHORIZED").await;

    // A scheme other than Bearer is no token either.
    let r = anon
        .get(b.url("/v2/"))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .expect("GET /v2/ with basic");
    challenge(&r);
    expect_error(r, 401, "UNAUTHORIZED").await;

    // Nothing was created by the refused upload.
    let any = bearer(&token(&keys, &[("registry", "catalog", &["*"])]));
    assert!(catalog_of(&any, &b).await.is_empty());
    assert!(b.upload_files().is_empty());
}

#[tokio::test]
async fn a_push_token_pushes_and_a_pull_token_pulls_but_cannot_push_or_delete() {
    let keys = generate_keys();
    let b = start(&keys);
    let pusher = bearer(&token(&keys, &[("repository", "team/app", PUSH)]));
    let puller = bearer(&token(&keys, &[("repository", "team/app", PULL)]));

    let r = pusher.get(b.url("/v2/")).send().await.expect("GET /v2/");
    assert_eq!(r.status(), 200);
    let (digest, bytes) = push_image(&pusher, &b, "team/app", "v1", b"layer one").await;

    let r = puller
        .get(b.url("/v2/team/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("pull manifest");
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(r.bytes().await.expect("body").as_ref(), bytes.as_slice());
    assert_eq!(
        tags_of(&puller, &b, "team/app").await,
        Some(vec!["v1".to_string()])
    );

    // Pushing with the pull-only token: refused before anything is stored.
    let r = puller
        .put(b.url("/v2/team/app/manifests/v2"))
        .header("content-type", OCI_MANIFEST)
        .body(bytes.clone())
        .send()
        .await
        .expect("push with a pull token");
    let c = challenge(&r);
    assert!(
        c.contains("scope=\"repository:team/app:pull,push\"")
            && c.ends_with("error=\"insufficient_scope\""),
        "{c}"
    );
    let msg = expect_error(r, 401, "UNAUTHORIZED").await;
    assert!(msg.contains("repository:team/app:pull,push"), "{msg}");
    assert_eq!(
        tags_of(&pusher, &b, "team/app").await,
        Some(vec!["v1".to_string()])
    );

    // Deleting needs the delete action, which neither token has.
    let r = pusher
        .delete(b.url(&format!("/v2/team/app/manifests/{digest}")))
        .send()
        .await
        .expect("delete");
    assert!(challenge(&r).contains("scope=\"repository:team/app:delete\""));
    expect_error(r, 401, "UNAUTHORIZED").await;
    assert_eq!(manifest_status(&puller, &b, "team/app", "v1").await, 200);
    let deleter = bearer(&token(&keys, &[("repository", "team/app", &["*"])]));
    let r = deleter
        .delete(b.url(&format!("/v2/team/app/manifests/{digest}")))
        .send()
        .await
        .expect("delete with *");
    assert_eq!(r.status(), 202);
    assert_eq!(manifest_status(&puller, &b, "team/app", "v1").await, 404);

    // Another repository is out of the token's reach.
    let r = puller
        .get(b.url("/v2/team/other/tags/list"))
        .send()
        .await
        .expect("other repo");
    assert!(challenge(&r).contains("scope=\"repository:team/other:pull\""));
    expect_error(r, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_reason() {
    let keys = generate_keys();
    let b = start(&keys);
    let grant: &[(&str, &str, &[&str])] = &[("repository", "team/app", PULL)];
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            token_with(&keys, "rsa", grant, |c| c["exp"] = json!(now() - 120)),
            "expired",
        ),
        (
            "not yet valid",
            token_with(&keys, "rsa", grant, |c| c["nbf"] = json!(now() + 600)),
            "not valid yet",
        ),
        (
            "other issuer",
            token_with(&keys, "rsa", grant, |c| c["iss"] = json!("someone-else")),
            "issuer",
        ),
        (
            "other audience",
            token_with(&keys, "rsa", grant, |c| {
                c["aud"] = json!("another-registry")
            }),
            "another service",
        ),
        (
            "no expiry",
            token_with(&keys, "rsa", grant, |c| {
                c.as_object_mut().expect("object").remove("exp");
            }),
            "exp",
        ),
        (
            "untrusted key",
            token_with(&keys, "other", grant, |_| {}),
            "signature",
        ),
        ("not a JWT", "not-a-token".to_string(), "not a JWT"),
    ];
    for (what, t, reason) in cases {
        let r = bearer(&t)
            .get(b.url("/v2/team/app/tags/list"))
            .send()
            .await
            .expect("request");
        let c = challenge(&r);
        assert!(c.ends_with("error=\"invalid_token\""), "{what}: {c}");
        let msg = expect_error(r, 401, "UNAUTHORIZED").await;
        assert!(msg.contains(reason), "{what}: message {msg:?}");
    }

    // The same claims signed properly (RSA or EC, `aud` a string or a list naming this
    // service) are accepted; the repository is empty.
    for (key, aud) in [
        ("rsa", json!(SERVICE)),
        ("ec", json!(SERVICE)),
        ("rsa", json!(["another-registry", SERVICE])),
    ] {
        let r = bearer(&token_with(&keys, key, grant, |c| c["aud"] = aud))
            .get(b.url("/v2/team/app/tags/list"))
            .send()
            .await
            .expect("request");
        expect_error(r, 404, "NAME_UNKNOWN").await;
    }
}

#[tokio::test]
async fn a_remembered_token_still_expires() {
    let keys = generate_keys();
    let b = start(&keys);
    let t = token_with(&keys, "ec", &[("repository", "team/app", PUSH)], |c| {
        c["exp"] = json!(now() + 2)
    });
    let c = bearer(&t);
    push_blob(&c, &b, "team/app", b"before expiry").await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let r = c
        .post(b.url("/v2/team/app/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .expect("POST after expiry");
    let msg = expect_error(r, 401, "UNAUTHORIZED").await;
    assert!(msg.contains("expired"), "{msg}");
}

#[tokio::test]
async fn the_catalog_lists_what_the_token_may_pull_and_mounts_need_pull_on_the_source() {
    let keys = generate_keys();
    let b = start(&keys);
    let admin = bearer(&token(
        &keys,
        &[
            ("repository", "a/one", PUSH),
            ("repository", "b/two", PUSH),
            ("repository", "c/three", PUSH),
        ],
    ));
    for repo in ["a/one", "b/two", "c/three"] {
        push_image(&admin, &b, repo, "v1", repo.as_bytes()).await;
    }
    let one = bearer(&token(
        &keys,
        &[
            ("repository", "a/one", PULL),
            ("repository", "c/three", PUSH),
        ],
    ));
    assert_eq!(catalog_of(&one, &b).await, vec!["a/one", "c/three"]);
    let all = bearer(&token(&keys, &[("registry", "catalog", &["*"])]));
    assert_eq!(
        catalog_of(&all, &b).await,
        vec!["a/one", "b/two", "c/three"]
    );

    // Mounting a blob of b/two into c/three needs pull on b/two: without it the registry
    // opens an ordinary upload (202) instead of linking the blob (201).
    let blob = push_blob(&admin, &b, "b/two", b"mount me").await;
    let mount = |c: &reqwest::Client| {
        c.post(b.url(&format!(
            "/v2/c/three/blobs/uploads/?mount={blob}&from=b/two"
        )))
        .header("content-length", "0")
        .send()
    };
    let r = mount(&one).await.expect("mount without pull on the source");
    assert_eq!(r.status(), 202);
    assert_eq!(blob_status(&admin, &b, "c/three", &blob).await, 404);
    let both = bearer(&token(
        &keys,
        &[
            ("repository", "b/two", PULL),
            ("repository", "c/three", PUSH),
        ],
    ));
    let r = mount(&both).await.expect("mount with pull on the source");
    assert_eq!(r.status(), 201);
    assert_eq!(blob_status(&admin, &b, "c/three", &blob).await, 200);
}

#[test]
fn the_server_refuses_to_start_without_usable_keys() {
    let keys = generate_keys();
    let garbage = keys.path("garbage.pem");
    std::fs::write(&garbage, "not a key").expect("write");
    for (keys_value, expected) in [
        ("", "names no key"),
        (
            garbage.to_str().expect("utf-8 path"),
            "not a PEM RSA or EC public key",
        ),
        ("/nonexistent/key.pem", "reading token key"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(keys.path("data"))
            .env_remove("BERTH_CONFIG")
            .env("BERTH_AUTH__MODE", "token")
            .env("BERTH_AUTH__TOKEN__REALM", REALM)
            .env("BERTH_AUTH__TOKEN__SERVICE", SERVICE)
            .env("BERTH_AUTH__TOKEN__ISSUER", ISSUER)
            .env("BERTH_AUTH__TOKEN__PUBLIC_KEYS", keys_value)
            .output()
            .expect("run berth");
        assert!(!out.status.success(), "started with keys {keys_value:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "keys {keys_value:?}: {err}");
    }
}

/// skopeo with `--{src,dest}-registry-token`: a real client sending bearer tokens.
#[tokio::test]
async fn skopeo_copies_in_and_out_with_bearer_tokens() {
    let keys = generate_keys();
    let b = start(&keys);
    let work = tempfile::tempdir().expect("temp dir");
    let auth = work.path().join("auth.json");
    std::fs::write(&auth, "{\"auths\":{}}\n").expect("auth file");
    let skopeo = |args: &[&str]| {
        Command::new("skopeo")
            .args(args)
            .env("REGISTRY_AUTH_FILE", &auth)
            .env("TMPDIR", work.path())
            .output()
            .expect("run skopeo")
    };
    let writer = bearer(&token(&keys, &[("repository", "src/app", PUSH)]));
    let (digest, _) = push_image(&writer, &b, "src/app", "v1", b"skopeo layer").await;

    let layout = work.path().join("layout");
    let layout_ref = format!("oci:{}:v1", layout.display());
    let src = format!("docker://{}/src/app:v1", b.host());
    let dst = format!("docker://{}/dst/app:v1", b.host());

    // Without a token skopeo follows the challenge to the realm, for the scope it needs.
    let out = skopeo(&["copy", "-q", "--src-tls-verify=false", &src, &layout_ref]);
    assert!(!out.status.success(), "copy without a token succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:1/service/token?scope=repository%3Asrc%2Fapp%3Apull"),
        "{err}"
    );

    let pull = token(&keys, &[("repository", "src/app", PULL)]);
    let out = skopeo(&[
        "copy",
        "-q",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--src-registry-token",
        &pull,
        &src,
        &layout_ref,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("layout index"))
            .expect("index JSON");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());

    // A token for src/app only cannot push to dst/app; nothing lands there.
    let out = skopeo(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--dest-registry-token",
        &pull,
        &layout_ref,
        &dst,
    ]);
    assert!(!out.status.success(), "push with a pull token succeeded");
    let dst_push = token(&keys, &[("repository", "dst/app", PUSH)]);
    let reader = bearer(&dst_push);
    assert_eq!(manifest_status(&reader, &b, "dst/app", "v1").await, 404);

    let out = skopeo(&[
        "copy",
        "-q",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-registry-token",
        &dst_push,
        &layout_ref,
        &dst,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = reader
        .get(b.url("/v2/dst/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("pull copied manifest");
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
}
