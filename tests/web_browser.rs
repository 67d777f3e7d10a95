//! A person in Chromium (Playwright, through tests/oidc/browser.mjs) signs in to Berth with
//! the test OpenID Connect provider, opens their profile, generates a CLI secret and reads
//! it from the page; podman logs in with it, pushes and pulls; a second secret replaces the
//! first at once. Screenshots of the pages go to `$BERTH_TEST_ARTIFACTS/web_browser/`.
//! Runs only under scripts/test.sh (it starts the provider and installs Chromium).

mod common;

use common::containers::*;
use common::oidc::{Browser, Provider};
use common::*;
use serde_json::json;

fn shots() -> String {
    let dir = format!(
        "{}/web_browser",
        std::env::var("BERTH_TEST_ARTIFACTS")
            .expect("BERTH_TEST_ARTIFACTS is not set: run the tests through scripts/test.sh")
    );
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shot(browser: &mut Browser, dir: &str, name: &str) {
    let path = format!("{dir}/{name}.png");
    browser
        .step(json!({"op": "screenshot", "path": path}))
        .await;
    assert!(
        std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
        "{path}"
    );
}

/// `podman login` to `b` as `user` with `secret` into `authfile`.
fn podman_login(c: &Containers, b: &Berth, authfile: &str, user: &str, secret: &str) -> Ran {
    run(c.cmd("podman").args([
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "-u",
        user,
        "-p",
        secret,
        &b.host(),
    ]))
}

#[tokio::test]
async fn a_person_signs_in_with_the_provider_gets_a_cli_secret_and_pushes_with_podman() {
    let p = Provider::from_env();
    let b = Berth::builtin(&[
        ("BERTH_AUTH__OIDC__ISSUER", p.issuer.as_str()),
        ("BERTH_AUTH__OIDC__CLIENT_ID", p.client_id.as_str()),
        ("BERTH_AUTH__OIDC__CLIENT_SECRET", p.client_secret.as_str()),
    ]);
    b.cli_ok(&["project", "create", "team"]);
    let user = p.new_user("pia", json!({ "groups": ["devs"] })).await;
    let name = user["username"].as_str().unwrap().to_string();
    let dir = shots();
    let mut web = Browser::start(json!({
        "timeout_ms": 15000,
        "failure_screenshot_dir": dir,
    }))
    .await;

    // Sign in as a person would: the sign-in page, the provider's button, its form.
    assert_eq!(
        web.step(json!({"op": "goto", "url": b.url("/c/login")}))
            .await,
        200
    );
    shot(&mut web, &dir, "1-sign-in").await;
    web.step(json!({"op": "click", "selector": "#oidc-login"}))
        .await;
    web.step(json!({"op": "fill", "selector": "#username", "value": name}))
        .await;
    web.step(json!({"op": "fill", "selector": "#password", "value": user["password"]}))
        .await;
    web.step(json!({"op": "click", "selector": "#submit"}))
        .await;
    web.step(json!({"op": "wait_url", "pattern": format!("^{}", regex_escape(&b.url("/c/")))}))
        .await;
    shot(&mut web, &dir, "2-landed").await;
    // The session cookie is HttpOnly and SameSite=Lax.
    let cookies = web.step(json!({"op": "cookies", "url": b.url("/")})).await;
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "berth_session")
        .cloned()
        .expect("a session cookie");
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Lax", "{session}");

    // Their project membership (given by an administrator once the account exists).
    b.cli_ok(&["project", "member", "team", &name, "developer"]);

    // The profile: generate a CLI secret and read it from the page.
    web.step(json!({"op": "goto", "url": b.url("/c/profile")}))
        .await;
    assert_eq!(web.text("#username").await, name);
    web.step(json!({"op": "click", "selector": "#generate-cli-secret button"}))
        .await;
    web.step(json!({"op": "wait_selector", "selector": "#cli-secret"}))
        .await;
    let first = web.text("#cli-secret").await;
    assert!(first.len() >= 32, "{first:?}");
    shot(&mut web, &dir, "3-cli-secret").await;

    // podman logs in with it, pushes and pulls.
    let c = Containers::new();
    let auth = c.p("auth.json");
    let ran = podman_login(&c, &b, &auth, &name, &first);
    check(&b, ran.success(), ran.describe());
    let id = c.build_image(
        &b,
        "localhost/web-test:1",
        "hello from the browser test",
        "oci",
    );
    let target = format!("{}/team/app:1", b.host());
    must(
        &b,
        c.cmd("podman")
            .args(["tag", "localhost/web-test:1", &target]),
    );
    must(
        &b,
        c.cmd("podman").args([
            "push",
            "-q",
            "--tls-verify=false",
            "--authfile",
            &auth,
            &target,
        ]),
    );
    must(
        &b,
        c.cmd("podman")
            .args(["rmi", "-f", &target, "localhost/web-test:1"]),
    );
    must(
        &b,
        c.cmd("podman").args([
            "pull",
            "-q",
            "--tls-verify=false",
            "--authfile",
            &auth,
            &target,
        ]),
    );
    let pulled = must(
        &b,
        c.cmd("podman")
            .args(["image", "inspect", "--format", "{{.Id}}", &target]),
    )
    .stdout;
    assert_eq!(pulled.trim(), id, "pulled back the image pushed");

    // A new secret: the old one is refused at once, the new one works.
    web.step(json!({"op": "click", "selector": "#generate-cli-secret button"}))
        .await;
    web.step(json!({"op": "wait_selector", "selector": "#cli-secret"}))
        .await;
    let second = web.text("#cli-secret").await;
    assert_ne!(first, second);
    let old = podman_login(&c, &b, &c.p("auth-old.json"), &name, &first);
    check(&b, !old.success(), "the replaced secret still logs in");
    let new = podman_login(&c, &b, &c.p("auth-new.json"), &name, &second);
    check(&b, new.success(), new.describe());
    shot(&mut web, &dir, "4-profile").await;

    // Signing out ends the session.
    web.step(json!({"op": "click", "selector": "#logout"}))
        .await;
    web.step(json!({"op": "wait_url", "pattern": "/c/login"}))
        .await;
    web.step(json!({"op": "goto", "url": b.url("/c/profile")}))
        .await;
    let at = web.step(json!({"op": "url"})).await;
    assert!(at.as_str().unwrap_or_default().contains("/c/login"), "{at}");
    web.close().await;
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\^$.|?*+()[]{}".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}
