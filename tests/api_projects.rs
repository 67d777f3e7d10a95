//! `/api/v2.0`: system info, the current user and projects, in Harbor's shapes, against a
//! real server with built-in accounts.

mod common;

use common::*;
use serde_json::{Value, json};

const ADMIN_PW: &str = API_ADMIN_PW;

fn start() -> Berth {
    Berth::builtin(&[])
}

/// Runs the admin CLI on the server's database.
fn cli(b: &Berth, args: &[&str]) -> String {
    b.cli_ok(args)
}

const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_PW));

#[tokio::test]
async fn systeminfo_and_the_current_user_answer_in_harbors_shape() {
    let b = start();
    let r = api_send(&b, reqwest::Method::GET, "/api/v2.0/systeminfo", None, None).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["auth_mode"], "db_auth");
    assert_eq!(v["project_creation_restriction"], "adminonly");

    let r = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/users/current",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["username"], "admin");
    assert_eq!(v["sysadmin_flag"], true);
    assert!(v["user_id"].as_i64().is_some());
    assert!(v["creation_time"].as_str().unwrap().ends_with('Z'));

    let r = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/users/current",
        None,
        None,
    )
    .await;
    harbor_error(r, 401, "UNAUTHORIZED").await;
    let r = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/users/current",
        Some(("admin", "wrong-password")),
        None,
    )
    .await;
    let msg = harbor_error(r, 401, "UNAUTHORIZED").await;
    assert_eq!(msg, "unknown user or wrong password");
}

#[tokio::test]
async fn projects_are_created_by_admins_with_valid_unique_names() {
    let b = start();
    cli(
        &b,
        &["user", "create", "alice", "--password", "alice-pass-1"],
    );
    let post = |who, body| {
        api_send(
            &b,
            reqwest::Method::POST,
            "/api/v2.0/projects",
            who,
            Some(body),
        )
    };

    let r = post(
        ADMIN,
        json!({"project_name": "team", "metadata": {"public": "false"}}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let location = header_str(&r, "location");
    assert!(location.starts_with("/api/v2.0/projects/"), "{location}");
    let r = api_send(&b, reqwest::Method::GET, &location, ADMIN, None).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "team");
    assert_eq!(v["metadata"]["public"], "false");
    assert_eq!(v["repo_count"], 0);

    // Refused, and nothing created: a taken name, invalid names, no name, non-admins.
    let msg = harbor_error(
        post(ADMIN, json!({"project_name": "team"})).await,
        409,
        "CONFLICT",
    )
    .await;
    assert!(msg.contains("team"), "{msg}");
    for bad in ["Team", "a/b", "-x", "", "x..y"] {
        let msg = harbor_error(
            post(ADMIN, json!({"project_name": bad})).await,
            400,
            "BAD_REQUEST",
        )
        .await;
        assert!(msg.contains("project name"), "{bad}: {msg}");
    }
    harbor_error(
        post(ADMIN, json!({"public": true})).await,
        400,
        "BAD_REQUEST",
    )
    .await;
    let r = api_send(&b, reqwest::Method::POST, "/api/v2.0/projects", ADMIN, None).await;
    harbor_error(r, 400, "BAD_REQUEST").await;
    harbor_error(
        post(
            Some(("alice", "alice-pass-1")),
            json!({"project_name": "mine"}),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    harbor_error(
        post(None, json!({"project_name": "anon"})).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let listed = cli(&b, &["project", "list"]);
    assert_eq!(listed, "library (public)\nteam (private)\n");

    // HEAD ?project_name= says whether a project exists.
    let head = |name: &str| {
        client()
            .head(b.url(&format!("/api/v2.0/projects?project_name={name}")))
            .send()
    };
    assert_eq!(head("team").await.unwrap().status(), 200);
    assert_eq!(head("nope").await.unwrap().status(), 404);
}

#[tokio::test]
async fn listings_show_what_the_caller_may_see_with_totals_and_pages() {
    let b = start();
    for (name, public) in [
        ("alpha", true),
        ("beta", false),
        ("gamma", true),
        ("delta", false),
    ] {
        let mut args = vec!["project", "create", name];
        if public {
            args.push("--public");
        }
        cli(&b, &args);
    }
    cli(&b, &["user", "create", "bob", "--password", "bob-pass-12"]);
    cli(&b, &["project", "member", "beta", "bob", "guest"]);

    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |who, query: &'static str| {
        let b = &b;
        async move {
            let r = api_send(
                b,
                reqwest::Method::GET,
                &format!("/api/v2.0/projects{query}"),
                who,
                None,
            )
            .await;
            assert_eq!(r.status(), 200, "{query}");
            let total = header_str(&r, "x-total-count");
            let link = r
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_string());
            (names(r.json().await.unwrap()), total, link)
        }
    };
    let (all, total, _) = list(ADMIN, "?page_size=100").await;
    assert_eq!(all, ["alpha", "beta", "delta", "gamma", "library"]);
    assert_eq!(total, "5");
    let (public, total, _) = list(None, "").await;
    assert_eq!(
        public,
        ["alpha", "gamma", "library"],
        "anonymous callers see public projects"
    );
    assert_eq!(total, "3");
    let (bobs, _, _) = list(Some(("bob", "bob-pass-12")), "").await;
    assert_eq!(
        bobs,
        ["alpha", "beta", "gamma", "library"],
        "members see their private projects"
    );
    let (page, total, link) = list(ADMIN, "?page=2&page_size=2").await;
    assert_eq!(page, ["delta", "gamma"]);
    assert_eq!(total, "5");
    assert_eq!(
        link.as_deref(),
        Some("</api/v2.0/projects?page=3&page_size=2>; rel=\"next\"")
    );
    let (last, _, link) = list(ADMIN, "?page=3&page_size=2").await;
    assert_eq!((last, link), (vec!["library".to_string()], None));
    let (fuzzy, _, _) = list(ADMIN, "?q=name%3D~lt").await;
    assert_eq!(fuzzy, ["delta"]);
    let (private, _, _) = list(ADMIN, "?public=false").await;
    assert_eq!(private, ["beta", "delta"]);
    for bad in [
        "?page=0",
        "?page_size=101",
        "?page=x",
        "?public=maybe",
        "?q=owner%3Dx",
    ] {
        let r = api_send(
            &b,
            reqwest::Method::GET,
            &format!("/api/v2.0/projects{bad}"),
            ADMIN,
            None,
        )
        .await;
        harbor_error(r, 400, "BAD_REQUEST").await;
    }
}

#[tokio::test]
async fn private_projects_are_hidden_and_only_their_admins_change_or_delete_them() {
    let b = start();
    cli(&b, &["project", "create", "secret"]);
    cli(
        &b,
        &["user", "create", "carol", "--password", "carol-pass-1"],
    );
    cli(
        &b,
        &["user", "create", "dave", "--password", "dave-pass-12"],
    );
    cli(
        &b,
        &["project", "member", "secret", "carol", "projectAdmin"],
    );
    cli(&b, &["project", "member", "secret", "dave", "developer"]);
    let carol = Some(("carol", "carol-pass-1"));
    let dave = Some(("dave", "dave-pass-12"));
    let get = |who| {
        api_send(
            &b,
            reqwest::Method::GET,
            "/api/v2.0/projects/secret",
            who,
            None,
        )
    };

    harbor_error(get(None).await, 401, "UNAUTHORIZED").await;
    let r = get(carol).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["current_user_role_id"], 1);
    assert_eq!(v["current_user_role_ids"], json!([1]));
    let id = v["project_id"].as_i64().unwrap();
    // By id as well, and by name when the header says the reference is one.
    let r = api_send(
        &b,
        reqwest::Method::GET,
        &format!("/api/v2.0/projects/{id}"),
        carol,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);

    // A developer may not make it public; its project admin may.
    let public = json!({"metadata": {"public": "true"}});
    let put = |who| {
        api_send(
            &b,
            reqwest::Method::PUT,
            "/api/v2.0/projects/secret",
            who,
            Some(public.clone()),
        )
    };
    harbor_error(put(dave).await, 403, "FORBIDDEN").await;
    harbor_error(get(None).await, 401, "UNAUTHORIZED").await;
    assert_eq!(put(carol).await.status(), 200);
    assert_eq!(get(None).await.status(), 200, "public now");

    // Deleting: refused while it holds a repository (412), allowed once it is empty.
    let pusher = client();
    let r = pusher
        .post(b.url("/v2/secret/app/blobs/uploads/"))
        .basic_auth("dave", Some("dave-pass-12"))
        .query(&[("digest", sha256(b"hello").as_str())])
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "a developer pushes with Basic credentials");
    let r = get(carol).await;
    assert_eq!(r.json::<Value>().await.unwrap()["repo_count"], 1);
    let delete = |who| {
        api_send(
            &b,
            reqwest::Method::DELETE,
            "/api/v2.0/projects/secret",
            who,
            None,
        )
    };
    harbor_error(delete(dave).await, 403, "FORBIDDEN").await;
    let msg = harbor_error(delete(carol).await, 412, "PRECONDITION").await;
    assert!(msg.contains("secret"), "{msg}");
    cli(&b, &["project", "delete", "secret", "--with-repositories"]);
    harbor_error(get(ADMIN).await, 404, "NOT_FOUND").await;
    cli(&b, &["project", "create", "secret"]);
    let r = delete(ADMIN).await;
    assert_eq!(r.status(), 200);
    harbor_error(delete(ADMIN).await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn members_are_listed_added_changed_and_removed_by_project_admins() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    for (u, p) in [
        ("erin", "erin-pass-12"),
        ("finn", "finn-pass-12"),
        ("gus", "gus-pass-123"),
    ] {
        cli(&b, &["user", "create", u, "--password", p]);
    }
    cli(&b, &["project", "member", "team", "erin", "projectAdmin"]);
    let erin = Some(("erin", "erin-pass-12"));
    let finn = Some(("finn", "finn-pass-12"));
    let members = "/api/v2.0/projects/team/members";
    let pushes = |who: (&'static str, &'static str)| {
        let b = &b;
        async move {
            let body = format!("blob of {}", who.0);
            client()
                .post(b.url("/v2/team/app/blobs/uploads/"))
                .basic_auth(who.0, Some(who.1))
                .query(&[("digest", sha256(body.as_bytes()).as_str())])
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        pushes(("finn", "finn-pass-12")).await,
        401,
        "not a member yet"
    );

    // The project admin adds finn as a developer, by name.
    let add = json!({"role_id": 2, "member_user": {"username": "finn"}});
    let r = api_send(&b, reqwest::Method::POST, members, erin, Some(add.clone())).await;
    assert_eq!(r.status(), 201);
    let location = header_str(&r, "location");
    assert!(location.contains("/members/"), "{location}");
    let r = api_send(&b, reqwest::Method::POST, members, erin, Some(add)).await;
    harbor_error(r, 409, "CONFLICT").await;
    let r = api_send(&b, reqwest::Method::GET, members, finn, None).await;
    assert_eq!(r.status(), 200, "a developer may see the members");
    let listed: Value = r.json().await.unwrap();
    let finn_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["entity_name"] == "finn")
        .cloned()
        .expect("finn listed");
    assert_eq!(finn_row["role_id"], 2);
    assert_eq!(finn_row["role_name"], "developer");
    assert_eq!(finn_row["entity_type"], "u");
    // Roles take effect at the next credential check (the cache holds one for 30 s by
    // default; the token endpoint checks afresh).
    let token_actions = |who: (&'static str, &'static str)| {
        let b = &b;
        async move {
            let r = client()
                .get(b.url("/service/token"))
                .basic_auth(who.0, Some(who.1))
                .query(&[("scope", "repository:team/app:pull,push,delete")])
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            use base64::Engine as _;
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v["token"].as_str().unwrap().split('.').nth(1).unwrap())
                .unwrap();
            let claims: Value = serde_json::from_slice(&payload).unwrap();
            claims["access"][0]["actions"].clone()
        }
    };
    assert_eq!(
        token_actions(("finn", "finn-pass-12")).await,
        json!(["pull", "push"])
    );

    // A developer may not manage members; the admin promotes finn, then removes him.
    let gus = json!({"role_id": 3, "member_user": {"username": "gus"}});
    let r = api_send(&b, reqwest::Method::POST, members, finn, Some(gus)).await;
    harbor_error(r, 403, "FORBIDDEN").await;
    let r = api_send(
        &b,
        reqwest::Method::PUT,
        &location,
        erin,
        Some(json!({"role_id": 4})),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        token_actions(("finn", "finn-pass-12")).await,
        json!(["pull", "push", "delete"]),
        "a maintainer may delete"
    );
    for bad in [json!({"role_id": 9}), json!({"nope": 1})] {
        let r = api_send(&b, reqwest::Method::PUT, &location, erin, Some(bad)).await;
        harbor_error(r, 400, "BAD_REQUEST").await;
    }
    let r = api_send(&b, reqwest::Method::DELETE, &location, erin, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(token_actions(("finn", "finn-pass-12")).await, Value::Null);
    harbor_error(
        api_send(&b, reqwest::Method::GET, &location, erin, None).await,
        404,
        "NOT_FOUND",
    )
    .await;

    // Groups: a membership for a group by name (created when missing).
    let group = json!({"role_id": 3, "member_group": {"group_name": "qa", "group_type": 3}});
    let r = api_send(&b, reqwest::Method::POST, members, erin, Some(group)).await;
    assert_eq!(r.status(), 201);
    let r = api_send(&b, reqwest::Method::GET, members, erin, None).await;
    let listed: Value = r.json().await.unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["entity_name"] == "qa" && m["entity_type"] == "g"),
        "{listed}"
    );
    // Bad requests change nothing.
    for bad in [
        json!({"role_id": 2}),
        json!({"role_id": 2, "member_user": {"username": "nobody"}}),
        json!({"role_id": 0, "member_user": {"username": "gus"}}),
    ] {
        let r = api_send(&b, reqwest::Method::POST, members, erin, Some(bad.clone())).await;
        assert!(matches!(r.status().as_u16(), 400 | 404), "{bad}");
    }
    let r = api_send(&b, reqwest::Method::GET, members, None, None).await;
    harbor_error(r, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn admins_manage_users_and_users_change_their_own_password() {
    let b = start();
    let users = "/api/v2.0/users";
    let new = json!({"username": "hana", "email": "hana@example.test", "realname": "Hana",
        "password": "Hana-pass-1", "comment": "made by a test"});
    let r = api_send(&b, reqwest::Method::POST, users, ADMIN, Some(new.clone())).await;
    assert_eq!(r.status(), 201);
    let location = header_str(&r, "location");
    let hana = Some(("hana", "Hana-pass-1"));
    harbor_error(
        api_send(&b, reqwest::Method::POST, users, ADMIN, Some(new)).await,
        409,
        "CONFLICT",
    )
    .await;
    for (what, body) in [
        (
            "weak password",
            json!({"username": "ivan", "password": "weakpass"}),
        ),
        (
            "bad name",
            json!({"username": "a b", "password": "Ivan-pass-1"}),
        ),
        (
            "robot prefix",
            json!({"username": "robot$x", "password": "Ivan-pass-1"}),
        ),
        ("no password", json!({"username": "ivan"})),
    ] {
        let r = api_send(&b, reqwest::Method::POST, users, ADMIN, Some(body)).await;
        assert_eq!(r.status(), 400, "{what}");
    }
    harbor_error(
        api_send(
            &b,
            reqwest::Method::POST,
            users,
            hana,
            Some(json!({"username": "x", "password": "Xx-pass-12"})),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;

    // Listing and reading: admins everyone, a user themself.
    let r = api_send(
        &b,
        reqwest::Method::GET,
        &format!("{users}?q=username%3D~an"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["username"], "hana");
    assert_eq!(listed[0]["email"], "hana@example.test");
    assert!(listed[0].get("password").is_none());
    harbor_error(
        api_send(&b, reqwest::Method::GET, users, hana, None).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_eq!(
        api_send(&b, reqwest::Method::GET, &location, hana, None)
            .await
            .status(),
        200
    );

    // A user changes their password with the old one; an admin without it.
    let pw = format!("{location}/password");
    let r = api_send(
        &b,
        reqwest::Method::PUT,
        &pw,
        hana,
        Some(json!({"old_password": "wrong", "new_password": "Hana-pass-2"})),
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    let r = api_send(
        &b,
        reqwest::Method::PUT,
        &pw,
        hana,
        Some(json!({"old_password": "Hana-pass-1", "new_password": "Hana-pass-2"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let hana2 = Some(("hana", "Hana-pass-2"));
    harbor_error(
        api_send(&b, reqwest::Method::GET, &location, hana, None).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let r = api_send(
        &b,
        reqwest::Method::PUT,
        &pw,
        ADMIN,
        Some(json!({"new_password": "Hana-pass-3"})),
    )
    .await;
    assert_eq!(r.status(), 200);
    harbor_error(
        api_send(&b, reqwest::Method::GET, &location, hana2, None).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let hana3 = Some(("hana", "Hana-pass-3"));

    // Promotion to system admin, and deletion.
    let admin_flag = format!("{location}/sysadmin");
    harbor_error(
        api_send(
            &b,
            reqwest::Method::PUT,
            &admin_flag,
            hana3,
            Some(json!({"sysadmin_flag": true})),
        )
        .await,
        403,
        "FORBIDDEN",
    )
    .await;
    let r = api_send(
        &b,
        reqwest::Method::PUT,
        &admin_flag,
        ADMIN,
        Some(json!({"sysadmin_flag": true})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/users/current",
        hana3,
        None,
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["sysadmin_flag"], true);
    assert_eq!(
        api_send(&b, reqwest::Method::GET, users, hana3, None)
            .await
            .status(),
        200
    );
    let me = api_send(
        &b,
        reqwest::Method::GET,
        "/api/v2.0/users/current",
        ADMIN,
        None,
    )
    .await;
    let admin_id = me.json::<Value>().await.unwrap()["user_id"]
        .as_i64()
        .unwrap();
    let r = api_send(
        &b,
        reqwest::Method::DELETE,
        &format!("{users}/{admin_id}"),
        ADMIN,
        None,
    )
    .await;
    harbor_error(r, 403, "FORBIDDEN").await;
    assert_eq!(
        api_send(&b, reqwest::Method::DELETE, &location, ADMIN, None)
            .await
            .status(),
        200
    );
    harbor_error(
        api_send(&b, reqwest::Method::GET, &location, ADMIN, None).await,
        404,
        "NOT_FOUND",
    )
    .await;
    harbor_error(
        api_send(
            &b,
            reqwest::Method::GET,
            "/api/v2.0/users/current",
            hana3,
            None,
        )
        .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

/// Every `/api/v2.0` action on a private project, for every kind of caller: allowed or
/// refused as Harbor's roles say. Allowed actions answer their own status (some on purpose
/// on a target that does not exist or already exists, so that nothing changes); refused
/// ones 401 (anonymous) or 403/404 (signed in).
#[tokio::test]
async fn the_api_authorization_matrix_follows_harbors_roles() {
    let b = start();
    cli(&b, &["project", "create", "team"]);
    let admin_client = reqwest::Client::new();
    let r = admin_client
        .post(b.url("/v2/team/app/blobs/uploads/"))
        .basic_auth("admin", Some(ADMIN_PW))
        .query(&[("digest", sha256(b"matrix").as_str())])
        .body("matrix")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let roles = [
        ("pa", "projectAdmin"),
        ("ma", "maintainer"),
        ("de", "developer"),
        ("gu", "guest"),
        ("lg", "limitedGuest"),
    ];
    for (user, role) in roles {
        cli(&b, &["user", "create", user, "--password", "Matrix-pass-1"]);
        cli(&b, &["project", "member", "team", user, role]);
    }
    cli(
        &b,
        &["user", "create", "out", "--password", "Matrix-pass-1"],
    );
    cli(
        &b,
        &[
            "robot",
            "create",
            "dup",
            "--project",
            "team",
            "--access",
            "repository:pull",
        ],
    );
    let (_, robot_secret) = b.create_robot(&[
        "rb",
        "--project",
        "team",
        "--access",
        "repository:pull",
        "--access",
        "repository:push",
    ]);

    let missing = format!("sha256:{}", "0".repeat(64));
    cli(
        &b,
        &["user", "create", "other", "--password", "Matrix-pass-1"],
    );
    let users: Value = api_send(&b, reqwest::Method::GET, "/api/v2.0/users", ADMIN, None)
        .await
        .json()
        .await
        .unwrap();
    let other_id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "other")
        .expect("other is listed")["user_id"]
        .as_i64()
        .unwrap();
    let member = json!({"role_id": 3, "member_user": {"username": "de"}});
    let dup_robot = json!({"name": "dup", "level": "project", "duration": -1,
        "permissions": [{"kind": "project", "namespace": "team",
            "access": [{"resource": "repository", "action": "pull"}]}]});
    // (action, method, path, body, status when allowed, who may: admin pa ma de gu lg out anon robot)
    type Row<'a> = (
        &'a str,
        reqwest::Method,
        String,
        Option<Value>,
        u16,
        [bool; 9],
    );
    use reqwest::Method as M;
    let p = "/api/v2.0/projects/team";
    let rows: Vec<Row> = vec![
        (
            "read project",
            M::GET,
            p.into(),
            None,
            200,
            [true, true, true, true, true, true, false, false, false],
        ),
        (
            "update project",
            M::PUT,
            p.into(),
            Some(json!({})),
            200,
            [true, true, false, false, false, false, false, false, false],
        ),
        (
            "delete non-empty project",
            M::DELETE,
            p.into(),
            None,
            412,
            [true, true, false, false, false, false, false, false, false],
        ),
        (
            "list members",
            M::GET,
            format!("{p}/members"),
            None,
            200,
            [true, true, true, true, true, false, false, false, false],
        ),
        (
            "add member",
            M::POST,
            format!("{p}/members"),
            Some(member),
            409,
            [true, true, false, false, false, false, false, false, false],
        ),
        (
            "list repositories",
            M::GET,
            format!("{p}/repositories"),
            None,
            200,
            [true, true, true, true, true, true, false, false, false],
        ),
        (
            "list artifacts",
            M::GET,
            format!("{p}/repositories/app/artifacts"),
            None,
            200,
            [true, true, true, true, true, true, false, false, false],
        ),
        (
            "delete artifact",
            M::DELETE,
            format!("{p}/repositories/app/artifacts/{missing}"),
            None,
            404,
            [true, true, true, false, false, false, false, false, false],
        ),
        (
            "delete tag",
            M::DELETE,
            format!("{p}/repositories/app/artifacts/{missing}/tags/nope"),
            None,
            404,
            [true, true, true, false, false, false, false, false, false],
        ),
        (
            "create project robot",
            M::POST,
            "/api/v2.0/robots".into(),
            Some(dup_robot),
            409,
            [true, true, false, false, false, false, false, false, false],
        ),
        (
            "list users",
            M::GET,
            "/api/v2.0/users".into(),
            None,
            200,
            [true, false, false, false, false, false, false, false, false],
        ),
        (
            "create project",
            M::POST,
            "/api/v2.0/projects".into(),
            Some(json!({"project_name": "team"})),
            409,
            [true, false, false, false, false, false, false, false, false],
        ),
        // Another user's account: admins only (asked with values refused as bad input, so
        // nothing changes).
        (
            "set another user's CLI secret",
            M::PUT,
            format!("/api/v2.0/users/{other_id}/cli_secret"),
            Some(json!({"secret": "weak"})),
            400,
            [true, false, false, false, false, false, false, false, false],
        ),
        (
            "re-link another user's identity",
            M::PUT,
            format!("/api/v2.0/users/{other_id}/oidc_identity"),
            Some(json!({"issuer": "http://idp.test", "subject": ""})),
            400,
            [true, false, false, false, false, false, false, false, false],
        ),
    ];
    let callers: [(&str, Option<(&str, &str)>); 9] = [
        ("admin", ADMIN),
        ("projectAdmin", Some(("pa", "Matrix-pass-1"))),
        ("maintainer", Some(("ma", "Matrix-pass-1"))),
        ("developer", Some(("de", "Matrix-pass-1"))),
        ("guest", Some(("gu", "Matrix-pass-1"))),
        ("limitedGuest", Some(("lg", "Matrix-pass-1"))),
        ("non-member", Some(("out", "Matrix-pass-1"))),
        ("anonymous", None),
        (
            "project robot",
            Some(("robot$team+rb", robot_secret.as_str())),
        ),
    ];
    for (action, method, path, body, ok, allowed) in rows {
        for ((who, creds), may) in callers.iter().zip(allowed) {
            let status = api_send(&b, method.clone(), &path, *creds, body.clone())
                .await
                .status()
                .as_u16();
            if may {
                assert_eq!(status, ok, "{who} may {action}");
            } else if creds.is_none() {
                assert_eq!(status, 401, "{who} may not {action}");
            } else {
                assert!(
                    matches!(status, 403 | 404),
                    "{who} may not {action}: {status}"
                );
            }
        }
    }
    // Nothing the refusals touched changed.
    let listed = cli(&b, &["project", "list"]);
    assert_eq!(listed, "library (public)\nteam (private)\n");
}
