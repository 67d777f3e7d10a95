//! Built-in accounts on replicas: two servers started at once on one PostgreSQL database
//! create one `admin` and one signing key between them, and accept each other's tokens.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::Value;

const ADMIN_PW: &str = "replica-admin-pw";

/// The JSON of a JWT's header or payload (`part` 0 or 1); the signature is not checked.
fn jwt_part(jwt: &str, part: usize) -> Value {
    let seg = jwt.split('.').nth(part).expect("JWT segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(seg)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

async fn admin_token(b: &Berth, scope: &str) -> String {
    let r = client()
        .get(b.url("/service/token"))
        .basic_auth("admin", Some(ADMIN_PW))
        .query(&[("service", "berth"), ("scope", scope)])
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("token JSON");
    v["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn replicas_started_together_share_one_admin_and_one_key_and_accept_each_others_tokens() {
    let (mut options, _dir) = replica_options().await;
    options.env = vec![
        ("BERTH_AUTH__MODE".into(), "builtin".into()),
        ("BERTH_AUTH__ADMIN_PASSWORD".into(), ADMIN_PW.into()),
    ];
    // Both first starts race for the admin account and the signing key.
    let (oa, ob) = (options.clone(), options);
    let ta = std::thread::spawn(move || Berth::start_with(oa));
    let tb = std::thread::spawn(move || Berth::start_with(ob));
    let (a, b) = (ta.join().expect("start a"), tb.join().expect("start b"));
    let created: usize = [&a, &b]
        .iter()
        .map(|s| {
            s.log_text()
                .matches("created the system administrator")
                .count()
        })
        .sum();
    assert_eq!(created, 1, "exactly one replica created admin");

    let scope = "repository:library/shared:pull,push";
    let (ta, tb) = (admin_token(&a, scope).await, admin_token(&b, scope).await);
    assert_eq!(
        jwt_part(&ta, 0)["kid"],
        jwt_part(&tb, 0)["kid"],
        "both replicas sign with the key in the database"
    );
    for (i, (token, server)) in [(&ta, &b), (&tb, &a)].into_iter().enumerate() {
        let body = format!("blob pushed with a token from the other replica {i}");
        let digest = sha256(body.as_bytes());
        let r = client()
            .post(server.url("/v2/library/shared/blobs/uploads/"))
            .bearer_auth(token)
            .query(&[("digest", digest.as_str())])
            .body(body.clone())
            .send()
            .await
            .expect("push");
        assert_eq!(r.status(), 201, "token {i} accepted by the other replica");
        let r = client()
            .get(a.url(&format!("/v2/library/shared/blobs/{digest}")))
            .bearer_auth(&ta)
            .send()
            .await
            .expect("pull");
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("body").as_ref(), body.as_bytes());
    }

    // A token signed by a key neither replica knows is refused, by both.
    let (_, payload, _) = {
        let mut parts = ta.split('.');
        (parts.next(), parts.next().unwrap_or_default(), parts.next())
    };
    let forged_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"alg":"ES256","typ":"JWT","kid":"0123456789abcdef0123456789abcdef"}"#);
    let forged = format!("{forged_header}.{payload}.AAAA");
    for server in [&a, &b] {
        let r = client()
            .get(server.url("/v2/library/shared/tags/list"))
            .bearer_auth(&forged)
            .send()
            .await
            .expect("forged");
        assert_eq!(r.status(), 401);
        let challenge = header_str(&r, "www-authenticate");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}
