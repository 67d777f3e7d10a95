//! `/api/v2.0/projects/{project}/repositories` and artifacts in Harbor's shapes: listings,
//! and deletes that go through the same content layer as `/v2`.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::Value;

const ADMIN_PW: &str = API_ADMIN_PW;

fn start() -> Berth {
    Berth::builtin(&[])
}

fn cli(b: &Berth, args: &[&str]) -> String {
    b.cli_ok(args)
}

/// A client that sends Basic credentials with every request.
fn as_user(user: &str, password: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {value}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn get_json(c: &reqwest::Client, b: &Berth, path: &str) -> (u16, String, Value) {
    let r = c.get(b.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let total = r
        .headers()
        .get("x-total-count")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, total, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn repositories_and_artifacts_are_listed_with_tags_sizes_and_types() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    cli(&b, &["project", "create", "teamwork", "--public"]);
    let admin = as_user("admin", ADMIN_PW);
    let (d1, m1) = push_image(&admin, &b, "team/app", "v1", b"layer one").await;
    // Push times are in milliseconds: keep the two images apart.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (d2, _) = push_image(&admin, &b, "team/app", "v2", b"layer two, longer").await;
    // A second tag on the first image.
    let r = admin
        .put(b.url("/v2/team/app/manifests/stable"))
        .header("content-type", OCI_MANIFEST)
        .body(m1.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    push_image(&admin, &b, "team/sub/tool", "latest", b"tool layer").await;
    push_image(&admin, &b, "teamwork/app", "1", b"not team's").await;

    let (status, total, repos) = get_json(&admin, &b, "/api/v2.0/projects/team/repositories").await;
    assert_eq!((status, total.as_str()), (200, "2"));
    let names: Vec<&str> = repos
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["team/app", "team/sub/tool"],
        "teamwork/app is another project's"
    );
    assert_eq!(repos[0]["artifact_count"], 2);
    let (_, total, page) = get_json(
        &admin,
        &b,
        "/api/v2.0/projects/team/repositories?page=2&page_size=1",
    )
    .await;
    assert_eq!(total, "2");
    assert_eq!(page[0]["name"], "team/sub/tool");
    let (_, _, filtered) = get_json(
        &admin,
        &b,
        "/api/v2.0/projects/team/repositories?q=name%3D~tool",
    )
    .await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);

    let (status, total, arts) = get_json(
        &admin,
        &b,
        "/api/v2.0/projects/team/repositories/app/artifacts",
    )
    .await;
    assert_eq!((status, total.as_str()), (200, "2"));
    assert_eq!(arts[0]["digest"], d2, "newest first");
    assert_eq!(arts[1]["digest"], d1);
    let tags: Vec<&str> = arts[1]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["stable", "v1"]);
    assert_eq!(arts[1]["media_type"], OCI_MANIFEST);
    assert_eq!(arts[1]["type"], "IMAGE");
    let expected_size = m1.len() + IMAGE_CONFIG.len() + b"layer one".len();
    assert_eq!(
        arts[1]["size"], expected_size as u64,
        "manifest + config + layer"
    );
    assert!(arts[1]["push_time"].as_str().unwrap().ends_with('Z'));
    // A repository below the project: its slashes encoded once or twice.
    for path in [
        "/api/v2.0/projects/team/repositories/sub%2Ftool/artifacts",
        "/api/v2.0/projects/team/repositories/sub%252Ftool/artifacts",
    ] {
        let (status, total, _) = get_json(&admin, &b, path).await;
        assert_eq!((status, total.as_str()), (200, "1"), "{path}");
    }
}

#[tokio::test]
async fn listings_follow_visibility_and_deletes_follow_roles() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    cli(&b, &["project", "create", "open", "--public"]);
    cli(&b, &["user", "create", "dev", "--password", "dev-pass-12"]);
    cli(
        &b,
        &["user", "create", "keeper", "--password", "keeper-pass1"],
    );
    cli(&b, &["project", "member", "team", "dev", "developer"]);
    cli(&b, &["project", "member", "team", "keeper", "maintainer"]);
    let admin = as_user("admin", ADMIN_PW);
    let (digest, _) = push_image(&admin, &b, "team/app", "v1", b"one").await;
    let r = admin
        .put(b.url("/v2/team/app/manifests/v1-extra"))
        .header("content-type", OCI_MANIFEST)
        .body(image_over_layer(b"one"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    push_image(&admin, &b, "open/app", "v1", b"public").await;

    let anon = client();
    let (status, _, _) = get_json(&anon, &b, "/api/v2.0/projects/team/repositories").await;
    assert_eq!(
        status, 401,
        "a private project's repositories need credentials"
    );
    let (status, total, _) = get_json(&anon, &b, "/api/v2.0/projects/open/repositories").await;
    assert_eq!(
        (status, total.as_str()),
        (200, "1"),
        "a public project's are anyone's"
    );
    let outsider = as_user("keeper", "keeper-pass1");
    let (status, _, _) = get_json(
        &outsider,
        &b,
        "/api/v2.0/projects/open/repositories/app/artifacts",
    )
    .await;
    assert_eq!(status, 200);

    let dev = as_user("dev", "dev-pass-12");
    let keeper = as_user("keeper", "keeper-pass1");
    let tag_path =
        format!("/api/v2.0/projects/team/repositories/app/artifacts/{digest}/tags/v1-extra");
    let art_path = format!("/api/v2.0/projects/team/repositories/app/artifacts/{digest}");
    // A developer may delete neither a tag nor an artifact; a maintainer may.
    assert_eq!(
        dev.delete(b.url(&tag_path)).send().await.unwrap().status(),
        403
    );
    assert_eq!(
        dev.delete(b.url(&art_path)).send().await.unwrap().status(),
        403
    );
    assert_eq!(
        keeper
            .delete(b.url(&tag_path))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        manifest_status(&admin, &b, "team/app", "v1-extra").await,
        404
    );
    assert_eq!(
        manifest_status(&admin, &b, "team/app", "v1").await,
        200,
        "the artifact stays"
    );
    assert_eq!(
        keeper
            .delete(b.url(&tag_path))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        keeper
            .delete(b.url(&art_path))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(manifest_status(&admin, &b, "team/app", &digest).await, 404);
    assert_eq!(
        manifest_status(&admin, &b, "team/app", "v1").await,
        404,
        "its tags went with it"
    );
    let (_, total, _) = get_json(
        &admin,
        &b,
        "/api/v2.0/projects/team/repositories/app/artifacts",
    )
    .await;
    assert_eq!(total, "0");
    // Bad references change nothing.
    let r = keeper
        .delete(b.url("/api/v2.0/projects/team/repositories/app/artifacts/sha256:zz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = keeper
        .delete(b.url("/api/v2.0/projects/team/repositories/Bad%20Name/artifacts/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// The statuses `who` gets deleting `path`.
async fn delete_status(c: &reqwest::Client, b: &Berth, path: &str) -> u16 {
    c.delete(b.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_deleted_repository_is_gone_from_every_listing() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    cli(
        &b,
        &["user", "create", "keeper", "--password", "keeper-pass1"],
    );
    cli(&b, &["project", "member", "team", "keeper", "maintainer"]);
    let admin = as_user("admin", ADMIN_PW);
    push_image(&admin, &b, "team/sub/tool", "v1", b"tool one").await;
    push_image(&admin, &b, "team/sub/tool", "v2", b"tool two").await;
    push_image(&admin, &b, "team/app", "v1", b"stays").await;
    let keeper = as_user("keeper", "keeper-pass1");

    // The repository's slashes encoded twice, as Harbor's clients send them.
    let path = "/api/v2.0/projects/team/repositories/sub%252Ftool";
    assert_eq!(delete_status(&keeper, &b, path).await, 200);

    let r = admin
        .get(b.url("/v2/team/sub/tool/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    assert_eq!(
        manifest_status(&admin, &b, "team/sub/tool", "v1").await,
        404
    );
    assert_eq!(catalog_of(&admin, &b).await, ["team/app"]);
    let (status, total, repos) = get_json(&admin, &b, "/api/v2.0/projects/team/repositories").await;
    assert_eq!((status, total.as_str()), (200, "1"));
    assert_eq!(repos[0]["name"], "team/app");
    let (_, total, _) = get_json(
        &admin,
        &b,
        "/api/v2.0/projects/team/repositories/sub%252Ftool/artifacts",
    )
    .await;
    assert_eq!(total, "0");
    assert_eq!(
        tags_of(&admin, &b, "team/app").await,
        Some(vec!["v1".to_string()]),
        "another repository is untouched"
    );

    // Once gone, it is not found (encoded once this time); a push brings it back.
    let r = keeper
        .delete(b.url("/api/v2.0/projects/team/repositories/sub%2Ftool"))
        .send()
        .await
        .unwrap();
    harbor_error(r, 404, "NOT_FOUND").await;
    push_image(&admin, &b, "team/sub/tool", "v3", b"tool three").await;
    assert_eq!(
        tags_of(&admin, &b, "team/sub/tool").await,
        Some(vec!["v3".to_string()])
    );
}

#[tokio::test]
async fn a_repository_is_deleted_only_by_those_the_matrix_allows() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    for (user, role) in [("dev", "developer"), ("visitor", "guest")] {
        let password = format!("{user}-Pass-12");
        cli(&b, &["user", "create", user, "--password", &password]);
        cli(&b, &["project", "member", "team", user, role]);
    }
    let admin = as_user("admin", ADMIN_PW);
    push_image(&admin, &b, "team/app", "v1", b"kept").await;
    let path = "/api/v2.0/projects/team/repositories/app";

    for user in ["dev", "visitor"] {
        let c = as_user(user, &format!("{user}-Pass-12"));
        let r = c.delete(b.url(path)).send().await.unwrap();
        harbor_error(r, 403, "FORBIDDEN").await;
    }
    let r = client().delete(b.url(path)).send().await.unwrap();
    harbor_error(r, 401, "UNAUTHORIZED").await;
    assert_eq!(
        tags_of(&admin, &b, "team/app").await,
        Some(vec!["v1".to_string()]),
        "refused deletes changed nothing"
    );

    // A robot holding `repository:delete` in the project may.
    let robot = api_send(
        &b,
        reqwest::Method::POST,
        "/api/v2.0/robots",
        Some(("admin", ADMIN_PW)),
        Some(serde_json::json!({
            "name": "janitor",
            "level": "project",
            "duration": -1,
            "permissions": [{"kind": "project", "namespace": "team", "access": [
                {"resource": "repository", "action": "delete"}
            ]}],
        })),
    )
    .await;
    assert_eq!(robot.status(), 201);
    let robot: Value = robot.json().await.unwrap();
    let c = as_user("robot$team+janitor", robot["secret"].as_str().unwrap());
    assert_eq!(delete_status(&c, &b, path).await, 200);
    assert_eq!(tags_of(&admin, &b, "team/app").await, None);
    // A missing project is Harbor's 404 too.
    let r = admin
        .delete(b.url("/api/v2.0/projects/nope/repositories/app"))
        .send()
        .await
        .unwrap();
    harbor_error(r, 404, "NOT_FOUND").await;
}
