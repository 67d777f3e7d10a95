//! The test OpenID Connect provider (tests/oidc/provider.mjs) does what the sign-in tests of
//! Berth rely on: a login a plain HTTP client and Chromium can complete, PKCE, the claims,
//! refresh tokens, a new `sub` on demand (a redeployed provider) and revocation. Each test
//! makes its own user, so they run in parallel on the one provider of the test run. Without
//! the test command they fail (`BERTH_TEST_OIDC_ISSUER is not set: run the tests through
//! scripts/test.sh ...`).

mod common;

use std::time::Duration;

use common::oidc::{
    AuthRequest, Browser, Pkce, Provider, WebSession, form_encode, jwt_claims, jwt_header,
    login_form_action, query_param, resolve,
};
use serde_json::{Value, json};

const SCOPE: &str = "openid profile email groups offline_access";

/// A redirect URI of the default client on a port nothing listens on: the tests stop at it.
fn callback() -> String {
    "http://127.0.0.1:9/c/oidc/callback".to_string()
}

/// Where screenshots are kept after the run (`BERTH_TEST_ARTIFACTS`, set by scripts/test.sh).
fn artifacts() -> String {
    std::env::var("BERTH_TEST_ARTIFACTS")
        .expect("BERTH_TEST_ARTIFACTS is not set: run the tests through scripts/test.sh")
}

fn random() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Signs `user` in with the default client over plain HTTP; returns the authorization code
/// (state and iss checked), the PKCE verifier, the nonce and whether the form was shown.
async fn code_for(
    p: &Provider,
    discovery: &Value,
    web: &mut WebSession,
    user: &Value,
) -> (String, Pkce, String, bool) {
    let (state, nonce, pkce) = (random(), random(), Pkce::new());
    let redirect_uri = callback();
    let url = p.authorization_url(
        discovery,
        &AuthRequest {
            client_id: &p.client_id,
            redirect_uri: &redirect_uri,
            scope: SCOPE,
            state: &state,
            nonce: &nonce,
        },
        &pkce,
    );
    let username = user["username"].as_str().expect("username");
    let password = user["password"].as_str().expect("password");
    let stop = |u: &str| u.starts_with(&redirect_uri);
    let (page, form_shown) = web.sign_in(&url, username, password, &stop).await;
    assert!(
        page.url.starts_with(&format!("{redirect_uri}?")),
        "sign-in did not reach the redirect URI: {page:?}"
    );
    assert_eq!(query_param(&page.url, "state").as_deref(), Some(&*state));
    assert_eq!(
        query_param(&page.url, "iss").as_deref(),
        Some(&*p.issuer),
        "RFC 9207 iss parameter"
    );
    let code = query_param(&page.url, "code").unwrap_or_else(|| panic!("no code in {}", page.url));
    (code, pkce, nonce, form_shown)
}

async fn exchange(p: &Provider, discovery: &Value, code: &str, pkce: &Pkce) -> (u16, Value) {
    let redirect_uri = callback();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &redirect_uri),
        ("code_verifier", &pkce.verifier),
    ];
    p.token_request(discovery, &p.client_id, &p.client_secret, &form)
        .await
}

async fn refresh(p: &Provider, discovery: &Value, refresh_token: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    p.token_request(discovery, &p.client_id, &p.client_secret, &form)
        .await
}

#[tokio::test]
async fn a_plain_http_login_with_pkce_yields_an_id_token_with_the_users_claims() {
    let p = Provider::from_env();
    let d = p.discovery().await;
    assert_eq!(d["issuer"], p.issuer.as_str());
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    for scope in ["openid", "profile", "email", "groups", "offline_access"] {
        assert!(
            d["scopes_supported"]
                .as_array()
                .is_some_and(|s| s.contains(&json!(scope))),
            "scope {scope} in {d}"
        );
    }
    let user = p
        .new_user(
            "login",
            json!({"groups": ["berth-admins", "team-a"], "name": "Lo Gin"}),
        )
        .await;
    let mut web = WebSession::new();
    let (code, pkce, nonce, form_shown) = code_for(&p, &d, &mut web, &user).await;
    assert!(form_shown, "a fresh cookie jar sees the login form");
    let mut names = web.cookie_names();
    names.dedup();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("oidcop_")),
        "the provider's cookies keep out of Berth's names: {names:?}"
    );

    let (status, tokens) = exchange(&p, &d, &code, &pkce).await;
    assert_eq!(status, 200, "code exchange: {tokens}");
    assert!(
        tokens["refresh_token"].is_string(),
        "a refresh token: {tokens}"
    );
    let claims = jwt_claims(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["iss"], p.issuer.as_str());
    assert_eq!(claims["aud"], p.client_id.as_str());
    assert_eq!(claims["nonce"], nonce.as_str());
    assert_eq!(claims["sub"], user["sub"]);
    assert_eq!(claims["email"], user["email"]);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["preferred_username"], user["username"]);
    assert_eq!(claims["name"], "Lo Gin");
    assert_eq!(claims["groups"], json!(["berth-admins", "team-a"]));

    // The same claims at the userinfo endpoint.
    let userinfo = reqwest::Client::new()
        .get(d["userinfo_endpoint"].as_str().expect("userinfo_endpoint"))
        .bearer_auth(tokens["access_token"].as_str().expect("access_token"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("GET userinfo");
    assert_eq!(userinfo.status(), 200);
    let info: Value = userinfo.json().await.expect("userinfo JSON");
    assert_eq!(info["sub"], user["sub"]);
    assert_eq!(info["groups"], json!(["berth-admins", "team-a"]));

    // A code works once, and only with its verifier.
    let (status, again) = exchange(&p, &d, &code, &pkce).await;
    assert_eq!(
        (status, &again["error"]),
        (400, &json!("invalid_grant")),
        "{again}"
    );
    let (code2, _, _, form_shown) = code_for(&p, &d, &mut web, &user).await;
    assert!(
        !form_shown,
        "the provider's session signs the user in silently"
    );
    let (status, wrong) = exchange(&p, &d, &code2, &Pkce::new()).await;
    assert_eq!(
        (status, &wrong["error"]),
        (400, &json!("invalid_grant")),
        "{wrong}"
    );
}

#[tokio::test]
async fn pkce_is_required_and_a_wrong_password_shows_the_form_again() {
    let p = Provider::from_env();
    let d = p.discovery().await;
    let user = p.new_user("pkce", json!({})).await;
    let redirect_uri = callback();
    // No code_challenge.
    let query = form_encode(&[
        ("response_type", "code"),
        ("client_id", &p.client_id),
        ("redirect_uri", &redirect_uri),
        ("scope", "openid"),
        ("state", "s1"),
    ]);
    let endpoint = d["authorization_endpoint"]
        .as_str()
        .expect("authorization_endpoint");
    let url = format!("{endpoint}?{query}");
    let mut web = WebSession::new();
    let page = web
        .follow(&url, &|u: &str| u.starts_with(&redirect_uri))
        .await;
    assert_eq!(
        query_param(&page.url, "error").as_deref(),
        Some("invalid_request"),
        "{page:?}"
    );
    assert!(
        query_param(&page.url, "error_description").is_some_and(|e| e.contains("PKCE")),
        "{page:?}"
    );

    let pkce = Pkce::new();
    let url = p.authorization_url(
        &d,
        &AuthRequest {
            client_id: &p.client_id,
            redirect_uri: &redirect_uri,
            scope: SCOPE,
            state: "s2",
            nonce: "n2",
        },
        &pkce,
    );
    let page = web
        .follow(&url, &|u: &str| u.starts_with(&redirect_uri))
        .await;
    let action = login_form_action(&page.body).expect("the login form");
    let action = resolve(&page.url, &action);
    let username = user["username"].as_str().expect("username");
    let r = web
        .post_form(&action, &[("username", username), ("password", "not-it")])
        .await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    assert!(
        body.contains("<p id=\"error\">Invalid username or password</p>"),
        "{body}"
    );
    assert!(login_form_action(&body).is_some(), "the form again: {body}");
}

#[tokio::test]
async fn a_new_sub_for_the_same_email_shows_in_the_next_login_and_ends_the_old_tokens() {
    let p = Provider::from_env();
    let d = p.discovery().await;
    let user = p.new_user("redeploy", json!({"groups": ["team-b"]})).await;
    let username = user["username"].as_str().expect("username").to_string();
    let mut web = WebSession::new();
    let (code, pkce, _, _) = code_for(&p, &d, &mut web, &user).await;
    let (status, tokens) = exchange(&p, &d, &code, &pkce).await;
    assert_eq!(status, 200, "{tokens}");
    let old = jwt_claims(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(old["sub"], user["sub"]);

    let new_sub = format!("redeployed-{}", random());
    let changed = p.put_user(&username, json!({"sub": new_sub})).await;
    assert_eq!(changed["sub"], new_sub.as_str());
    assert_eq!(changed["email"], user["email"]);

    // The provider "was redeployed": its session is gone, so the form is shown again.
    let (code, pkce, _, form_shown) = code_for(&p, &d, &mut web, &user).await;
    assert!(
        form_shown,
        "the old provider session ended with the old sub"
    );
    let (status, tokens2) = exchange(&p, &d, &code, &pkce).await;
    assert_eq!(status, 200, "{tokens2}");
    let new = jwt_claims(tokens2["id_token"].as_str().expect("id_token"));
    assert_eq!(new["sub"], new_sub.as_str());
    assert_ne!(new["sub"], old["sub"]);
    assert_eq!(new["email"], old["email"]);
    assert_eq!(new["email_verified"], true);
    assert_eq!(new["preferred_username"], old["preferred_username"]);
    assert_eq!(new["groups"], json!(["team-b"]));

    let (status, answer) = refresh(&p, &d, tokens["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("invalid_grant")),
        "{answer}"
    );

    // Groups change on the next token.
    p.put_user(&username, json!({"groups": ["team-c"]})).await;
    let (status, refreshed) = refresh(&p, &d, tokens2["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(status, 200, "{refreshed}");
    let claims = jwt_claims(refreshed["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["groups"], json!(["team-c"]));
}

#[tokio::test]
async fn revoking_a_users_grants_makes_the_refresh_token_grant_fail() {
    let p = Provider::from_env();
    let d = p.discovery().await;
    let user = p.new_user("revoke", json!({})).await;
    let username = user["username"].as_str().expect("username").to_string();
    let mut web = WebSession::new();
    let (code, pkce, _, _) = code_for(&p, &d, &mut web, &user).await;
    let (status, tokens) = exchange(&p, &d, &code, &pkce).await;
    assert_eq!(status, 200, "{tokens}");
    let rt = tokens["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();

    let (status, refreshed) = refresh(&p, &d, &rt).await;
    assert_eq!(status, 200, "a refresh before the revocation: {refreshed}");
    let claims = jwt_claims(refreshed["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["sub"], user["sub"]);
    let rt = refreshed["refresh_token"]
        .as_str()
        .unwrap_or(&rt)
        .to_string();

    let (status, issued) = p
        .admin_call("GET", &format!("/issued?username={username}"), None)
        .await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = issued
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"RefreshToken") && kinds.contains(&"Grant"),
        "{issued}"
    );

    let revoked = p.revoke(&username, false).await;
    assert!(
        revoked["revoked"]["RefreshToken"].as_u64() >= Some(1),
        "{revoked}"
    );
    assert_eq!(
        revoked["revoked"].get("Session"),
        None,
        "sessions kept: {revoked}"
    );
    let (status, answer) = refresh(&p, &d, &rt).await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("invalid_grant")),
        "{answer}"
    );

    // The browser session survived: signing in again is silent and gives a working token.
    let (code, pkce, _, form_shown) = code_for(&p, &d, &mut web, &user).await;
    assert!(!form_shown, "sessions were not revoked");
    let (status, tokens) = exchange(&p, &d, &code, &pkce).await;
    assert_eq!(status, 200, "{tokens}");
    let (status, _) = refresh(&p, &d, tokens["refresh_token"].as_str().expect("rt")).await;
    assert_eq!(status, 200);

    // With sessions: the next sign-in shows the form.
    let revoked = p.revoke(&username, true).await;
    assert!(
        revoked["revoked"]["Session"].as_u64() >= Some(1),
        "{revoked}"
    );
    let (_, _, _, form_shown) = code_for(&p, &d, &mut web, &user).await;
    assert!(form_shown, "the provider session was revoked");
}

#[tokio::test]
async fn minted_id_tokens_carry_the_asked_claims_and_key() {
    let p = Provider::from_env();
    let user = p.new_user("mint", json!({"groups": ["g"]})).await;
    let username = user["username"].as_str().expect("username");
    let token = p
        .mint_id_token(
            json!({"username": username, "claims": {"aud": "elsewhere"}, "expires_in": -60}),
        )
        .await;
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], user["sub"]);
    assert_eq!(claims["iss"], p.issuer.as_str());
    assert_eq!(claims["aud"], "elsewhere");
    assert!(claims["exp"].as_i64() < claims["iat"].as_i64(), "{claims}");

    // The kid names the published key, or one the JWKS does not have.
    let jwks: Value = reqwest::get(format!("{}/jwks", p.issuer))
        .await
        .expect("GET jwks")
        .json()
        .await
        .expect("JWKS JSON");
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    let kid_of = |jwt: &str| jwt_header(jwt)["kid"].as_str().expect("kid").to_string();
    assert!(published.contains(&kid_of(&token).as_str()));
    let foreign = p
        .mint_id_token(json!({"username": username, "key": "unknown"}))
        .await;
    assert!(!published.contains(&kid_of(&foreign).as_str()));
}

/// The Rust side of the browser driver: Chromium signs a user in at the provider for a client
/// registered through the admin route, and lands on the provider's echo redirect URI.
#[tokio::test]
async fn chromium_signs_in_through_the_browser_driver() {
    let p = Provider::from_env();
    let d = p.discovery().await;
    let user = p.new_user("chromium", json!({"groups": ["team-ui"]})).await;
    let client_id = format!("ui-{}", random());
    let redirect_uri = p.echo_redirect_uri();
    let client = p
        .put_client(&client_id, json!({"redirect_uris": [redirect_uri]}))
        .await;
    let pkce = Pkce::new();
    let url = p.authorization_url(
        &d,
        &AuthRequest {
            client_id: &client_id,
            redirect_uri: &redirect_uri,
            scope: SCOPE,
            state: "st",
            nonce: "nn",
        },
        &pkce,
    );
    let shots = format!("{}/oidc_provider", artifacts());
    let mut b = Browser::start(json!({"timeout_ms": 15000, "failure_screenshot_dir": shots})).await;
    assert_eq!(b.step(json!({"op": "goto", "url": url})).await, 200);
    b.step(json!({"op": "fill", "selector": "#username", "value": user["username"]}))
        .await;
    b.step(json!({"op": "fill", "selector": "#password", "value": user["password"]}))
        .await;
    b.step(json!({"op": "click", "selector": "#submit"})).await;
    let landed = b
        .step(json!({"op": "wait_url", "pattern": format!("^{}\\?", regex_escape(&redirect_uri))}))
        .await;
    let code = b.text("#code").await;
    assert_eq!(
        query_param(landed.as_str().expect("url"), "code").as_deref(),
        Some(&*code)
    );
    assert_eq!(b.text("#state").await, "st");
    let shot = format!("{shots}/callback.png");
    assert_eq!(
        b.step(json!({"op": "screenshot", "path": shot})).await,
        shot.as_str()
    );
    let failed = b
        .try_step(json!({"op": "click", "selector": "#no-such-thing", "timeout_ms": 500}))
        .await;
    assert_eq!(failed["ok"], false, "{failed}");
    b.close().await;
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "{shot}"
    );

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let secret = client["client_secret"].as_str().expect("client_secret");
    let (status, tokens) = p.token_request(&d, &client_id, secret, &form).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = jwt_claims(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["aud"], client_id.as_str());
    assert_eq!(claims["sub"], user["sub"]);
    assert_eq!(claims["groups"], json!(["team-ui"]));
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = ".?*+()[]{}|^$\\".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// tests/oidc/browser-smoke.mjs: Chromium through browser.mjs as a child process, a local
/// redirect URI listener, the code exchange and the ID token's claims, all in Node.
#[tokio::test]
async fn the_node_browser_smoke_passes() {
    let p = Provider::from_env();
    let node = std::env::var("BERTH_TEST_NODE").expect("BERTH_TEST_NODE (scripts/test.sh)");
    let dir = std::env::var("BERTH_TEST_OIDC_DIR").expect("BERTH_TEST_OIDC_DIR (scripts/test.sh)");
    let shots = format!("{}/oidc_provider/browser-smoke", artifacts());
    let run = tokio::process::Command::new(node)
        .arg(format!("{dir}/browser-smoke.mjs"))
        .arg(&shots)
        .env("BERTH_TEST_OIDC_ISSUER", &p.issuer)
        .env("BERTH_TEST_OIDC_ADMIN", &p.admin)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("browser-smoke.mjs ran longer than 150 s")
        .expect("run node browser-smoke.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result line\nstdout: {stdout}\nstderr: {stderr}"));
    assert!(
        out.status.success() && last["result"] == "pass",
        "browser-smoke failed: {last}\nstderr: {stderr}"
    );
    assert!(
        last["claims"]["sub"]
            .as_str()
            .is_some_and(|s| s.starts_with("sub-smoke-"))
    );
    assert_eq!(last["claims"]["groups"], json!(["smoke-group"]));
    assert_eq!(
        last["screenshots"].as_array().map(Vec::len),
        Some(2),
        "{last}"
    );
}
