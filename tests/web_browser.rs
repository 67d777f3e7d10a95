//! A person in Chromium (Playwright, through tests/oidc/browser.mjs) signs in to Berth with
//! the test OpenID Connect provider, lands on the projects page, opens their profile,
//! generates a CLI secret and reads it from the page; podman logs in with it, pushes and
//! pulls; they walk from the projects page to the image's repository and artifact, and to a
//! Helm chart's artifact page with its README; a second secret replaces the first at once.
//! Screenshots of the pages go to `$BERTH_TEST_ARTIFACTS/web_browser/`.
//! Runs only under scripts/test.sh (it starts the provider and installs Chromium).

mod common;

use common::containers::*;
use common::oidc::{Browser, Provider};
use common::web::{as_user, chart_tgz, push_chart};
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
    // On the projects page, signed in as themselves.
    web.step(json!({"op": "wait_selector", "selector": "#user"}))
        .await;
    assert_eq!(web.text("#user").await, name);
    assert_eq!(web.text("h1").await, "Projects");
    shot(&mut web, &dir, "2-projects").await;
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

    // A Helm chart pushed as an OCI artifact with the same secret.
    push_chart(
        &as_user(&name, &first),
        &b,
        "team/charts/demo",
        "0.1.0",
        &chart_tgz("demo", "# Demo chart\n\nDeploys the *demo*.\n"),
    )
    .await;

    // From the projects page to the image's artifact, as a person clicks.
    web.step(json!({"op": "goto", "url": b.url("/c/projects")}))
        .await;
    web.step(json!({"op": "click", "selector": "a.project-name:text-is('team')"}))
        .await;
    web.step(json!({"op": "wait_url", "pattern": "/c/projects/team$"}))
        .await;
    shot(&mut web, &dir, "4-project").await;
    web.step(json!({"op": "click", "selector": "a.repository-name:text-is('team/app')"}))
        .await;
    web.step(json!({"op": "wait_url", "pattern": "/c/repositories/team/app$"}))
        .await;
    assert_eq!(
        web.text(".pull-command").await,
        format!("docker pull {}/team/app:1", b.host())
    );
    shot(&mut web, &dir, "5-repository").await;
    web.step(json!({"op": "click", "selector": "a.digest"}))
        .await;
    web.step(json!({"op": "wait_url", "pattern": "/-/artifacts/sha256:[0-9a-f]{64}$"}))
        .await;
    assert_eq!(web.text(".tag-name").await, "1");
    let layers = web
        .step(json!({"op": "count", "selector": "tr.layer"}))
        .await;
    assert!(layers.as_u64().is_some_and(|n| n >= 1), "{layers}");
    shot(&mut web, &dir, "6-artifact").await;
    // The chart's artifact page shows its README, rendered.
    web.step(json!({"op": "goto", "url": b.url("/c/projects/team")}))
        .await;
    web.step(json!({"op": "click", "selector": "a.repository-name:text-is('team/charts/demo')"}))
        .await;
    web.step(json!({"op": "click", "selector": "a.digest"}))
        .await;
    web.step(json!({"op": "wait_selector", "selector": "#readme h1"}))
        .await;
    assert_eq!(web.text("#readme h1").await, "Demo chart");
    assert_eq!(web.text("#readme em").await, "demo");
    shot(&mut web, &dir, "7-chart").await;
    web.step(json!({"op": "goto", "url": b.url("/c/profile")}))
        .await;

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
    shot(&mut web, &dir, "8-profile").await;

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
