//! The web UI's browsing pages against a real server: who sees which projects, search and
//! pages, a repository's artifacts with their pull commands, an artifact's layers and a Helm
//! chart's README (sanitised), escaping of pushed text, and deletes (CSRF, permissions, and
//! the same effect as through `/v2`). One test drives Chromium through the pages and keeps
//! screenshots (`BERTH_TEST_ARTIFACTS`, run through scripts/test.sh).

mod common;

use common::oidc::{Browser, WebSession};
use common::web::*;
use common::*;
use serde_json::json;

#[tokio::test]
async fn projects_are_listed_as_the_viewer_may_see_them() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "open", "--public"]);
    b.cli_ok(&["project", "create", "secret"]);
    b.cli_ok(&["project", "create", "other"]);
    b.cli_ok(&["user", "create", "mia", "--password", "mia-pass-123"]);
    b.cli_ok(&["user", "create", "ned", "--password", "ned-pass-123"]);
    b.cli_ok(&["project", "member", "secret", "mia", "developer"]);
    push_image(&admin(), &b, "secret/app", "v1", b"one").await;
    push_image(&admin(), &b, "secret/tool", "v1", b"two").await;

    // Anonymous: the public project only; `/` leads to the list.
    let mut anon = WebSession::new();
    let page = anon.follow(&b.url("/"), &|_| false).await;
    assert_eq!(page.status, 200);
    assert!(page.url.ends_with("/c/projects"), "{}", page.url);
    // `library` is the public project every registry starts with.
    assert_eq!(texts_of(&page.body, "project-name"), ["library", "open"]);
    // A private project is "not found" to those who may not see it, like a missing one.
    let (status, body) = get_page(&mut anon, &b, "/c/projects/secret").await;
    assert_eq!(status, 404);
    assert!(!body.contains("repository-name"));
    let (status, _) = get_page(&mut anon, &b, "/c/projects/nothing-here").await;
    assert_eq!(status, 404);
    let (status, _) = get_page(&mut anon, &b, "/c/repositories/secret/app").await;
    assert_eq!(status, 404);

    // A member sees their private project with its repository count; a non-member does not.
    let (mut mia, _) = web_sign_in(&b, "mia", "mia-pass-123").await;
    let (_, body) = get_page(&mut mia, &b, "/c/projects").await;
    assert_eq!(
        texts_of(&body, "project-name"),
        ["library", "open", "secret"]
    );
    assert_eq!(texts_of(&body, "repo-count"), ["0", "0", "2"]);
    let (status, body) = get_page(&mut mia, &b, "/c/projects/secret").await;
    assert_eq!(status, 200);
    assert_eq!(
        texts_of(&body, "repository-name"),
        ["secret/app", "secret/tool"]
    );
    assert_eq!(texts_of(&body, "member-name"), ["mia"]);
    assert!(
        !body.contains("id=\"settings\""),
        "a developer may not change the project"
    );

    let (mut ned, _) = web_sign_in(&b, "ned", "ned-pass-123").await;
    let (_, body) = get_page(&mut ned, &b, "/c/projects").await;
    assert_eq!(texts_of(&body, "project-name"), ["library", "open"]);
    let (status, _) = get_page(&mut ned, &b, "/c/projects/secret").await;
    assert_eq!(status, 404);

    // The admin sees all of them; search narrows by name.
    let (mut adm, _) = web_sign_in(&b, "admin", API_ADMIN_PW).await;
    let (_, body) = get_page(&mut adm, &b, "/c/projects").await;
    assert_eq!(
        texts_of(&body, "project-name"),
        ["library", "open", "other", "secret"]
    );
    let (_, body) = get_page(&mut adm, &b, "/c/projects?q=ECR").await;
    assert_eq!(texts_of(&body, "project-name"), ["secret"]);
    let (_, body) = get_page(&mut adm, &b, "/c/projects/secret?q=too").await;
    assert_eq!(texts_of(&body, "repository-name"), ["secret/tool"]);
}

#[tokio::test]
async fn project_and_repository_lists_are_paged() {
    let b = Berth::builtin(&[]);
    for i in 0..27 {
        b.cli_ok(&["project", "create", &format!("p{i:02}"), "--public"]);
    }
    let mut anon = WebSession::new();
    let (_, body) = get_page(&mut anon, &b, "/c/projects").await;
    assert_eq!(texts_of(&body, "project-name").len(), 25);
    assert!(body.contains("Page 1 of 2 (28 in all)"), "{body}");
    assert!(body.contains("href=\"/c/projects?page=2\""), "{body}");
    let (_, body) = get_page(&mut anon, &b, "/c/projects?page=2").await;
    assert_eq!(
        texts_of(&body, "project-name"),
        ["p24", "p25", "p26"],
        "after library and p00..p23"
    );
    let (_, body) = get_page(&mut anon, &b, "/c/projects?q=p2&page=1").await;
    assert_eq!(texts_of(&body, "project-name").len(), 7, "p20..p26");
    // A nonsense page number is the first page, not an error.
    let (status, _) = get_page(&mut anon, &b, "/c/projects?page=x").await;
    assert_eq!(status, 200);

    // 35 artifacts in one repository: pages of 30, newest first.
    let c = admin();
    let mut digests = Vec::new();
    for i in 0..35 {
        let (d, _) = push_image(
            &c,
            &b,
            "p00/many",
            &format!("t{i:02}"),
            format!("layer {i}").as_bytes(),
        )
        .await;
        digests.push(d);
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let (_, body) = get_page(&mut anon, &b, "/c/repositories/p00/many").await;
    assert_eq!(body.matches("class=\"artifact\"").count(), 30);
    assert!(body.contains(&format!("data-digest=\"{}\"", digests[34])));
    assert!(body.contains("Page 1 of 2 (35 in all)"));
    let (_, body) = get_page(&mut anon, &b, "/c/repositories/p00/many?page=2").await;
    assert_eq!(body.matches("class=\"artifact\"").count(), 5);
    assert!(body.contains(&format!("data-digest=\"{}\"", digests[0])));
}

#[tokio::test]
async fn a_repository_page_lists_tags_with_pull_commands_and_an_artifact_its_layers() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "team", "--public"]);
    let c = admin();
    let (digest, manifest) = push_image(&c, &b, "team/sub/app", "v1", b"layer bytes").await;
    let r = c
        .put(b.url("/v2/team/sub/app/manifests/stable"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .expect("tag");
    assert_eq!(r.status(), 201);

    // A signature referring to it.
    push_blob(&c, &b, "team/sub/app", b"{}").await;
    push_blob(&c, &b, "team/sub/app", b"sig").await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256(b"sig"), "size": 3}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len()},
    }))
    .expect("json");
    let r = c
        .put(b.url(&format!("/v2/team/sub/app/manifests/{}", sha256(&sig))))
        .header("content-type", OCI_MANIFEST)
        .body(sig.clone())
        .send()
        .await
        .expect("push signature");
    assert_eq!(r.status(), 201);

    let mut anon = WebSession::new();
    let (status, body) = get_page(&mut anon, &b, "/c/repositories/team/sub/app").await;
    assert_eq!(status, 200);
    let host = b.host();
    assert_eq!(
        texts_of(&body, "pull-command"),
        [
            // The signature is not a row of its own: it belongs to its subject.
            format!("docker pull {host}/team/sub/app:stable"),
            format!("docker pull {host}/team/sub/app:v1"),
        ]
    );
    assert_eq!(texts_of(&body, "tag-name"), ["stable", "v1"]);
    assert_eq!(body.matches("class=\"artifact\"").count(), 1, "{body}");
    assert!(body.contains(">1 referrer<"), "{body}");
    assert!(
        body.contains(&format!("title=\"{digest}\"")),
        "the full digest"
    );
    assert!(body.contains(&digest[..19]), "the short digest");
    assert!(body.contains("application/vnd.oci.image.config.v1+json"));
    // Anonymous viewers are offered no deletes.
    assert!(!body.contains("delete-tag"));
    assert!(!body.contains("delete-artifact"));

    let link = format!("/c/repositories/team/sub/app/-/artifacts/{digest}");
    assert!(body.contains(&format!("href=\"{link}\"")));
    let (status, body) = get_page(&mut anon, &b, &link).await;
    assert_eq!(status, 200);
    assert_eq!(body.matches("class=\"layer\"").count(), 1);
    // Its tags, each with its pull command.
    assert_eq!(texts_of(&body, "tag-name"), ["stable", "v1"]);
    assert!(body.contains(&format!("docker pull {host}/team/sub/app:stable")));
    assert_eq!(body.matches("class=\"referrer\"").count(), 1, "{body}");
    assert!(body.contains("<td>signature</td>"), "{body}");
    assert!(body.contains(&format!("/-/artifacts/{}", sha256(&sig))));
    assert!(body.contains(&sha256(b"layer bytes")), "the layer's digest");
    assert!(
        body.contains("&quot;architecture&quot;: &quot;amd64&quot;"),
        "the config, pretty and escaped: {body}"
    );
    assert!(
        body.contains("&quot;schemaVersion&quot;: 2"),
        "the manifest, pretty"
    );
    assert!(body.contains(&format!("docker pull {host}/team/sub/app@{digest}")));
    // Unknown digests and malformed ones are "not found".
    let missing = format!(
        "/c/repositories/team/sub/app/-/artifacts/sha256:{}",
        "0".repeat(64)
    );
    assert_eq!(get_page(&mut anon, &b, &missing).await.0, 404);
    assert_eq!(
        get_page(
            &mut anon,
            &b,
            "/c/repositories/team/sub/app/-/artifacts/nope"
        )
        .await
        .0,
        404
    );
    assert_eq!(
        get_page(&mut anon, &b, "/c/repositories/team/none").await.0,
        404
    );
}

#[tokio::test]
async fn a_helm_charts_readme_is_rendered_without_its_scripts() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "charts", "--public"]);
    let readme = "# Demo chart\n\nInstall it **now**.\n\n<script>alert('x')</script>\n\n<a href=\"javascript:alert(1)\" onclick=\"alert(2)\">click</a>\n";
    let digest = push_chart(
        &admin(),
        &b,
        "charts/demo",
        "0.1.0",
        &chart_tgz("demo", readme),
    )
    .await;

    let mut anon = WebSession::new();
    let (_, body) = get_page(&mut anon, &b, "/c/repositories/charts/demo").await;
    let host = b.host();
    assert_eq!(
        texts_of(&body, "pull-command"),
        [format!(
            "helm pull oci://{host}/charts/demo --version 0.1.0"
        )]
    );
    let (status, body) = get_page(
        &mut anon,
        &b,
        &format!("/c/repositories/charts/demo/-/artifacts/{digest}"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("<h1>Demo chart</h1>"), "{body}");
    assert!(body.contains("<strong>now</strong>"), "{body}");
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(!body.contains("javascript:alert"), "{body}");
    assert!(!body.contains("onclick=\"alert"), "{body}");
    // Chart.yaml's fields, escaped.
    assert!(body.contains("data-key=\"appVersion\">1.2.3<"), "{body}");
    assert!(body.contains("A &lt;b&gt;demo&lt;/b&gt; chart"), "{body}");
    assert!(!body.contains("A <b>demo</b>"), "{body}");
}

#[tokio::test]
async fn pushed_text_is_escaped() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "team", "--public"]);
    let c = admin();
    push_blob(&c, &b, "team/app", IMAGE_CONFIG).await;
    push_blob(&c, &b, "team/app", b"l").await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(IMAGE_CONFIG), "size": IMAGE_CONFIG.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(b"l"), "size": 1,
            "annotations": {"org.opencontainers.image.title": "<img src=x onerror=alert(1)>"}}],
        "annotations": {"<script>k</script>": "<script>alert('v')</script>"},
    }))
    .expect("json");
    let r = c
        .put(b.url("/v2/team/app/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), 201);
    let mut anon = WebSession::new();
    let (status, body) = get_page(
        &mut anon,
        &b,
        &format!("/c/repositories/team/app/-/artifacts/{}", sha256(&m)),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!body.contains("<script>"), "{body}");
    assert!(!body.contains("<img"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert('v')&lt;/script&gt;"),
        "{body}"
    );
    assert!(
        body.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{body}"
    );
}

#[tokio::test]
async fn deletes_need_the_csrf_token_and_the_permission_and_act_as_through_v2() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "team"]);
    b.cli_ok(&["user", "create", "gus", "--password", "gus-pass-123"]);
    b.cli_ok(&["user", "create", "max", "--password", "max-pass-123"]);
    b.cli_ok(&["project", "member", "team", "gus", "guest"]);
    b.cli_ok(&["project", "member", "team", "max", "maintainer"]);
    let c = admin();
    let (digest, manifest) = push_image(&c, &b, "team/app", "v1", b"one").await;
    for tag in ["v2", "v3"] {
        let r = c
            .put(b.url(&format!("/v2/team/app/manifests/{tag}")))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .expect("tag");
        assert_eq!(r.status(), 201);
    }
    let delete_tag = b.url("/c/repositories/team/app/-/delete-tag");
    let delete_artifact = b.url("/c/repositories/team/app/-/delete-artifact");

    // A guest sees the repository but no delete buttons, and is refused.
    let (mut gus, gus_csrf) = web_sign_in(&b, "gus", "gus-pass-123").await;
    let (status, body) = get_page(&mut gus, &b, "/c/repositories/team/app").await;
    assert_eq!(status, 200);
    assert!(!body.contains("delete-tag"));
    let r = gus
        .post_form(&delete_tag, &[("csrf", &gus_csrf), ("tag", "v1")])
        .await;
    assert_eq!(r.status(), 403);

    // A maintainer without (or with a wrong) CSRF token is refused.
    let (mut max, csrf) = web_sign_in(&b, "max", "max-pass-123").await;
    let (_, body) = get_page(&mut max, &b, "/c/repositories/team/app").await;
    assert!(body.contains("class=\"delete-tag inline\""), "{body}");
    assert!(body.contains("class=\"delete-artifact\""), "{body}");
    let r = max.post_form(&delete_tag, &[("tag", "v1")]).await;
    assert_eq!(r.status(), 403);
    let r = max
        .post_form(&delete_tag, &[("csrf", &gus_csrf), ("tag", "v1")])
        .await;
    assert_eq!(r.status(), 403, "another session's token");
    // Anonymous: no session, refused.
    let r = WebSession::new()
        .post_form(&delete_tag, &[("csrf", &csrf), ("tag", "v1")])
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        tags_of(&c, &b, "team/app").await,
        Some(vec!["v1".into(), "v2".into(), "v3".into()])
    );

    // With both, the tag goes, as a DELETE of the tag through /v2 would.
    let r = max
        .post_form(&delete_tag, &[("csrf", &csrf), ("tag", "v1")])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        tags_of(&c, &b, "team/app").await,
        Some(vec!["v2".into(), "v3".into()])
    );
    let r = max
        .post_form(&delete_tag, &[("csrf", &csrf), ("tag", "v1")])
        .await;
    assert_eq!(r.status(), 404, "already gone");

    // Deleting the artifact takes its remaining tags.
    let r = max
        .post_form(&delete_artifact, &[("csrf", &csrf), ("digest", &digest)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(manifest_status(&c, &b, "team/app", &digest).await, 404);
    assert_eq!(tags_of(&c, &b, "team/app").await, Some(vec![]));
}

#[tokio::test]
async fn project_admins_make_a_project_public_from_its_page() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "team"]);
    b.cli_ok(&["user", "create", "ida", "--password", "ida-pass-123"]);
    b.cli_ok(&["user", "create", "dev", "--password", "dev-pass-123"]);
    b.cli_ok(&["project", "member", "team", "ida", "projectAdmin"]);
    b.cli_ok(&["project", "member", "team", "dev", "developer"]);
    let settings = b.url("/c/projects/team/settings");

    let (mut dev, dev_csrf) = web_sign_in(&b, "dev", "dev-pass-123").await;
    let r = dev
        .post_form(&settings, &[("csrf", &dev_csrf), ("public", "true")])
        .await;
    assert_eq!(r.status(), 403);

    let (mut ida, csrf) = web_sign_in(&b, "ida", "ida-pass-123").await;
    let (_, body) = get_page(&mut ida, &b, "/c/projects/team").await;
    assert!(body.contains("id=\"settings\""), "{body}");
    let r = ida.post_form(&settings, &[("public", "true")]).await;
    assert_eq!(r.status(), 403, "no CSRF token");
    let r = ida
        .post_form(&settings, &[("csrf", &csrf), ("public", "true")])
        .await;
    assert_eq!(r.status(), 303);
    let r = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/projects/team",
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), 200, "public now, as the API shows");
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["metadata"]["public"], "true");
}

/// Signs in with Chromium and walks projects → project → repository → artifact, keeping a
/// screenshot of each page in `$BERTH_TEST_ARTIFACTS/web_ui/`.
#[tokio::test]
async fn chromium_walks_from_projects_to_an_artifact() {
    let shots = format!(
        "{}/web_ui",
        std::env::var("BERTH_TEST_ARTIFACTS")
            .expect("BERTH_TEST_ARTIFACTS is not set: run the tests through scripts/test.sh")
    );
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "team"]);
    let c = admin();
    let (digest, _) = push_image(&c, &b, "team/web/app", "v1", b"app layer").await;
    push_chart(
        &c,
        &b,
        "team/charts/demo",
        "0.1.0",
        &chart_tgz("demo", "# Demo\n\nA *chart*.\n"),
    )
    .await;

    let mut browser = Browser::start(json!({
        "timeout_ms": 15000,
        "base_url": b.url(""),
        "failure_screenshot_dir": shots,
    }))
    .await;
    assert_eq!(
        browser
            .step(json!({"op": "goto", "url": b.url("/c/login")}))
            .await,
        200
    );
    browser
        .step(json!({"op": "fill", "selector": "#username", "value": "admin"}))
        .await;
    browser
        .step(json!({"op": "fill", "selector": "#password", "value": API_ADMIN_PW}))
        .await;
    browser
        .step(json!({"op": "click", "selector": "#submit"}))
        .await;
    browser
        .step(json!({"op": "wait_url", "pattern": "/c/projects$"}))
        .await;
    assert_eq!(browser.text("#user").await, "admin");
    let shot = |name: &str| format!("{shots}/{name}.png");
    browser
        .step(json!({"op": "screenshot", "path": shot("1-projects")}))
        .await;

    browser
        .step(json!({"op": "click", "selector": "a.project-name:text-is('team')"}))
        .await;
    browser
        .step(json!({"op": "wait_url", "pattern": "/c/projects/team$"}))
        .await;
    assert_eq!(browser.text("#project-name").await, "team");
    browser
        .step(json!({"op": "screenshot", "path": shot("2-project")}))
        .await;

    browser
        .step(json!({"op": "click", "selector": "a.repository-name:text-is('team/web/app')"}))
        .await;
    browser
        .step(json!({"op": "wait_url", "pattern": "/c/repositories/team/web/app$"}))
        .await;
    let pull = browser.text(".pull-command").await;
    assert_eq!(pull, format!("docker pull {}/team/web/app:v1", b.host()));
    browser
        .step(json!({"op": "screenshot", "path": shot("3-repository")}))
        .await;

    browser
        .step(json!({"op": "click", "selector": "a.digest"}))
        .await;
    browser
        .step(json!({"op": "wait_url", "pattern": format!("/-/artifacts/{digest}$")}))
        .await;
    let layers = browser
        .step(json!({"op": "count", "selector": "tr.layer"}))
        .await;
    assert_eq!(layers, 1);
    browser
        .step(json!({"op": "screenshot", "path": shot("4-artifact")}))
        .await;

    // The chart's page, with its README rendered.
    browser
        .step(json!({"op": "goto", "url": b.url("/c/repositories/team/charts/demo")}))
        .await;
    browser
        .step(json!({"op": "click", "selector": "a.digest"}))
        .await;
    browser
        .step(json!({"op": "wait_selector", "selector": "#readme h1"}))
        .await;
    assert_eq!(browser.text("#readme h1").await, "Demo");
    browser
        .step(json!({"op": "screenshot", "path": shot("5-chart")}))
        .await;
    let errors: Vec<_> = browser
        .events
        .iter()
        .filter(|e| e["event"] == "pageerror")
        .cloned()
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    browser.close().await;
    for name in [
        "1-projects",
        "2-project",
        "3-repository",
        "4-artifact",
        "5-chart",
    ] {
        let path = shot(name);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
            "{path}"
        );
    }
}

#[tokio::test]
async fn project_admins_manage_robot_accounts_from_the_project_page() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "team"]);
    b.cli_ok(&["user", "create", "pam", "--password", "pam-pass-123"]);
    b.cli_ok(&["user", "create", "gus", "--password", "gus-pass-123"]);
    b.cli_ok(&["project", "member", "team", "pam", "projectAdmin"]);
    b.cli_ok(&["project", "member", "team", "gus", "guest"]);
    let (mut pam, csrf) = web_sign_in(&b, "pam", "pam-pass-123").await;
    let (status, body) = get_page(&mut pam, &b, "/c/projects/team").await;
    assert_eq!(status, 200);
    assert!(body.contains("id=\"new-robot\""), "{body}");
    let (status, form) = get_page(&mut pam, &b, "/c/projects/team/robots/new").await;
    assert_eq!(status, 200);
    assert!(form.contains("value=\"repository:push\""));
    let new = b.url("/c/projects/team/robots/new");
    // Nothing ticked, a bad name, no CSRF: refused, nothing made.
    for (fields, status) in [
        (
            vec![("csrf", csrf.as_str()), ("name", "ci"), ("duration", "30")],
            200,
        ),
        (
            vec![
                ("csrf", csrf.as_str()),
                ("name", "Bad Name"),
                ("duration", "30"),
                ("perm", "repository:pull"),
            ],
            200,
        ),
        (
            vec![
                ("name", "ci"),
                ("duration", "30"),
                ("perm", "repository:pull"),
            ],
            403,
        ),
    ] {
        let r = pam.post_form(&new, &fields).await;
        assert_eq!(r.status(), status, "{fields:?}");
        let html = r.text().await.unwrap();
        assert!(text_of(&html, "robot-secret").is_none(), "{fields:?}");
    }
    // Made with pull and push for 30 days: the secret shown once works for exactly that.
    let r = pam
        .post_form(
            &new,
            &[
                ("csrf", &csrf),
                ("name", "ci"),
                ("description", "the <CI> robot"),
                ("duration", "30"),
                ("perm", "repository:pull"),
                ("perm", "repository:push"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let name = text_of(&html, "robot-name").expect("its name");
    assert_eq!(name, "robot$team+ci");
    let secret = text_of(&html, "robot-secret").expect("its secret");
    assert_eq!(
        token_status_of(&b, &name, &secret, "repository:team/app:pull,push").await,
        200
    );
    let (_, page) = get_page(&mut pam, &b, "/c/projects/team").await;
    assert_eq!(
        texts_of(&page, "robot-name"),
        vec!["robot$team+ci".to_string()]
    );
    assert!(page.contains("the &lt;CI&gt; robot"), "escaped");
    assert!(!page.contains(&secret), "never shown again");
    let id = page
        .split("action=\"/c/robots/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("the robot's buttons")
        .to_string();

    // A guest sees the robot but may not change it.
    let (mut gus, gus_csrf) = web_sign_in(&b, "gus", "gus-pass-123").await;
    let (_, page) = get_page(&mut gus, &b, "/c/projects/team").await;
    assert_eq!(
        texts_of(&page, "robot-name"),
        vec!["robot$team+ci".to_string()]
    );
    assert!(!page.contains("robot-refresh"));
    let (status, _) = get_page(&mut gus, &b, "/c/projects/team/robots/new").await;
    assert_eq!(status, 403);
    for what in ["refresh", "toggle", "delete"] {
        let r = gus
            .post_form(
                &b.url(&format!("/c/robots/{id}/{what}")),
                &[("csrf", &gus_csrf)],
            )
            .await;
        assert_eq!(r.status(), 403, "{what}");
    }
    assert_eq!(
        token_status_of(&b, &name, &secret, "repository:team/app:pull").await,
        200
    );

    // Refresh: a new secret, the old one stops at once.
    let r = pam
        .post_form(
            &b.url(&format!("/c/robots/{id}/refresh")),
            &[("csrf", &csrf)],
        )
        .await;
    let fresh = text_of(&r.text().await.unwrap(), "robot-secret").expect("new secret");
    assert_ne!(fresh, secret);
    assert_eq!(
        token_status_of(&b, &name, &secret, "repository:team/app:pull").await,
        401
    );
    assert_eq!(
        token_status_of(&b, &name, &fresh, "repository:team/app:pull").await,
        200
    );
    // Disable, enable, delete.
    let toggle = b.url(&format!("/c/robots/{id}/toggle"));
    assert_eq!(
        pam.post_form(&toggle, &[("csrf", &csrf)]).await.status(),
        303
    );
    assert_eq!(
        token_status_of(&b, &name, &fresh, "repository:team/app:pull").await,
        401
    );
    let (_, page) = get_page(&mut pam, &b, "/c/projects/team").await;
    assert_eq!(texts_of(&page, "robot-state"), vec!["disabled".to_string()]);
    assert_eq!(
        pam.post_form(&toggle, &[("csrf", &csrf)]).await.status(),
        303
    );
    assert_eq!(
        token_status_of(&b, &name, &fresh, "repository:team/app:pull").await,
        200
    );
    let r = pam
        .post_form(
            &b.url(&format!("/c/robots/{id}/delete")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        token_status_of(&b, &name, &fresh, "repository:team/app:pull").await,
        401
    );
    let (_, page) = get_page(&mut pam, &b, "/c/projects/team").await;
    assert!(texts_of(&page, "robot-name").is_empty());
}

#[tokio::test]
async fn administrators_see_users_and_their_cli_secret_use() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["user", "create", "uma", "--password", "uma-pass-123"]);
    // uma makes a CLI secret and uses it.
    let (mut uma, csrf) = web_sign_in(&b, "uma", "uma-pass-123").await;
    let html = uma
        .post_form(&b.url("/c/profile/cli-secret"), &[("csrf", &csrf)])
        .await
        .text()
        .await
        .unwrap();
    let secret = text_of(&html, "cli-secret").unwrap();
    assert_eq!(
        token_status_of(&b, "uma", &secret, "repository:library/x:pull").await,
        200
    );
    // Not an administrator: no users page.
    let (status, _) = get_page(&mut uma, &b, "/c/admin/users").await;
    assert_eq!(status, 403);
    let (mut adm, _) = web_sign_in(&b, "admin", API_ADMIN_PW).await;
    let (status, page) = get_page(&mut adm, &b, "/c/admin/users?q=uma").await;
    assert_eq!(status, 200);
    assert_eq!(texts_of(&page, "user-name"), vec!["uma".to_string()]);
    let row = &page[page.find("class=\"user-name\"").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(!row.contains(">never<"), "made and used: {row}");
    // Re-linking needs a configured provider: a clear refusal here.
    let id = row
        .split("action=\"/c/admin/users/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_string();
    let admin_csrf = hidden(&page, "csrf").unwrap();
    let r = adm
        .post_form(
            &b.url(&format!("/c/admin/users/{id}/link")),
            &[("csrf", &admin_csrf), ("subject", "x")],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no identity provider"));
}

#[tokio::test]
async fn administrators_manage_system_robots_spanning_projects() {
    let b = Berth::builtin(&[]);
    for p in ["alpha", "beta", "gamma"] {
        b.cli_ok(&["project", "create", p]);
    }
    b.cli_ok(&["user", "create", "uma", "--password", "uma-pass-123"]);
    let (mut uma, uma_csrf) = web_sign_in(&b, "uma", "uma-pass-123").await;
    assert_eq!(get_page(&mut uma, &b, "/c/admin/robots").await.0, 403);
    let r = uma
        .post_form(
            &b.url("/c/admin/robots"),
            &[
                ("csrf", &uma_csrf),
                ("name", "x"),
                ("duration", "1"),
                ("projects", "*"),
                ("perm", "repository:pull"),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);

    let (mut adm, csrf) = web_sign_in(&b, "admin", API_ADMIN_PW).await;
    let (status, page) = get_page(&mut adm, &b, "/c/admin/robots").await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"no-robots\""));
    // A project that does not exist: refused, nothing made.
    let r = adm
        .post_form(
            &b.url("/c/admin/robots"),
            &[
                ("csrf", &csrf),
                ("name", "ci"),
                ("duration", "-1"),
                ("projects", "alpha, nope"),
                ("perm", "repository:pull"),
            ],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(text_of(&html, "error").is_some(), "{html}");
    assert!(text_of(&html, "robot-secret").is_none());
    let r = adm
        .post_form(
            &b.url("/c/admin/robots"),
            &[
                ("csrf", &csrf),
                ("name", "ci"),
                ("duration", "-1"),
                ("projects", "alpha, beta"),
                ("perm", "repository:pull"),
                ("perm", "repository:push"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_eq!(text_of(&html, "robot-name").as_deref(), Some("robot$ci"));
    let secret = text_of(&html, "robot-secret").expect("its secret");
    for (project, want) in [("alpha", 200), ("beta", 200)] {
        let (s, body) = token_status(
            &b,
            "robot$ci",
            &secret,
            &format!("repository:{project}/app:pull,push"),
        )
        .await;
        assert_eq!(s, want);
        assert!(body.contains("token"));
    }
    let (s, body) = token_status(&b, "robot$ci", &secret, "repository:gamma/app:pull").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let claims: serde_json::Value = {
        use base64::Engine as _;
        let payload = v["token"].as_str().unwrap().split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert!(
        claims["access"].as_array().is_none_or(|a| a.is_empty()),
        "nothing in gamma: {claims}"
    );
    let (_, page) = get_page(&mut adm, &b, "/c/admin/robots").await;
    assert_eq!(texts_of(&page, "robot-name"), vec!["robot$ci".to_string()]);
    let id = page
        .split("action=\"/c/robots/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_string();
    // The project admin of alpha may not touch a system robot.
    b.cli_ok(&["project", "member", "alpha", "uma", "projectAdmin"]);
    let r = uma
        .post_form(
            &b.url(&format!("/c/robots/{id}/delete")),
            &[("csrf", &uma_csrf)],
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = adm
        .post_form(
            &b.url(&format!("/c/robots/{id}/delete")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(header_str(&r, "location"), "/c/admin/robots");
    assert_eq!(
        token_status_of(&b, "robot$ci", &secret, "repository:alpha/app:pull").await,
        401
    );
}

#[tokio::test]
async fn an_artifact_with_many_tags_shows_twenty_and_says_how_many_more() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "team", "--public"]);
    let c = admin();
    let (_, manifest) = push_image(&c, &b, "team/many", "t00", b"many").await;
    for i in 1..25 {
        let r = c
            .put(b.url(&format!("/v2/team/many/manifests/t{i:02}")))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .expect("tag");
        assert_eq!(r.status(), 201);
    }
    let (status, body) = get_page(&mut WebSession::new(), &b, "/c/repositories/team/many").await;
    assert_eq!(status, 200);
    assert_eq!(texts_of(&body, "tag-name").len(), 20, "{body}");
    assert!(body.contains("… and 5 more tags"), "{body}");
    // The artifact's own page lists them all, paged.
    let digest = sha256(&manifest);
    let page = format!("/c/repositories/team/many/-/artifacts/{digest}");
    let (status, body) = get_page(&mut WebSession::new(), &b, &page).await;
    assert_eq!(status, 200);
    let tags: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
    assert_eq!(texts_of(&body, "tag-name"), tags, "{body}");
    assert!(body.contains("(25 in all)"), "{body}");
}
