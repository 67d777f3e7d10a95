//! Signing in to the web UI and the secrets a user gets there, against the real server and
//! (for OpenID Connect) the test provider that scripts/test.sh starts: local sign-in,
//! sessions and CSRF, the CLI secret (replaced at once), personal access tokens (narrowed,
//! revoked), OIDC sign-in with onboarding, re-linking after the provider gave the person a
//! new subject (by an administrator, or by verified email), a tied CLI secret refused with a
//! clear message once the provider revokes the sign-in, and forged or replayed callbacks.

mod common;

use std::time::Duration;

use common::oidc::{Provider, WebSession};
use common::web::{hidden, text_of, token_status};
use common::*;
use serde_json::json;

/// The actions a token granted (its `access` claim), for the first entry.
fn granted(body: &str) -> Vec<String> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_str(body).expect("token JSON");
    let jwt = v["token"].as_str().expect("token");
    let payload = jwt.split('.').nth(1).expect("JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("claims");
    claims["access"][0]["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Signs in locally through the form; returns the session and the profile page.
async fn local_sign_in(b: &Berth, user: &str, password: &str) -> (WebSession, String) {
    let mut web = WebSession::new();
    let page = web.get(&b.url("/c/login?return_to=/c/profile")).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = hidden(&html, "csrf").expect("the sign-in form carries a CSRF token");
    let r = web
        .post_form(
            &b.url("/c/login"),
            &[
                ("csrf", &csrf),
                ("username", user),
                ("password", password),
                ("return_to", "/c/profile"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "signed in and sent on");
    assert_eq!(header_str(&r, "location"), "/c/profile");
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_string())
        .collect::<Vec<_>>();
    let session = set
        .iter()
        .find(|c| c.starts_with("berth_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    let profile = web.get(&b.url("/c/profile")).await;
    assert_eq!(profile.status(), 200);
    let html = profile.text().await.unwrap();
    (web, html)
}

#[tokio::test]
async fn local_sign_in_gives_a_session_a_cli_secret_and_personal_tokens() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["user", "create", "erin", "--password", "erin-pass-12"]);
    b.cli_ok(&["project", "create", "team"]);
    b.cli_ok(&["project", "create", "other"]);
    b.cli_ok(&["project", "member", "team", "erin", "developer"]);
    b.cli_ok(&["project", "member", "other", "erin", "developer"]);

    // Without the CSRF cookie and field, nothing happens.
    let mut stranger = WebSession::new();
    let r = stranger
        .post_form(
            &b.url("/c/login"),
            &[("username", "erin"), ("password", "erin-pass-12")],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(stranger.cookie("berth_session").is_none());
    // A wrong password: the form again with the one message, no session.
    let mut web = WebSession::new();
    let html = web.get(&b.url("/c/login")).await.text().await.unwrap();
    let csrf = hidden(&html, "csrf").unwrap();
    let r = web
        .post_form(
            &b.url("/c/login"),
            &[("csrf", &csrf), ("username", "erin"), ("password", "nope")],
        )
        .await;
    assert_eq!(r.status(), 401);
    let html = r.text().await.unwrap();
    assert_eq!(
        text_of(&html, "error").as_deref(),
        Some("unknown user or wrong password")
    );
    assert!(web.cookie("berth_session").is_none());
    // Anonymous profile visits are sent to the sign-in page, and back afterwards.
    let r = WebSession::new().get(&b.url("/c/profile")).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        header_str(&r, "location"),
        "/c/login?return_to=%2Fc%2Fprofile"
    );

    let (mut web, html) = local_sign_in(&b, "erin", "erin-pass-12").await;
    assert_eq!(text_of(&html, "username").as_deref(), Some("erin"));
    assert_eq!(
        text_of(&html, "cli-secret-info").as_deref(),
        Some("You have no CLI secret yet.")
    );
    let csrf = hidden(&html, "csrf").unwrap();

    // A form without the session's CSRF token changes nothing.
    let r = web.post_form(&b.url("/c/profile/cli-secret"), &[]).await;
    assert_eq!(r.status(), 403);
    let r = web
        .post_form(&b.url("/c/profile/cli-secret"), &[("csrf", "forged")])
        .await;
    assert_eq!(r.status(), 403);
    assert!(
        text_of(
            &web.get(&b.url("/c/profile")).await.text().await.unwrap(),
            "cli-secret-info"
        )
        .unwrap()
        .contains("no CLI secret")
    );

    // The CLI secret: shown once, works as a password, replaced at once.
    let page = web
        .post_form(&b.url("/c/profile/cli-secret"), &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let first = text_of(&html, "cli-secret").expect("the new secret is on the page");
    assert!(first.len() >= 32, "{first}");
    assert!(html.contains(&format!("docker login {} -u erin", b.host())));
    let (s, body) = token_status(&b, "erin", &first, "repository:team/app:pull,push").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(granted(&body), vec!["pull", "push"]);
    // Basic on /v2 too.
    let r = client()
        .get(b.url("/v2/team/app/tags/list"))
        .basic_auth("erin", Some(&first))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "authorized (the repository does not exist)"
    );
    let html = web.get(&b.url("/c/profile")).await.text().await.unwrap();
    assert!(text_of(&html, "cli-secret").is_none(), "shown once only");
    assert!(
        text_of(&html, "cli-secret-info")
            .unwrap()
            .contains("last used")
    );
    let second = text_of(
        &web.post_form(&b.url("/c/profile/cli-secret"), &[("csrf", &csrf)])
            .await
            .text()
            .await
            .unwrap(),
        "cli-secret",
    )
    .unwrap();
    assert_ne!(first, second);
    assert_eq!(
        token_status(&b, "erin", &first, "repository:team/app:pull")
            .await
            .0,
        401
    );
    assert_eq!(
        token_status(&b, "erin", &second, "repository:team/app:pull")
            .await
            .0,
        200
    );

    // A personal token narrowed to one project and to pulls.
    let r = web
        .post_form(
            &b.url("/c/profile/tokens"),
            &[
                ("csrf", &csrf),
                ("name", "ci <pull>"),
                ("expires_days", "30"),
                ("projects", "team"),
                ("pull_only", "on"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let token = text_of(&html, "new-token").expect("the new token is on the page");
    assert!(html.contains("ci &lt;pull&gt;"), "names are escaped");
    assert!(!html.contains("ci <pull>"));
    let (s, body) = token_status(&b, "erin", &token, "repository:team/app:pull,push").await;
    assert_eq!(s, 200);
    assert_eq!(granted(&body), vec!["pull"], "pull only");
    let (s, body) = token_status(&b, "erin", &token, "repository:other/app:pull,push").await;
    assert_eq!(s, 200);
    assert!(granted(&body).is_empty(), "not its project: {body}");
    // The same name twice is refused; a bad expiry too; nothing is made.
    for (name, days) in [("ci <pull>", "30"), ("fresh", "0"), ("", "")] {
        let r = web
            .post_form(
                &b.url("/c/profile/tokens"),
                &[("csrf", &csrf), ("name", name), ("expires_days", days)],
            )
            .await;
        let html = r.text().await.unwrap();
        assert!(text_of(&html, "error").is_some(), "{name:?} {days:?}");
        assert!(text_of(&html, "new-token").is_none());
    }
    // Listed without the token; revoked at once.
    let html = web.get(&b.url("/c/profile")).await.text().await.unwrap();
    assert!(!html.contains(&token));
    assert_eq!(html.matches("class=\"token-name\"").count(), 1);
    let revoke = html
        .split("action=\"/c/profile/tokens/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a revoke form");
    let r = web
        .post_form(
            &b.url(&format!("/c/profile/tokens/{revoke}")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        token_status(&b, "erin", &token, "repository:team/app:pull")
            .await
            .0,
        401
    );
    assert_eq!(
        token_status(&b, "erin", &second, "repository:team/app:pull")
            .await
            .0,
        200
    );

    // A token opens no web session: the web sign-in takes passwords only.
    let html = WebSession::new()
        .get(&b.url("/c/login"))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("local-login"));
    let mut other = WebSession::new();
    let html = other.get(&b.url("/c/login")).await.text().await.unwrap();
    let c2 = hidden(&html, "csrf").unwrap();
    let r = other
        .post_form(
            &b.url("/c/login"),
            &[("csrf", &c2), ("username", "erin"), ("password", &second)],
        )
        .await;
    assert_eq!(r.status(), 401);

    // Sign-out ends the session everywhere it was used.
    let r = web.post_form(&b.url("/c/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let r = web.get(&b.url("/c/profile")).await;
    assert_eq!(r.status(), 303, "signed out");
    // No secret reached the log.
    let log = b.log_text();
    for s in [&first, &second, &token] {
        assert!(!log.contains(s.as_str()));
    }
}

/// A server signing people in with the test provider, plus `extra` settings.
fn oidc_berth(p: &Provider, extra: &[(&str, &str)]) -> Berth {
    let mut env = vec![
        ("BERTH_AUTH__OIDC__ISSUER", p.issuer.as_str()),
        ("BERTH_AUTH__OIDC__CLIENT_ID", p.client_id.as_str()),
        ("BERTH_AUTH__OIDC__CLIENT_SECRET", p.client_secret.as_str()),
    ];
    env.extend_from_slice(extra);
    Berth::builtin(&env)
}

#[tokio::test]
async fn an_expired_session_changes_nothing_and_says_to_sign_in_again() {
    // Sessions of two seconds.
    let b = Berth::builtin(&[("BERTH_WEB__SESSION_HOURS", "0.0006")]);
    b.cli_ok(&["user", "create", "ivy", "--password", "ivy-pass-123"]);
    let (mut web, html) = local_sign_in(&b, "ivy", "ivy-pass-123").await;
    let csrf = hidden(&html, "csrf").unwrap();
    let session = web.cookie("berth_session").unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(3000)).await;

    // A form posted with the lapsed session and its once-valid token: refused, clearly.
    let r = web
        .post_form(&b.url("/c/profile/cli-secret"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(
        text_of(&page, "error").is_some_and(|e| e.contains("session has expired")
            && e.contains("nothing was changed")
            && e.contains("sign in again")),
        "{page}"
    );
    assert!(page.contains("id=\"sign-in-again\""), "{page}");
    // A page that needs a session sends the person to sign in, says why, and drops the cookie.
    let r = web.get(&b.url("/c/profile")).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        header_str(&r, "location"),
        "/c/login?return_to=%2Fc%2Fprofile&lapsed=1"
    );
    assert!(
        web.cookie("berth_session").is_none(),
        "the stale cookie is removed"
    );
    let page = web
        .get(&b.url("/c/login?return_to=%2Fc%2Fprofile&lapsed=1"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        text_of(&page, "error").as_deref(),
        Some("Your session has expired: sign in again to go on.")
    );
    // The old cookie value stays dead when sent again, and nothing was made for ivy.
    let mut replay = WebSession::new();
    replay.set_cookie("berth_session", &session);
    assert_eq!(replay.get(&b.url("/c/profile")).await.status(), 303);
    let (_, html) = local_sign_in(&b, "ivy", "ivy-pass-123").await;
    assert_eq!(
        text_of(&html, "cli-secret-info").as_deref(),
        Some("You have no CLI secret yet.")
    );
}

/// Signs `user` in through the provider (form filled when shown); the last page.
async fn oidc_sign_in(
    b: &Berth,
    web: &mut WebSession,
    user: &serde_json::Value,
) -> common::oidc::Page {
    let name = user["username"].as_str().expect("username");
    let password = user["password"].as_str().expect("password");
    let (page, _) = web
        .sign_in(
            &b.url("/c/oidc/login?return_to=/c/profile"),
            name,
            password,
            &|_| false,
        )
        .await;
    page
}

#[tokio::test]
async fn oidc_sign_in_onboards_and_an_administrator_relinks_a_new_subject() {
    let p = Provider::from_env();
    let b = oidc_berth(&p, &[]);
    b.cli_ok(&["project", "create", "team"]);
    let user = p.new_user("olga", json!({ "groups": ["devs"] })).await;
    let name = user["username"].as_str().unwrap().to_string();
    let mut web = WebSession::new();
    let page = oidc_sign_in(&b, &mut web, &user).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.url.ends_with("/c/profile"), "{}", page.url);
    assert_eq!(
        text_of(&page.body, "username").as_deref(),
        Some(name.as_str())
    );
    assert!(web.cookie("berth_session").is_some());
    // The account exists, linked to the provider's subject, in the provider's groups.
    let listed = b.cli_ok(&["user", "list"]);
    assert!(listed.contains(&name), "{listed}");
    b.cli_ok(&["project", "member", "team", &name, "developer"]);

    let csrf = hidden(&page.body, "csrf").unwrap();
    let html = web
        .post_form(&b.url("/c/profile/cli-secret"), &[("csrf", &csrf)])
        .await
        .text()
        .await
        .unwrap();
    let secret = text_of(&html, "cli-secret").unwrap();
    assert_eq!(
        token_status(&b, &name, &secret, "repository:team/app:push")
            .await
            .0,
        200
    );

    // The provider is redeployed: same person, new subject. Signing in says what happened
    // and what to do, and changes nothing.
    let new_sub = format!("redeployed-{name}");
    p.put_user(&name, json!({ "sub": new_sub })).await;
    let mut again = WebSession::new();
    let page = oidc_sign_in(&b, &mut again, &user).await;
    assert_eq!(page.status, 403, "{}", page.body);
    let message = text_of(&page.body, "error").unwrap();
    assert!(message.contains("re-link"), "{message}");
    assert!(
        message.contains(&new_sub),
        "names the new subject: {message}"
    );
    assert!(again.cookie("berth_session").is_none());

    // The administrator re-links; the person keeps their membership and CLI secret.
    // (The CLI reads no server settings here, so it is told the issuer.)
    b.cli_ok(&[
        "user",
        "link",
        &name,
        "--subject",
        &new_sub,
        "--issuer",
        &p.issuer,
    ]);
    let mut third = WebSession::new();
    let page = oidc_sign_in(&b, &mut third, &user).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        text_of(&page.body, "username").as_deref(),
        Some(name.as_str())
    );
    assert_eq!(
        token_status(&b, &name, &secret, "repository:team/app:push")
            .await
            .0,
        200
    );
    let (_, body) = token_status(&b, &name, &secret, "repository:team/app:pull,push").await;
    assert_eq!(
        granted(&body),
        vec!["pull", "push"],
        "still a developer of team"
    );

    // Once more, re-linked from the administrators' page this time.
    let newer = format!("again-{name}");
    p.put_user(&name, json!({ "sub": newer })).await;
    assert_eq!(
        oidc_sign_in(&b, &mut WebSession::new(), &user).await.status,
        403
    );
    let (mut adm, _) = common::web::web_sign_in(&b, "admin", API_ADMIN_PW).await;
    let page = adm
        .follow(&b.url(&format!("/c/admin/users?q={name}")), &|_| false)
        .await;
    let row = &page.body[page
        .body
        .find("class=\"user-name\"")
        .expect("the user's row")..];
    let id = row
        .split("action=\"/c/admin/users/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("a re-link form")
        .to_string();
    let csrf = hidden(&page.body, "csrf").unwrap();
    let r = adm
        .post_form(
            &b.url(&format!("/c/admin/users/{id}/link")),
            &[("csrf", &csrf), ("subject", &newer)],
        )
        .await;
    assert_eq!(r.status(), 303);
    let page = oidc_sign_in(&b, &mut WebSession::new(), &user).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        text_of(&page.body, "username").as_deref(),
        Some(name.as_str())
    );
}

/// A provider whose certificate is signed by a private CA: trusted through
/// `auth.oidc.ca_file`, refused with a clear message without it.
#[tokio::test]
async fn a_private_issuer_is_trusted_through_its_ca_file() {
    let p = Provider::from_env();
    let cert = TestCert::generate();
    let (status, tls) = p
        .admin_call(
            "POST",
            "/tls",
            Some(json!({
                "cert": std::fs::read_to_string(&cert.cert).unwrap(),
                "key": std::fs::read_to_string(&cert.key).unwrap(),
            })),
        )
        .await;
    assert_eq!(status, 200, "{tls}");
    let issuer = tls["issuer"].as_str().unwrap().to_string();
    assert!(issuer.starts_with("https://127.0.0.1:"), "{issuer}");
    let ca = cert.ca.to_string_lossy().to_string();
    let user = p.new_user("tess", json!({})).await;

    // Without the CA: the sign-in link says the provider cannot be reached, and why.
    let b = Berth::builtin(&[
        ("BERTH_AUTH__OIDC__ISSUER", issuer.as_str()),
        ("BERTH_AUTH__OIDC__CLIENT_ID", p.client_id.as_str()),
        ("BERTH_AUTH__OIDC__CLIENT_SECRET", p.client_secret.as_str()),
    ]);
    let r = WebSession::trusting(&cert.ca)
        .get(&b.url("/c/oidc/login"))
        .await;
    let status = r.status().as_u16();
    let page = r.text().await.unwrap();
    assert!(status == 502 || status == 503, "{status}: {page}");
    let error = text_of(&page, "error").unwrap_or_default();
    assert!(error.contains("identity provider"), "{page}");
    assert!(
        error.contains("certificate") || error.contains("ca_file"),
        "{page}"
    );
    drop(b);

    // With it: the whole sign-in goes through.
    let b = Berth::builtin(&[
        ("BERTH_AUTH__OIDC__ISSUER", issuer.as_str()),
        ("BERTH_AUTH__OIDC__CLIENT_ID", p.client_id.as_str()),
        ("BERTH_AUTH__OIDC__CLIENT_SECRET", p.client_secret.as_str()),
        ("BERTH_AUTH__OIDC__CA_FILE", ca.as_str()),
    ]);
    let mut web = WebSession::trusting(&cert.ca);
    let page = oidc_sign_in(&b, &mut web, &user).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.url.ends_with("/c/profile"), "{}", page.url);
    assert_eq!(
        text_of(&page.body, "username").as_deref(),
        user["username"].as_str()
    );
}

#[tokio::test]
async fn a_verified_email_links_a_new_subject_when_allowed() {
    let p = Provider::from_env();
    let b = oidc_berth(&p, &[("BERTH_AUTH__OIDC__LINK_BY_VERIFIED_EMAIL", "true")]);
    let user = p.new_user("vera", json!({})).await;
    let name = user["username"].as_str().unwrap().to_string();
    let page = oidc_sign_in(&b, &mut WebSession::new(), &user).await;
    assert_eq!(page.status, 200);
    p.put_user(&name, json!({ "sub": format!("new-{name}") }))
        .await;
    let page = oidc_sign_in(&b, &mut WebSession::new(), &user).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        text_of(&page.body, "username").as_deref(),
        Some(name.as_str())
    );
    // One account, not two.
    let listed = b.cli_ok(&["user", "list"]);
    assert_eq!(listed.matches(&name).count(), 1, "{listed}");
}

#[tokio::test]
async fn a_missing_or_taken_username_is_chosen_on_first_sign_in() {
    let p = Provider::from_env();
    let b = oidc_berth(&p, &[]);
    // The claim names a user who exists locally (another person): choose another name.
    b.cli_ok(&["user", "create", "taken-name", "--password", "local-pass-1"]);
    let user = p
        .new_user(
            "tom",
            json!({ "preferred_username": "taken-name", "email": null }),
        )
        .await;
    let mut web = WebSession::new();
    let page = oidc_sign_in(&b, &mut web, &user).await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(text_of(&page.body, "error").unwrap().contains("taken-name"));
    let ticket = hidden(&page.body, "ticket").expect("the onboarding form");
    let csrf = hidden(&page.body, "csrf").unwrap();
    // Still taken: the form again.
    let r = web
        .post_form(
            &b.url("/c/oidc/onboard"),
            &[
                ("csrf", &csrf),
                ("ticket", &ticket),
                ("username", "taken-name"),
            ],
        )
        .await;
    assert_eq!(r.status(), 409);
    let html = r.text().await.unwrap();
    let ticket = hidden(&html, "ticket").unwrap();
    // A forged CSRF token changes nothing; the ticket is spent only by a good form.
    let r = web
        .post_form(
            &b.url("/c/oidc/onboard"),
            &[
                ("csrf", "forged"),
                ("ticket", &ticket),
                ("username", "tommy"),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = web
        .post_form(
            &b.url("/c/oidc/onboard"),
            &[("csrf", &csrf), ("ticket", &ticket), ("username", "tommy")],
        )
        .await;
    assert_eq!(r.status(), 303, "onboarded");
    let page = web.follow(&b.url("/c/profile"), &|_| false).await;
    assert_eq!(text_of(&page.body, "username").as_deref(), Some("tommy"));
    // The ticket worked once.
    let r = web
        .post_form(
            &b.url("/c/oidc/onboard"),
            &[("csrf", &csrf), ("ticket", &ticket), ("username", "tommy2")],
        )
        .await;
    assert_eq!(r.status(), 400);
    // Next time the person is known by subject: no question asked.
    let page = oidc_sign_in(&b, &mut WebSession::new(), &user).await;
    assert_eq!(text_of(&page.body, "username").as_deref(), Some("tommy"));
}

#[tokio::test]
async fn forged_and_replayed_callbacks_are_refused() {
    let p = Provider::from_env();
    let b = oidc_berth(&p, &[]);
    let user = p.new_user("fay", json!({})).await;
    let mut web = WebSession::new();
    // Stop at Berth's callback to hold the code and state.
    let name = user["username"].as_str().unwrap();
    let password = user["password"].as_str().unwrap();
    let callback_prefix = b.url("/c/oidc/callback");
    let (page, _) = web
        .sign_in(&b.url("/c/oidc/login"), name, password, &|u: &str| {
            u.starts_with(&callback_prefix)
        })
        .await;
    let callback = page.url;
    assert!(
        callback.contains("code=") && callback.contains("state="),
        "{callback}"
    );
    // A forged state: refused, no session.
    let forged = callback.replace("state=", "state=x");
    let r = web.get(&forged).await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("expired or was already used")
    );
    // The real one works once.
    let r = web.get(&callback).await;
    assert_eq!(r.status(), 303);
    assert!(web.cookie("berth_session").is_some());
    let mut replay = WebSession::new();
    let r = replay.get(&callback).await;
    assert_eq!(r.status(), 400, "replayed");
    assert!(replay.cookie("berth_session").is_none());
    // The provider's refusal is shown, not a bare error.
    let r = replay
        .get(&b.url("/c/oidc/callback?error=access_denied&error_description=nope"))
        .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("did not sign you in: nope")
    );
}

#[tokio::test]
async fn a_cli_secret_tied_to_a_revoked_sign_in_says_to_sign_in_again() {
    let p = Provider::from_env();
    let b = oidc_berth(
        &p,
        &[
            ("BERTH_AUTH__OIDC__CLI_SECRET_FOLLOWS_SIGN_IN", "true"),
            ("BERTH_AUTH__OIDC__RECHECK_SECONDS", "1"),
        ],
    );
    b.cli_ok(&["project", "create", "team"]);
    let user = p.new_user("rita", json!({})).await;
    let name = user["username"].as_str().unwrap().to_string();
    let mut web = WebSession::new();
    let page = oidc_sign_in(&b, &mut web, &user).await;
    let csrf = hidden(&page.body, "csrf").unwrap();
    let html = web
        .post_form(&b.url("/c/profile/cli-secret"), &[("csrf", &csrf)])
        .await
        .text()
        .await
        .unwrap();
    let secret = text_of(&html, "cli-secret").unwrap();
    // Refreshes keep succeeding for a while: the secret keeps working.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        token_status(&b, &name, &secret, "repository:team/a:pull")
            .await
            .0,
        200
    );
    // The provider revokes the person's grants: the next refresh fails.
    p.revoke(&name, false).await;
    let mut refused = None;
    for _ in 0..30 {
        let (s, body) = token_status(&b, &name, &secret, "repository:team/a:pull").await;
        if s == 401 {
            refused = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let body = refused.expect("the secret stops working within the recheck time");
    assert!(body.contains("sign in to the web UI again"), "{body}");
    // Signing in again brings it back.
    oidc_sign_in(&b, &mut WebSession::new(), &user).await;
    assert_eq!(
        token_status(&b, &name, &secret, "repository:team/a:pull")
            .await
            .0,
        200
    );
}

/// `GET /api/v2.0/users/current` with `Authorization: Bearer <id token>`.
async fn current_user_by_id_token(b: &Berth, id_token: &str) -> (u16, serde_json::Value) {
    let r = client()
        .get(b.url("/api/v2.0/users/current"))
        .bearer_auth(id_token)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn the_api_sets_cli_secrets_relinks_and_takes_the_providers_id_tokens() {
    let p = Provider::from_env();
    let b = oidc_berth(&p, &[]);
    let user = p.new_user("ivan", json!({})).await;
    let name = user["username"].as_str().unwrap().to_string();
    oidc_sign_in(&b, &mut WebSession::new(), &user).await;
    let admin = Some(("admin", API_ADMIN_PW));
    let users = api_send(&b, reqwest::Method::GET, "/api/v2.0/users", admin, None).await;
    let users: serde_json::Value = users.json().await.unwrap();
    let id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name.as_str())
        .expect("the onboarded user")["user_id"]
        .as_i64()
        .unwrap();

    // An ID token from the provider for this person is a credential for scripts.
    let token = p.mint_id_token(json!({ "username": name })).await;
    let (s, me) = current_user_by_id_token(&b, &token).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["username"], name.as_str());
    // Harbor's oidc_user_meta: who the provider says this is; the secret is never kept.
    let meta = &me["oidc_user_meta"];
    assert_eq!(meta["user_id"], id, "{me}");
    assert_eq!(
        meta["subiss"],
        format!("{}{}", user["sub"].as_str().unwrap(), p.issuer)
    );
    assert_eq!(meta["secret"], "");
    let admin_view: serde_json::Value = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/users/current",
        admin,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        admin_view.get("oidc_user_meta").is_none(),
        "a local user has none: {admin_view}"
    );
    // ... but not one for another client, from another issuer, signed with an unknown key,
    // or expired.
    for (what, req) in [
        (
            "audience",
            json!({ "username": name, "client_id": "someone-else" }),
        ),
        (
            "issuer",
            json!({ "username": name, "claims": { "iss": "http://127.0.0.1:9" } }),
        ),
        ("key", json!({ "username": name, "key": "unknown" })),
        ("expiry", json!({ "username": name, "expires_in": -600 })),
    ] {
        let bad = p.mint_id_token(req).await;
        let (s, body) = current_user_by_id_token(&b, &bad).await;
        assert_eq!(s, 401, "{what}: {body}");
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{what}");
    }
    let stranger = p.new_user("nobody", json!({})).await;
    let token = p
        .mint_id_token(json!({ "username": stranger["username"] }))
        .await;
    let (s, body) = current_user_by_id_token(&b, &token).await;
    assert_eq!(s, 401);
    assert!(
        body.to_string().contains("sign in to the web UI first"),
        "{body}"
    );

    // Harbor's CLI secret rotation: the admin sets it; the old one stops at once.
    let path = format!("/api/v2.0/users/{id}/cli_secret");
    let weak = api_send(
        &b,
        reqwest::Method::PUT,
        &path,
        admin,
        Some(json!({ "secret": "short" })),
    )
    .await;
    assert!(!harbor_error(weak, 400, "BAD_REQUEST").await.is_empty());
    for secret in ["Rotated-Secret-1", "Rotated-Secret-2"] {
        let r = api_send(
            &b,
            reqwest::Method::PUT,
            &path,
            admin,
            Some(json!({ "secret": secret })),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        token_status(&b, &name, "Rotated-Secret-1", "repository:library/x:pull")
            .await
            .0,
        401
    );
    assert_eq!(
        token_status(&b, &name, "Rotated-Secret-2", "repository:library/x:pull")
            .await
            .0,
        200
    );
    // Another (non-admin) user may not set it.
    b.cli_ok(&["user", "create", "mallory", "--password", "Mallory-pass-1"]);
    let r = api_send(
        &b,
        reqwest::Method::PUT,
        &path,
        Some(("mallory", "Mallory-pass-1")),
        Some(json!({ "secret": "Mallory-Secret-9" })),
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    assert_eq!(
        token_status(&b, &name, "Mallory-Secret-9", "repository:library/x:pull")
            .await
            .0,
        401
    );

    // Re-linking through the API after the provider gave the person a new subject.
    let new_sub = format!("api-{name}");
    p.put_user(&name, json!({ "sub": new_sub })).await;
    assert_eq!(
        oidc_sign_in(&b, &mut WebSession::new(), &user).await.status,
        403
    );
    let link = format!("/api/v2.0/users/{id}/oidc_identity");
    let r = api_send(
        &b,
        reqwest::Method::PUT,
        &link,
        Some(("mallory", "Mallory-pass-1")),
        Some(json!({ "subject": new_sub })),
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    let r = api_send(
        &b,
        reqwest::Method::PUT,
        &link,
        admin,
        Some(json!({ "subject": new_sub })),
    )
    .await;
    assert_eq!(r.status(), 200);
    let page = oidc_sign_in(&b, &mut WebSession::new(), &user).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        text_of(&page.body, "username").as_deref(),
        Some(name.as_str())
    );
    assert_eq!(
        token_status(&b, &name, "Rotated-Secret-2", "repository:library/x:pull")
            .await
            .0,
        200
    );
}
