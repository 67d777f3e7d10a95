//! Every action the web UI offers, for every kind of viewer, against the real server: the
//! pages and forms answer as the same role rules as `/api/v2.0` say (Harbor's matrix), and
//! refused forms change nothing. Allowed mutations are asked with a target that does not
//! exist or a value that is already set where they would destroy something, as the API's
//! matrix does, so the same fixture serves every row.

mod common;

use common::oidc::WebSession;
use common::web::*;
use common::*;

/// Who looks, in the order of the matrix's columns.
const VIEWERS: [&str; 8] = [
    "admin",
    "projectAdmin",
    "maintainer",
    "developer",
    "guest",
    "limitedGuest",
    "non-member",
    "anonymous",
];

/// One action: what it is, how it is asked, and the status each viewer gets.
struct Row {
    what: &'static str,
    post: bool,
    path: String,
    form: Vec<(&'static str, String)>,
    want: [u16; 8],
}

fn get(what: &'static str, path: String, want: [u16; 8]) -> Row {
    Row {
        what,
        post: false,
        path,
        form: Vec::new(),
        want,
    }
}

fn post(what: &'static str, path: String, form: &[(&'static str, &str)], want: [u16; 8]) -> Row {
    Row {
        what,
        post: true,
        path,
        form: form.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        want,
    }
}

#[tokio::test]
async fn every_web_action_answers_as_the_roles_say_and_refusals_change_nothing() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["project", "create", "team"]);
    let members = [
        ("pa", "projectAdmin"),
        ("ma", "maintainer"),
        ("de", "developer"),
        ("gu", "guest"),
        ("lg", "limitedGuest"),
    ];
    for (user, role) in members {
        b.cli_ok(&["user", "create", user, "--password", "Matrix-pass-1"]);
        b.cli_ok(&["project", "member", "team", user, role]);
    }
    b.cli_ok(&["user", "create", "out", "--password", "Matrix-pass-1"]);
    b.cli_ok(&[
        "robot",
        "create",
        "dup",
        "--project",
        "team",
        "--access",
        "repository:pull",
    ]);
    let (digest, _) = push_image(&admin(), &b, "team/app", "v1", b"matrix layer").await;

    // Everyone's session (the anonymous viewer has none, and no token to post).
    let mut sessions = Vec::new();
    for user in ["admin", "pa", "ma", "de", "gu", "lg", "out"] {
        let password = if user == "admin" {
            API_ADMIN_PW
        } else {
            "Matrix-pass-1"
        };
        sessions.push(web_sign_in(&b, user, password).await);
    }
    sessions.push((WebSession::new(), String::new()));

    // The ids the forms name: the project robot's, and another user's.
    let (_, page) = get_page(&mut sessions[0].0, &b, "/c/projects/team").await;
    let robot = page
        .split("action=\"/c/robots/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("the project page lists the robot")
        .to_string();
    let (_, page) = get_page(&mut sessions[0].0, &b, "/c/admin/users?q=out").await;
    let user = page
        .split("action=\"/c/admin/users/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("the users page lists out")
        .to_string();

    let missing = format!("sha256:{}", "0".repeat(64));
    let project = "/c/projects/team";
    let repo = "/c/repositories/team/app";
    let rows = vec![
        get("projects page", "/c/projects".into(), [200; 8]),
        get(
            "project page",
            project.into(),
            [200, 200, 200, 200, 200, 200, 404, 404],
        ),
        get(
            "repository page",
            repo.into(),
            [200, 200, 200, 200, 200, 200, 404, 404],
        ),
        get(
            "artifact page",
            format!("{repo}/-/artifacts/{digest}"),
            [200, 200, 200, 200, 200, 200, 404, 404],
        ),
        // Private stays private: allowed, it changes nothing.
        post(
            "project settings",
            format!("{project}/settings"),
            &[],
            [303, 303, 403, 403, 403, 403, 404, 403],
        ),
        post(
            "delete a tag",
            format!("{repo}/-/delete-tag"),
            &[("tag", "nope")],
            [404, 404, 404, 403, 403, 403, 404, 403],
        ),
        post(
            "delete an artifact",
            format!("{repo}/-/delete-artifact"),
            &[("digest", &missing)],
            [404, 404, 404, 403, 403, 403, 404, 403],
        ),
        get(
            "new robot form",
            format!("{project}/robots/new"),
            [200, 200, 403, 403, 403, 403, 404, 303],
        ),
        // The name is taken: allowed callers get the form back with the reason.
        post(
            "create a robot",
            format!("{project}/robots/new"),
            &[
                ("name", "dup"),
                ("duration", "-1"),
                ("perm", "repository:pull"),
            ],
            [200, 200, 403, 403, 403, 403, 404, 403],
        ),
        post(
            "refresh a robot's secret",
            format!("/c/robots/{robot}/refresh"),
            &[],
            [200, 200, 403, 403, 403, 403, 404, 403],
        ),
        // Asked twice by allowed callers: disabled, then enabled again.
        post(
            "disable or enable a robot",
            format!("/c/robots/{robot}/toggle"),
            &[],
            [303, 303, 403, 403, 403, 403, 404, 403],
        ),
        get(
            "users page",
            "/c/admin/users".into(),
            [200, 403, 403, 403, 403, 403, 403, 303],
        ),
        // No provider is configured: the administrator is told so.
        post(
            "re-link a user",
            format!("/c/admin/users/{user}/link"),
            &[("subject", "new-subject")],
            [400, 403, 403, 403, 403, 403, 403, 403],
        ),
        get(
            "system robots page",
            "/c/admin/robots".into(),
            [200, 403, 403, 403, 403, 403, 403, 303],
        ),
        // A project that does not exist: the form again with the reason.
        post(
            "create a system robot",
            "/c/admin/robots".into(),
            &[
                ("name", "sys"),
                ("duration", "-1"),
                ("projects", "nope"),
                ("perm", "repository:pull"),
            ],
            [200, 403, 403, 403, 403, 403, 403, 403],
        ),
        get(
            "profile",
            "/c/profile".into(),
            [200, 200, 200, 200, 200, 200, 200, 303],
        ),
    ];

    let mut wrong = Vec::new();
    for row in &rows {
        for (i, (web, csrf)) in sessions.iter_mut().enumerate() {
            let r = if row.post {
                let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
                form.extend(row.form.iter().map(|(k, v)| (*k, v.as_str())));
                web.post_form(&b.url(&row.path), &form).await
            } else {
                web.get(&b.url(&row.path)).await
            };
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            if status != row.want[i] {
                wrong.push(format!(
                    "{} as {}: {status}, want {} ({})",
                    row.what,
                    VIEWERS[i],
                    row.want[i],
                    text_of(&body, "error").unwrap_or_default()
                ));
            }
            // Refusals say why in words.
            if status == 403 && text_of(&body, "error").is_none_or(|e| e.is_empty()) {
                wrong.push(format!(
                    "{} as {}: a 403 without a reason",
                    row.what, VIEWERS[i]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Nothing refused (or asked of a missing target) changed anything.
    let v: serde_json::Value = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/projects/team",
        Some(("admin", API_ADMIN_PW)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["metadata"]["public"], "false", "{v}");
    let r = admin()
        .get(b.url("/v2/team/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["tags"][0],
        "v1"
    );
    let (_, page) = get_page(&mut sessions[0].0, &b, "/c/projects/team").await;
    assert_eq!(
        texts_of(&page, "robot-name").len(),
        1,
        "no second robot: {page}"
    );
    assert_eq!(
        texts_of(&page, "robot-state"),
        ["enabled"],
        "enabled again: {page}"
    );
    let (_, page) = get_page(&mut sessions[0].0, &b, "/c/admin/robots").await;
    assert!(page.contains("id=\"no-robots\""), "no system robot: {page}");
}
