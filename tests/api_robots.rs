//! `/api/v2.0/robots` in Harbor's shapes: robot accounts created, listed, changed,
//! refreshed and deleted over the API, and what their secrets then do at the token
//! endpoint.

mod common;

use common::*;
use serde_json::{Value, json};

const ADMIN_PW: &str = API_ADMIN_PW;

fn start() -> Berth {
    Berth::builtin(&[("BERTH_AUTH__SERVICE__CREDENTIAL_CACHE_SECONDS", "0")])
}
const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_PW));

fn cli(b: &Berth, args: &[&str]) -> String {
    b.cli_ok(args)
}

/// The actions the token endpoint grants `who` on `repository`.
async fn granted(b: &Berth, who: (&str, &str), repository: &str) -> Result<Vec<String>, u16> {
    let r = client()
        .get(b.url("/service/token"))
        .basic_auth(who.0, Some(who.1))
        .query(&[("scope", format!("repository:{repository}:pull,push,delete"))])
        .send()
        .await
        .expect("token");
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let v: Value = r.json().await.unwrap();
    let jwt = v["token"].as_str().unwrap();
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').nth(1).unwrap())
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    Ok(claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == repository)
        .flat_map(|a| a["actions"].as_array().unwrap().clone())
        .map(|a| a.as_str().unwrap().to_string())
        .collect())
}

fn project_robot(name: &str, project: &str, actions: &[(&str, &str)]) -> Value {
    json!({
        "name": name,
        "description": "made by a test",
        "level": "project",
        "duration": -1,
        "permissions": [{
            "kind": "project",
            "namespace": project,
            "access": actions.iter().map(|(r, a)| json!({"resource": r, "action": a})).collect::<Vec<_>>(),
        }],
    })
}

#[tokio::test]
async fn a_project_robot_made_over_the_api_pushes_in_its_project_only() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    cli(&b, &["project", "create", "other"]);
    let body = project_robot(
        "ci",
        "team",
        &[("repository", "pull"), ("repository", "push")],
    );
    let r = api_send(
        &b,
        reqwest::Method::POST,
        "/api/v2.0/robots",
        ADMIN,
        Some(body),
    )
    .await;
    assert_eq!(r.status(), 201);
    let location = header_str(&r, "location");
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["name"], "robot$team+ci");
    assert_eq!(created["expires_at"], -1);
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32, "{secret}");
    assert_eq!(location, format!("/api/v2.0/robots/{}", created["id"]));

    let robot = ("robot$team+ci", secret.as_str());
    assert_eq!(
        granted(&b, robot, "team/app").await,
        Ok(vec!["pull".into(), "push".into()])
    );
    assert_eq!(granted(&b, robot, "other/app").await, Ok(vec![]));

    // The listing and the robot itself, in Harbor's shape and without the secret.
    let r = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/robots?q=Level=project",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "x-total-count"), "1");
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed[0]["name"], "robot$team+ci");
    assert_eq!(listed[0]["level"], "project");
    assert_eq!(listed[0]["permissions"][0]["namespace"], "team");
    assert_eq!(
        listed[0]["permissions"][0]["access"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(listed[0].get("secret").is_none());
    let r = api_send(&b, reqwest::Method::GET, &location, ADMIN, None).await;
    let one: Value = r.json().await.unwrap();
    assert_eq!(one["description"], "made by a test");
    assert_eq!(one["disable"], false);
}

#[tokio::test]
async fn refreshed_disabled_and_deleted_robots_stop_at_the_token_endpoint() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    let body = project_robot("ci", "team", &[("repository", "pull")]);
    let r = api_send(
        &b,
        reqwest::Method::POST,
        "/api/v2.0/robots",
        ADMIN,
        Some(body),
    )
    .await;
    let created: Value = r.json().await.unwrap();
    let (id, old) = (
        created["id"].as_i64().unwrap(),
        created["secret"].as_str().unwrap().to_string(),
    );
    let path = format!("/api/v2.0/robots/{id}");

    let r = api_send(&b, reqwest::Method::PATCH, &path, ADMIN, Some(json!({}))).await;
    assert_eq!(r.status(), 200);
    let new = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    assert_eq!(
        granted(&b, ("robot$team+ci", &old), "team/app").await,
        Err(401)
    );
    assert_eq!(
        granted(&b, ("robot$team+ci", &new), "team/app").await,
        Ok(vec!["pull".into()])
    );
    // A chosen secret must be strong.
    let r = api_send(
        &b,
        reqwest::Method::PATCH,
        &path,
        ADMIN,
        Some(json!({"secret": "weak"})),
    )
    .await;
    harbor_error(r, 400, "BAD_REQUEST").await;
    let r = api_send(
        &b,
        reqwest::Method::PATCH,
        &path,
        ADMIN,
        Some(json!({"secret": "Chosen1Secret"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        granted(&b, ("robot$team+ci", "Chosen1Secret"), "team/app").await,
        Ok(vec!["pull".into()])
    );

    let disable = json!({"description": "off", "disable": true, "duration": -1});
    assert_eq!(
        api_send(&b, reqwest::Method::PUT, &path, ADMIN, Some(disable))
            .await
            .status(),
        200
    );
    assert_eq!(
        granted(&b, ("robot$team+ci", "Chosen1Secret"), "team/app").await,
        Err(401)
    );
    let enable = json!({"description": "on", "disable": false, "duration": -1,
        "permissions": [{"kind": "project", "namespace": "team",
            "access": [{"resource": "repository", "action": "pull"}, {"resource": "repository", "action": "push"}]}]});
    assert_eq!(
        api_send(&b, reqwest::Method::PUT, &path, ADMIN, Some(enable))
            .await
            .status(),
        200
    );
    assert_eq!(
        granted(&b, ("robot$team+ci", "Chosen1Secret"), "team/app").await,
        Ok(vec!["pull".into(), "push".into()]),
        "enabled again, with the permissions the update gave it"
    );

    assert_eq!(
        api_send(&b, reqwest::Method::DELETE, &path, ADMIN, None)
            .await
            .status(),
        200
    );
    assert_eq!(
        granted(&b, ("robot$team+ci", "Chosen1Secret"), "team/app").await,
        Err(401)
    );
    harbor_error(
        api_send(&b, reqwest::Method::GET, &path, ADMIN, None).await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn only_those_allowed_create_robots_and_never_wider_than_themselves() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    cli(&b, &["project", "create", "other"]);
    cli(&b, &["user", "create", "dev", "--password", "dev-pass-12"]);
    cli(
        &b,
        &["user", "create", "boss", "--password", "boss-pass-12"],
    );
    cli(&b, &["project", "member", "team", "dev", "developer"]);
    cli(&b, &["project", "member", "team", "boss", "projectAdmin"]);
    let post = |who, body| {
        api_send(
            &b,
            reqwest::Method::POST,
            "/api/v2.0/robots",
            who,
            Some(body),
        )
    };
    let pull = [("repository", "pull")];

    let r = post(
        Some(("dev", "dev-pass-12")),
        project_robot("a", "team", &pull),
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    let r = post(
        Some(("boss", "boss-pass-12")),
        project_robot("b", "other", &pull),
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    let r = post(None, project_robot("c", "team", &pull)).await;
    harbor_error(r, 401, "UNAUTHORIZED").await;
    // A project admin makes a robot that may itself make robots in its project.
    let maker = project_robot(
        "maker",
        "team",
        &[
            ("repository", "pull"),
            ("repository", "push"),
            ("robot", "create"),
        ],
    );
    let r = post(Some(("boss", "boss-pass-12")), maker).await;
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let maker = Some(("robot$team+maker", secret.as_str()));
    let r = post(maker, project_robot("narrow", "team", &pull)).await;
    assert_eq!(r.status(), 201, "within its own permissions");
    let r = post(
        maker,
        project_robot("wide", "team", &[("repository", "delete")]),
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    let r = post(maker, project_robot("elsewhere", "other", &pull)).await;
    harbor_error(r, 403, "FORBIDDEN").await;
    let system = json!({"name": "sys", "level": "system", "duration": -1,
        "permissions": [{"kind": "project", "namespace": "*", "access": [{"resource": "repository", "action": "pull"}]}]});
    harbor_error(post(maker, system.clone()).await, 403, "FORBIDDEN").await;
    harbor_error(
        post(Some(("boss", "boss-pass-12")), system.clone()).await,
        403,
        "FORBIDDEN",
    )
    .await;
    let r = post(ADMIN, system).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "robot$sys");

    // The project admin sees its project's robots, not the system robot.
    let r = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/robots",
        Some(("boss", "boss-pass-12")),
        None,
    )
    .await;
    let names: Vec<String> = r
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["robot$team+maker", "robot$team+narrow"]);
}

#[tokio::test]
async fn bad_robot_requests_are_refused_and_create_nothing() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    let pull = [("repository", "pull")];
    let ok = project_robot("ci", "team", &pull);
    assert_eq!(
        api_send(
            &b,
            reqwest::Method::POST,
            "/api/v2.0/robots",
            ADMIN,
            Some(ok.clone())
        )
        .await
        .status(),
        201
    );
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("taken name", ok, 409, "CONFLICT"),
        (
            "bad name",
            project_robot("CI$", "team", &pull),
            400,
            "BAD_REQUEST",
        ),
        (
            "no project",
            project_robot("x", "nope", &pull),
            404,
            "NOT_FOUND",
        ),
        (
            "unknown action",
            project_robot("x", "team", &[("repository", "fly")]),
            400,
            "BAD_REQUEST",
        ),
        (
            "unknown resource",
            project_robot("x", "team", &[("rocket", "pull")]),
            400,
            "BAD_REQUEST",
        ),
        (
            "project robot on *",
            project_robot("x", "*", &pull),
            400,
            "BAD_REQUEST",
        ),
        (
            "no level",
            json!({"name": "x", "permissions": []}),
            400,
            "BAD_REQUEST",
        ),
        (
            "bad level",
            json!({"name": "x", "level": "galaxy"}),
            400,
            "BAD_REQUEST",
        ),
        (
            "bad duration",
            json!({"name": "x", "level": "project", "duration": -5,
            "permissions": [{"kind": "project", "namespace": "team", "access": [{"resource": "repository", "action": "pull"}]}]}),
            400,
            "BAD_REQUEST",
        ),
        ("not JSON", json!("robot please"), 400, "BAD_REQUEST"),
    ];
    for (what, body, status, code) in cases {
        let r = api_send(
            &b,
            reqwest::Method::POST,
            "/api/v2.0/robots",
            ADMIN,
            Some(body),
        )
        .await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], code, "{what}: {v}");
    }
    let r = api_send(&b, reqwest::Method::GET, "/api/v2.0/robots", ADMIN, None).await;
    assert_eq!(
        header_str(&r, "x-total-count"),
        "1",
        "only the first robot exists"
    );
    harbor_error(
        api_send(
            &b,
            reqwest::Method::GET,
            "/api/v2.0/robots/abc",
            ADMIN,
            None,
        )
        .await,
        400,
        "BAD_REQUEST",
    )
    .await;
    harbor_error(
        api_send(
            &b,
            reqwest::Method::GET,
            "/api/v2.0/robots/999",
            ADMIN,
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn a_projects_robots_are_listed_to_its_guests_and_refused_below() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    for (user, role) in [
        ("visitor", "guest"),
        ("peek", "limitedGuest"),
        ("boss", "projectAdmin"),
    ] {
        let password = format!("{user}-Pass-12");
        cli(&b, &["user", "create", user, "--password", &password]);
        cli(&b, &["project", "member", "team", user, role]);
    }
    cli(
        &b,
        &[
            "user",
            "create",
            "stranger",
            "--password",
            "stranger-Pass-1",
        ],
    );
    let r = api_send(
        &b,
        reqwest::Method::POST,
        "/api/v2.0/robots",
        ADMIN,
        Some(project_robot("ci", "team", &[("repository", "pull")])),
    )
    .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let team_id = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/projects/team",
        ADMIN,
        None,
    )
    .await
    .json::<Value>()
    .await
    .unwrap()["project_id"]
        .as_i64()
        .unwrap();
    let listing = format!("/api/v2.0/robots?q=Level=project,ProjectID={team_id}");
    let get = |who: (&'static str, &'static str), path: String| {
        let b = &b;
        async move { api_send(b, reqwest::Method::GET, &path, Some(who), None).await }
    };

    // Harbor's matrix: guests and up list and read a project's robots, never the secret.
    for who in [("visitor", "visitor-Pass-12"), ("boss", "boss-Pass-12")] {
        let r = get(who, listing.clone()).await;
        assert_eq!(r.status(), 200, "{}", who.0);
        assert_eq!(header_str(&r, "x-total-count"), "1");
        let listed: Value = r.json().await.unwrap();
        assert_eq!(listed[0]["name"], "robot$team+ci");
        assert!(listed[0].get("secret").is_none());
        let r = get(who, format!("/api/v2.0/robots/{id}")).await;
        assert_eq!(r.status(), 200, "{}", who.0);
        assert!(r.json::<Value>().await.unwrap().get("secret").is_none());
    }
    // A limited guest and a non-member may not list them; neither sees one.
    for who in [("peek", "peek-Pass-12"), ("stranger", "stranger-Pass-1")] {
        harbor_error(get(who, listing.clone()).await, 403, "FORBIDDEN").await;
        harbor_error(
            get(who, format!("/api/v2.0/robots/{id}")).await,
            404,
            "NOT_FOUND",
        )
        .await;
    }
    // A guest who sees the robot may not change it.
    let r = api_send(
        &b,
        reqwest::Method::DELETE,
        &format!("/api/v2.0/robots/{id}"),
        Some(("visitor", "visitor-Pass-12")),
        None,
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    let r = api_send(
        &b,
        reqwest::Method::PATCH,
        &format!("/api/v2.0/robots/{id}"),
        Some(("visitor", "visitor-Pass-12")),
        None,
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    assert_eq!(get(("boss", "boss-Pass-12"), listing).await.status(), 200);
}
