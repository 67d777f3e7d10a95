//! The built-in accounts and token service (`auth.mode = "builtin"`), against the real
//! server over HTTP: secure by default, the token endpoint, Harbor's role matrix (through
//! the token endpoint's grants, over `/v2` with those tokens, and with Basic credentials
//! straight on `/v2`), robot accounts, projects, and real clients logging in.
//!
//! Accounts, projects and robots are set up with the admin CLI (`berth user|project|robot`)
//! on the server's own database while it runs, as an operator would.
//!
//! The real-client tests (skopeo, podman, oras, containerd) need the clients the test
//! command installs: run them with `scripts/test.sh --run cargo nextest run --test
//! auth_builtin`.

mod common;
use common::containers::*;
use common::*;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// `admin`'s password on the servers [`Berth::builtin`] starts.
const ADMIN_PASSWORD: &str = API_ADMIN_PW;

// ---- servers, the admin CLI, tokens ------------------------------------------------------

/// `berth ARGS` on the server's database (its data dir, or its PostgreSQL URL).
fn cli(b: &Berth, args: &[&str]) -> Output {
    b.cli(args)
}

/// `berth ARGS`, which must succeed; returns its stdout.
#[track_caller]
fn cli_ok(b: &Berth, args: &[&str]) -> String {
    b.cli_ok(args)
}

fn user(b: &Berth, name: &str, password: &str) {
    cli_ok(b, &["user", "create", name, "--password", password]);
}

/// `GET /service/token` with `creds` (Basic) or none, asking for `scopes`.
async fn token_response(
    b: &Berth,
    creds: Option<(&str, &str)>,
    scopes: &[&str],
) -> reqwest::Response {
    let mut query: Vec<(&str, &str)> = vec![("service", "berth")];
    query.extend(scopes.iter().map(|s| ("scope", *s)));
    let mut rq = client().get(b.url("/service/token")).query(&query);
    if let Some((u, p)) = creds {
        rq = rq.basic_auth(u, Some(p));
    }
    rq.send().await.expect("GET /service/token")
}

/// A token the endpoint must issue; returns it and its decoded claims.
async fn token(b: &Berth, creds: Option<(&str, &str)>, scopes: &[&str]) -> (String, Value) {
    let r = token_response(b, creds, scopes).await;
    let status = r.status();
    let text = r.text().await.expect("token body");
    assert_eq!(status, 200, "token for {creds:?} {scopes:?}: {text}");
    let v: Value = serde_json::from_str(&text).expect("token JSON");
    let t = v["token"].as_str().expect("token field").to_string();
    let c = claims(&t);
    (t, c)
}

/// A JWT's payload (no signature check: the server checks those).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .expect("JWT payload is base64url");
    serde_json::from_slice(&bytes).expect("JWT payload is JSON")
}

/// A JWT's header.
fn jwt_header(jwt: &str) -> Value {
    let head = jwt.split('.').next().expect("JWT header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .expect("JWT header is base64url");
    serde_json::from_slice(&bytes).expect("JWT header is JSON")
}

/// The actions a token's `access` claim grants on `kind:name`, in the claim's order.
fn granted(claims: &Value, kind: &str, name: &str) -> Vec<String> {
    claims["access"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["type"] == kind && e["name"] == name)
                .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn with_auth(value: String) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        value.parse().expect("header value"),
    );
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .expect("http client")
}

fn bearer(token: &str) -> reqwest::Client {
    with_auth(format!("Bearer {token}"))
}

fn basic(user: &str, password: &str) -> reqwest::Client {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    with_auth(format!("Basic {encoded}"))
}

fn admin() -> reqwest::Client {
    basic("admin", ADMIN_PASSWORD)
}

/// Asserts a refused `/v2` answer: 401 UNAUTHORIZED with a Bearer challenge naming this
/// registry's realm and service, and containing each of `challenge_has`.
#[track_caller]
fn assert_challenge(b: &Berth, r: &reqwest::Response, challenge_has: &[&str], context: &str) {
    assert_eq!(r.status(), 401, "{context}: status");
    let c = header_str(r, "www-authenticate");
    let want = format!(
        "Bearer realm=\"http://{}/service/token\",service=\"berth\"",
        b.host()
    );
    assert!(
        c.starts_with(&want),
        "{context}: challenge {c:?}, want {want}..."
    );
    for needle in challenge_has {
        assert!(
            c.contains(needle),
            "{context}: challenge {c:?} lacks {needle}"
        );
    }
}

/// A token endpoint error: `status` and the error `code`; returns the body.
async fn token_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status(), status, "token endpoint status");
    assert!(
        header_str(&r, "content-type").starts_with("application/json"),
        "token endpoint error Content-Type {}",
        header_str(&r, "content-type")
    );
    let v: Value = r.json().await.expect("token error JSON");
    assert_eq!(v["errors"][0]["code"], code, "{v}");
    v
}

/// Lines of the server log that record a served `/service/token` request.
fn token_requests(b: &Berth) -> usize {
    b.log_text()
        .lines()
        .filter(|l| l.contains("path=/service/token") && l.contains("served"))
        .count()
}

// ---- 1. secure by default -----------------------------------------------------------------

#[tokio::test]
async fn v2_without_credentials_is_challenged_with_the_token_realm() {
    let b = Berth::builtin(&[]);
    let anon = client();
    let r = anon.get(b.url("/v2/")).send().await.expect("GET /v2/");
    assert_eq!(
        header_str(&r, "www-authenticate"),
        format!(
            "Bearer realm=\"http://{}/service/token\",service=\"berth\"",
            b.host()
        )
    );
    expect_error(r, 401, "UNAUTHORIZED").await;

    let r = anon
        .get(b.url("/v2/library/app/manifests/v1"))
        .send()
        .await
        .expect("GET manifest");
    assert_challenge(
        &b,
        &r,
        &[",scope=\"repository:library/app:pull\""],
        "manifest GET without a token",
    );
    expect_error(r, 401, "UNAUTHORIZED").await;

    let r = anon
        .post(b.url("/v2/library/app/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .expect("POST upload");
    assert_challenge(
        &b,
        &r,
        &[",scope=\"repository:library/app:pull,push\""],
        "upload without a token",
    );
    expect_error(r, 401, "UNAUTHORIZED").await;
    assert!(b.upload_files().is_empty(), "a refused upload left files");
    // The configured password is never written to the log.
    assert!(
        !b.log_text().contains(ADMIN_PASSWORD),
        "the log holds the admin password"
    );
}

#[tokio::test]
async fn admin_token_grants_push_on_library() {
    let b = Berth::builtin(&[]);
    let (t, c) = token(
        &b,
        Some(("admin", ADMIN_PASSWORD)),
        &["repository:library/app:pull,push"],
    )
    .await;
    assert_eq!(
        c["access"],
        json!([{"type": "repository", "name": "library/app", "actions": ["pull", "push"]}])
    );
    assert_eq!(c["sub"], "admin");
    let holder = bearer(&t);
    let (digest, bytes) = push_image(&holder, &b, "library/app", "v1", b"admin layer").await;
    let r = holder
        .get(b.url("/v2/library/app/manifests/v1"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("pull back");
    assert_eq!(r.status(), 200);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(r.bytes().await.expect("body").to_vec(), bytes);
}

#[tokio::test]
async fn anonymous_token_pulls_public_projects_only() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "secret"]);
    push_image(&admin(), &b, "library/app", "v1", b"public layer").await;
    push_image(&admin(), &b, "secret/app", "v1", b"private layer").await;

    let (t, c) = token(
        &b,
        None,
        &[
            "repository:library/app:pull,push,delete",
            "repository:secret/app:pull,push",
        ],
    )
    .await;
    assert_eq!(
        c["access"],
        json!([{"type": "repository", "name": "library/app", "actions": ["pull"]}]),
        "anonymous gets pull on the public project and nothing on the private one"
    );
    assert_eq!(c["sub"], "");
    let anon = bearer(&t);
    assert_eq!(manifest_status(&anon, &b, "library/app", "v1").await, 200);
    let r = anon
        .get(b.url("/v2/secret/app/manifests/v1"))
        .send()
        .await
        .expect("GET private manifest");
    assert_challenge(
        &b,
        &r,
        &[
            "scope=\"repository:secret/app:pull\"",
            "error=\"insufficient_scope\"",
        ],
        "anonymous token on a private project",
    );
    expect_error(r, 401, "UNAUTHORIZED").await;
    let r = anon
        .post(b.url(&format!(
            "/v2/library/app/blobs/uploads/?digest={}",
            sha256(b"anon")
        )))
        .body(b"anon".to_vec())
        .send()
        .await
        .expect("anonymous push");
    assert_challenge(&b, &r, &["error=\"insufficient_scope\""], "anonymous push");
    assert_eq!(
        blob_status(&admin(), &b, "library/app", &sha256(b"anon")).await,
        404
    );
}

/// The password the first start generated, from its log.
fn generated_password(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        l.split("generated password ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(String::from)
    })
}

#[tokio::test]
async fn generated_admin_password_is_logged_once_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        data_dir: Some(dir.path().to_path_buf()),
        env: vec![("BERTH_AUTH__MODE".into(), "builtin".into())],
        ..Options::default()
    };
    let mut b = Berth::start_with(options.clone());
    let log = b.log_text();
    let password = generated_password(&log)
        .unwrap_or_else(|| panic!("no generated password in the first start's log:\n{log}"));
    assert!(
        password.len() >= 16,
        "a short generated password: {password:?}"
    );
    assert_eq!(
        log.matches(password.as_str()).count(),
        1,
        "the password is logged exactly once"
    );
    let (_, c) = token(
        &b,
        Some(("admin", &password)),
        &["repository:library/x:push"],
    )
    .await;
    assert_eq!(granted(&c, "repository", "library/x"), ["push"]);
    assert!(b.terminate().success());

    let b2 = Berth::start_with(options);
    let log2 = b2.log_text();
    assert!(
        !log2.contains(&password) && generated_password(&log2).is_none(),
        "the restart logged a password again:\n{log2}"
    );
    let (_, c) = token(
        &b2,
        Some(("admin", &password)),
        &["repository:library/x:pull"],
    )
    .await;
    assert_eq!(granted(&c, "repository", "library/x"), ["pull"]);
    token_error(
        token_response(&b2, Some(("admin", ADMIN_PASSWORD)), &[]).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

// ---- 2. the token endpoint ------------------------------------------------------------------

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let b = Berth::builtin(&[]);
    user(&b, "alice", "alice-password-1");
    let wrong = token_error(
        token_response(&b, Some(("alice", "not-her-password")), &[]).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let unknown = token_error(
        token_response(&b, Some(("nobody", "not-her-password")), &[]).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_eq!(wrong, unknown, "the two refusals differ");
    let message = wrong["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("alice") && !message.contains("nobody"),
        "{message}"
    );
    // A robot name that does not exist: the same answer again.
    let robot = token_error(
        token_response(&b, Some(("robot$library+none", "not-her-password")), &[]).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_eq!(robot, wrong);
    // The right password works.
    token(&b, Some(("alice", "alice-password-1")), &[]).await;
}

#[tokio::test]
async fn a_bearer_token_is_refused_at_the_token_endpoint() {
    let b = Berth::builtin(&[]);
    let (t, _) = token(
        &b,
        Some(("admin", ADMIN_PASSWORD)),
        &["repository:library/a:pull"],
    )
    .await;
    let r = bearer(&t)
        .get(b.url("/service/token?service=berth&scope=repository:library/a:pull,push"))
        .send()
        .await
        .expect("token with a bearer");
    token_error(r, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_malformed_scope_is_400() {
    let b = Berth::builtin(&[]);
    for bad in [
        "repository",
        "repository:library",
        ":library/a:pull",
        "repository::pull",
    ] {
        let r = token_response(&b, Some(("admin", ADMIN_PASSWORD)), &[bad]).await;
        let v = token_error(r, 400, "INVALID_SCOPE").await;
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(bad),
            "the message does not name {bad:?}: {v}"
        );
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test]
async fn the_token_response_has_token_access_token_expires_in_issued_at() {
    let b = Berth::builtin(&[]);
    let r = token_response(
        &b,
        Some(("admin", ADMIN_PASSWORD)),
        &["repository:library/a:pull"],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(header_str(&r, "content-type").starts_with("application/json"));
    let v: Value = r.json().await.expect("JSON");
    let t = v["token"].as_str().expect("token");
    assert_eq!(v["access_token"], t, "access_token is the token");
    let expires_in = v["expires_in"].as_u64().expect("expires_in is a number");
    assert!(expires_in >= 60, "expires_in {expires_in}");
    let issued_at = v["issued_at"].as_str().expect("issued_at");
    assert!(
        is_rfc3339_utc(issued_at),
        "issued_at {issued_at:?} is not RFC 3339"
    );
    let c = claims(t);
    assert_eq!(
        c["exp"].as_u64().unwrap_or(0) - c["iat"].as_u64().unwrap_or(0),
        expires_in
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        c["iat"].as_u64().unwrap_or(0).abs_diff(now) < 60,
        "iat {}",
        c["iat"]
    );
    assert_eq!(c["aud"], "berth");
    assert_eq!(c["iss"], "berth-token-service");
    assert_eq!(c["sub"], "admin");
    let h = jwt_header(t);
    assert_eq!(h["alg"], "ES256");
    assert!(
        h["kid"].as_str().is_some_and(|k| !k.is_empty()),
        "no kid: {h}"
    );
}

#[tokio::test]
async fn the_catalog_scope_lists_everything_for_admin_and_public_projects_for_anonymous() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "secret"]);
    push_image(&admin(), &b, "library/app", "v1", b"cat one").await;
    push_image(&admin(), &b, "secret/app", "v1", b"cat two").await;

    let (t, c) = token(&b, Some(("admin", ADMIN_PASSWORD)), &["registry:catalog:*"]).await;
    assert_eq!(
        c["access"],
        json!([{"type": "registry", "name": "catalog", "actions": ["*"]}])
    );
    assert_eq!(
        catalog_of(&bearer(&t), &b).await,
        ["library/app", "secret/app"]
    );

    let (t, c) = token(&b, None, &["registry:catalog:*"]).await;
    assert_eq!(
        granted(&c, "registry", "catalog"),
        Vec::<String>::new(),
        "anonymous may not list the whole catalog: {c}"
    );
    assert_eq!(granted(&c, "project", "library"), ["pull"], "{c}");
    assert_eq!(
        granted(&c, "project", "secret"),
        Vec::<String>::new(),
        "{c}"
    );
    assert_eq!(catalog_of(&bearer(&t), &b).await, ["library/app"]);
}

// ---- 3. roles ------------------------------------------------------------------------------

/// One row of Harbor's matrix as `src/auth/roles.rs` implements it: what a principal may do
/// in a private and in a public project, as `[pull, push, delete]`. Listing tags, the
/// referrers and the catalog entry go with pull.
struct Row {
    who: &'static str,
    private: [bool; 3],
    public: [bool; 3],
}

const T: bool = true;
const F: bool = false;

const MATRIX: &[Row] = &[
    Row {
        who: "limitedGuest",
        private: [T, F, F],
        public: [T, F, F],
    },
    Row {
        who: "guest",
        private: [T, F, F],
        public: [T, F, F],
    },
    Row {
        who: "developer",
        private: [T, T, F],
        public: [T, T, F],
    },
    Row {
        who: "maintainer",
        private: [T, T, T],
        public: [T, T, T],
    },
    Row {
        who: "projectAdmin",
        private: [T, T, T],
        public: [T, T, T],
    },
    Row {
        who: "nonMember",
        private: [F, F, F],
        public: [T, F, F],
    },
    Row {
        who: "sysAdmin",
        private: [T, T, T],
        public: [T, T, T],
    },
    Row {
        who: "anonymous",
        private: [F, F, F],
        public: [T, F, F],
    },
];

const ROLES: [&str; 5] = [
    "limitedGuest",
    "guest",
    "developer",
    "maintainer",
    "projectAdmin",
];

fn password_of(who: &str) -> String {
    format!("pw-{}-0001", who.to_lowercase())
}

fn user_of(who: &str) -> String {
    match who {
        "sysAdmin" => "admin".into(),
        _ => format!("u-{}", who.to_lowercase()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    /// A token from the token endpoint, sent as Bearer.
    Token,
    /// Basic credentials straight on `/v2`.
    Basic,
}

#[tokio::test]
async fn role_matrix_holds_at_the_token_endpoint_over_v2_with_tokens_and_with_basic() {
    let b = Berth::builtin(&[]);
    let projects = [("priv", false), ("pubp", true)];
    cli_ok(&b, &["project", "create", "priv"]);
    cli_ok(&b, &["project", "create", "pubp", "--public"]);
    for role in ROLES {
        user(&b, &user_of(role), &password_of(role));
        for (p, _) in projects {
            cli_ok(&b, &["project", "member", p, &user_of(role), role]);
        }
    }
    user(&b, &user_of("nonMember"), &password_of("nonMember"));

    let seed = admin();
    let mut subject = std::collections::HashMap::new();
    for (p, _) in projects {
        let repo = format!("{p}/app");
        let (d, _) = push_image(&seed, &b, &repo, "v1", format!("base {p}").as_bytes()).await;
        subject.insert(p, d);
    }

    let mut failures: Vec<String> = Vec::new();
    let mut expect = |cond: bool, what: String| {
        if !cond {
            failures.push(what);
        }
    };

    for row in MATRIX {
        let creds = (row.who != "anonymous").then(|| {
            let pw = if row.who == "sysAdmin" {
                ADMIN_PASSWORD.to_string()
            } else {
                password_of(row.who)
            };
            (user_of(row.who), pw)
        });
        let creds_ref = creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let scopes: Vec<String> = projects
            .iter()
            .map(|(p, _)| format!("repository:{p}/app:pull,push,delete"))
            .chain(std::iter::once("registry:catalog:*".to_string()))
            .collect();
        let scope_refs: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let (t, c) = token(&b, creds_ref, &scope_refs).await;

        let mut vias = vec![(Via::Token, bearer(&t))];
        if let Some((u, p)) = &creds {
            vias.push((Via::Basic, basic(u, p)));
        }
        for (p, public) in projects {
            let repo = format!("{p}/app");
            let [pull, push, delete] = if public { row.public } else { row.private };
            let case = |what: &str| {
                format!(
                    "{} on {} project {p}: {what}",
                    row.who,
                    if public { "public" } else { "private" }
                )
            };

            // The token endpoint grants exactly what the matrix allows.
            let want: Vec<&str> = [("pull", pull), ("push", push), ("delete", delete)]
                .iter()
                .filter(|(_, ok)| *ok)
                .map(|(a, _)| *a)
                .collect();
            let got = granted(&c, "repository", &repo);
            expect(
                got == want,
                case(&format!("token grants {got:?}, want {want:?}")),
            );
            let lists = row.who == "sysAdmin" && granted(&c, "registry", "catalog") == ["*"]
                || granted(&c, "project", p) == ["pull"];
            expect(
                lists == pull,
                case(&format!("catalog grant in {}", c["access"])),
            );

            for (via, cl) in &vias {
                let case = |what: &str| case(&format!("[{via:?}] {what}"));
                let allowed = |ok: bool, status: u16, want_ok: u16| {
                    if ok { status == want_ok } else { status == 401 }
                };
                // pull, tags, referrers
                for (what, path) in [
                    ("pull a manifest", format!("/v2/{repo}/manifests/v1")),
                    ("list tags", format!("/v2/{repo}/tags/list")),
                    (
                        "list referrers",
                        format!("/v2/{repo}/referrers/{}", subject[p]),
                    ),
                ] {
                    let r = cl
                        .get(b.url(&path))
                        .header("accept", OCI_MANIFEST)
                        .send()
                        .await
                        .expect("GET");
                    let s = r.status().as_u16();
                    expect(allowed(pull, s, 200), case(&format!("{what}: {s}")));
                    if !pull && s == 401 {
                        let ch = header_str(&r, "www-authenticate");
                        expect(
                            ch.contains("error=\"insufficient_scope\"")
                                && ch.contains(&format!("scope=\"repository:{repo}:pull\"")),
                            case(&format!("{what}: challenge {ch:?}")),
                        );
                    }
                }
                // catalog
                let r = cl.get(b.url("/v2/_catalog")).send().await.expect("catalog");
                let s = r.status().as_u16();
                let listed: Value = r.json().await.unwrap_or(Value::Null);
                let shows = listed["repositories"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == repo.as_str()));
                expect(
                    s == 200 && shows == pull,
                    case(&format!("catalog {s} {listed}: shows {repo} = {shows}")),
                );
                // push a blob
                let blob = format!("{}-{p}-{via:?}", row.who).into_bytes();
                let digest = sha256(&blob);
                let r = cl
                    .post(b.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
                    .body(blob.clone())
                    .send()
                    .await
                    .expect("push blob");
                let s = r.status().as_u16();
                expect(allowed(push, s, 201), case(&format!("push a blob: {s}")));
                if !push && s == 401 {
                    let ch = header_str(&r, "www-authenticate");
                    expect(
                        ch.contains("error=\"insufficient_scope\""),
                        case(&format!("push: challenge {ch:?}")),
                    );
                }
                let stored = blob_status(&seed, &b, &repo, &digest).await;
                expect(
                    stored == if push { 200 } else { 404 },
                    case(&format!("after the push the blob answers {stored}")),
                );
                // delete a manifest (one of its own, pushed by admin)
                let (victim, _) = push_image(
                    &seed,
                    &b,
                    &repo,
                    &format!("del-{}-{via:?}", row.who.to_lowercase()),
                    format!("victim {} {p} {via:?}", row.who).as_bytes(),
                )
                .await;
                let r = cl
                    .delete(b.url(&format!("/v2/{repo}/manifests/{victim}")))
                    .send()
                    .await
                    .expect("delete manifest");
                let s = r.status().as_u16();
                expect(
                    allowed(delete, s, 202),
                    case(&format!("delete a manifest: {s}")),
                );
                let left = manifest_status(&seed, &b, &repo, &victim).await;
                expect(
                    left == if delete { 404 } else { 200 },
                    case(&format!("after the delete the manifest answers {left}")),
                );
            }
        }
    }
    // Without any credentials `/v2` always challenges (a client then gets a token), with
    // no `error`, public project or not.
    let anon = client();
    for (p, _) in projects {
        let r = anon
            .get(b.url(&format!("/v2/{p}/app/manifests/v1")))
            .send()
            .await
            .expect("GET");
        let ch = header_str(&r, "www-authenticate");
        expect(
            r.status() == 401 && !ch.contains("error="),
            format!("no credentials on {p}: {} {ch:?}", r.status()),
        );
    }
    assert!(
        failures.is_empty(),
        "{} matrix cells disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- 4. robots -----------------------------------------------------------------------------

#[tokio::test]
async fn a_project_robot_pushes_and_pulls_in_its_project_and_nothing_elsewhere() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "team"]);
    cli_ok(&b, &["project", "create", "other"]);
    push_image(&admin(), &b, "other/app", "v1", b"other").await;
    let (name, secret) = b.create_robot(&[
        "ci",
        "--project",
        "team",
        "--access",
        "repository:pull",
        "--access",
        "repository:push",
    ]);
    assert_eq!(name, "robot$team+ci");

    let (t, c) = token(
        &b,
        Some((&name, &secret)),
        &[
            "repository:team/app:pull,push,delete",
            "repository:other/app:pull,push",
            "repository:library/app:pull,push",
        ],
    )
    .await;
    assert_eq!(c["sub"], name.as_str());
    assert_eq!(granted(&c, "repository", "team/app"), ["pull", "push"]);
    assert_eq!(granted(&c, "repository", "other/app"), Vec::<String>::new());
    assert_eq!(
        granted(&c, "repository", "library/app"),
        ["pull"],
        "library is public"
    );
    let holder = bearer(&t);
    let (digest, _) = push_image(&holder, &b, "team/app", "v1", b"robot layer").await;
    assert_eq!(manifest_status(&holder, &b, "team/app", &digest).await, 200);
    let r = holder
        .get(b.url("/v2/other/app/manifests/v1"))
        .send()
        .await
        .expect("GET other");
    assert_challenge(
        &b,
        &r,
        &["error=\"insufficient_scope\""],
        "robot token on another project",
    );

    // Basic on /v2 with the robot's secret: the same.
    let direct = basic(&name, &secret);
    push_image(&direct, &b, "team/app", "v2", b"robot basic layer").await;
    assert_eq!(manifest_status(&direct, &b, "team/app", "v2").await, 200);
    let r = direct
        .post(b.url(&format!(
            "/v2/other/app/blobs/uploads/?digest={}",
            sha256(b"x")
        )))
        .body(b"x".to_vec())
        .send()
        .await
        .expect("push elsewhere");
    assert_challenge(
        &b,
        &r,
        &["error=\"insufficient_scope\""],
        "robot Basic push elsewhere",
    );
    assert_eq!(
        blob_status(&admin(), &b, "other/app", &sha256(b"x")).await,
        404
    );
    assert_eq!(manifest_status(&direct, &b, "other/app", "v1").await, 401);
}

#[tokio::test]
async fn a_system_robot_with_every_namespace_pulls_everywhere() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "one"]);
    cli_ok(&b, &["project", "create", "two"]);
    push_image(&admin(), &b, "one/app", "v1", b"one").await;
    push_image(&admin(), &b, "two/app", "v1", b"two").await;
    let (name, secret) =
        b.create_robot(&["reader", "--namespace", "*", "--access", "repository:pull"]);
    assert_eq!(name, "robot$reader");
    let (t, c) = token(
        &b,
        Some((&name, &secret)),
        &[
            "repository:one/app:pull,push",
            "repository:two/app:pull,delete",
        ],
    )
    .await;
    assert_eq!(granted(&c, "repository", "one/app"), ["pull"]);
    assert_eq!(granted(&c, "repository", "two/app"), ["pull"]);
    for cl in [bearer(&t), basic(&name, &secret)] {
        assert_eq!(manifest_status(&cl, &b, "one/app", "v1").await, 200);
        assert_eq!(manifest_status(&cl, &b, "two/app", "v1").await, 200);
        let r = cl
            .post(b.url(&format!(
                "/v2/one/app/blobs/uploads/?digest={}",
                sha256(b"r")
            )))
            .body(b"r".to_vec())
            .send()
            .await
            .expect("push");
        assert_eq!(r.status(), 401, "a pull-only system robot pushed");
    }
}

/// Whether the token endpoint accepts `name`/`secret`.
async fn accepted(b: &Berth, name: &str, secret: &str) -> bool {
    let r = token_response(b, Some((name, secret)), &["repository:team/app:pull"]).await;
    match r.status().as_u16() {
        200 => true,
        401 => {
            token_error(r, 401, "UNAUTHORIZED").await;
            false
        }
        s => panic!("token endpoint answered {s}"),
    }
}

fn team_robot(b: &Berth, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![name, "--project", "team", "--access", "repository:pull"];
    args.extend_from_slice(extra);
    b.create_robot(&args)
}

#[tokio::test]
async fn a_refreshed_robot_secret_stops_at_the_token_endpoint_at_once() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "team"]);
    let (name, old) = team_robot(&b, "pull", &[]);
    assert!(accepted(&b, &name, &old).await);
    let new = printed(&cli_ok(&b, &["robot", "refresh", &name]), "secret");
    assert_ne!(new, old);
    assert!(
        !accepted(&b, &name, &old).await,
        "the old secret still works"
    );
    assert!(
        accepted(&b, &name, &new).await,
        "the new secret does not work"
    );
}

#[tokio::test]
async fn a_disabled_robot_is_refused_and_works_again_when_enabled() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "team"]);
    let (name, secret) = team_robot(&b, "pull", &[]);
    assert!(accepted(&b, &name, &secret).await);
    cli_ok(&b, &["robot", "disable", &name]);
    assert!(
        !accepted(&b, &name, &secret).await,
        "a disabled robot got a token"
    );
    cli_ok(&b, &["robot", "enable", &name]);
    assert!(
        accepted(&b, &name, &secret).await,
        "an enabled robot got no token"
    );
}

#[tokio::test]
async fn an_expired_robot_is_refused() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "team"]);
    let (name, secret) = team_robot(&b, "brief", &["--days", "0"]);
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        !accepted(&b, &name, &secret).await,
        "an expired robot got a token"
    );
    let r = basic(&name, &secret)
        .get(b.url("/v2/"))
        .send()
        .await
        .expect("GET /v2/");
    assert_challenge(
        &b,
        &r,
        &["error=\"invalid_token\""],
        "expired robot Basic on /v2",
    );
}

#[tokio::test]
async fn a_deleted_robot_is_refused() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "team"]);
    let (name, secret) = team_robot(&b, "gone", &[]);
    assert!(accepted(&b, &name, &secret).await);
    cli_ok(&b, &["robot", "delete", &name]);
    assert!(
        !accepted(&b, &name, &secret).await,
        "a deleted robot got a token"
    );
}

#[tokio::test]
async fn basic_with_a_refreshed_secret_stops_within_the_credential_cache_lifetime() {
    let b = Berth::builtin(&[("BERTH_AUTH__SERVICE__CREDENTIAL_CACHE_SECONDS", "1")]);
    cli_ok(&b, &["project", "create", "team"]);
    let (name, old) = team_robot(&b, "cached", &[]);
    let r = basic(&name, &old)
        .get(b.url("/v2/"))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(r.status(), 200, "the robot's secret on /v2");
    let new = printed(&cli_ok(&b, &["robot", "refresh", &name]), "secret");
    std::thread::sleep(Duration::from_millis(1500));
    let r = basic(&name, &old)
        .get(b.url("/v2/"))
        .send()
        .await
        .expect("GET /v2/");
    assert_challenge(
        &b,
        &r,
        &["error=\"invalid_token\""],
        "old secret after the cache lifetime",
    );
    expect_error(r, 401, "UNAUTHORIZED").await;
    let r = basic(&name, &new)
        .get(b.url("/v2/"))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(r.status(), 200, "the new secret on /v2");
}

// ---- 5. projects ---------------------------------------------------------------------------

#[tokio::test]
async fn a_push_into_a_missing_project_is_name_unknown_naming_it() {
    let b = Berth::builtin(&[]);
    let a = admin();
    let layer = b"orphan layer";
    let r = a
        .post(b.url(&format!(
            "/v2/nosuch/app/blobs/uploads/?digest={}",
            sha256(layer)
        )))
        .body(layer.to_vec())
        .send()
        .await
        .expect("push blob");
    let message = expect_error(r, 404, "NAME_UNKNOWN").await;
    assert!(
        message.contains("nosuch"),
        "the message does not name the project: {message}"
    );
    let r = put_manifest_as(
        &a,
        &b,
        "nosuch/app",
        "v1",
        OCI_MANIFEST,
        &image_over_layer(layer),
    )
    .await;
    let message = expect_error(r, 404, "NAME_UNKNOWN").await;
    assert!(message.contains("nosuch"), "{message}");
    assert_eq!(blob_status(&a, &b, "nosuch/app", &sha256(layer)).await, 404);
    assert!(!b.blob_path(&sha256(layer)).exists(), "the blob was stored");
    assert!(catalog_of(&a, &b).await.is_empty());
}

#[tokio::test]
async fn deleting_a_project_that_holds_repositories_is_refused() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "full"]);
    push_image(&admin(), &b, "full/app", "v1", b"keep me").await;
    let out = cli(&b, &["project", "delete", "full"]);
    assert!(
        !out.status.success(),
        "deleting a project with repositories succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("full") && err.contains("--with-repositories"),
        "the refusal does not say why or what to do: {err}"
    );
    assert_eq!(catalog_of(&admin(), &b).await, ["full/app"]);
    assert_eq!(manifest_status(&admin(), &b, "full/app", "v1").await, 200);
}

#[tokio::test]
async fn deleting_a_project_with_its_repositories_removes_them() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "doomed"]);
    push_image(&admin(), &b, "doomed/a", "v1", b"a").await;
    push_image(&admin(), &b, "doomed/b", "v1", b"b").await;
    push_image(&admin(), &b, "library/keep", "v1", b"k").await;
    let out = cli_ok(&b, &["project", "delete", "doomed", "--with-repositories"]);
    assert!(
        out.contains("doomed/a") && out.contains("doomed/b"),
        "{out}"
    );
    assert_eq!(catalog_of(&admin(), &b).await, ["library/keep"]);
    // The project is gone: pushing into it again is refused.
    let r = admin()
        .post(b.url(&format!(
            "/v2/doomed/a/blobs/uploads/?digest={}",
            sha256(b"again")
        )))
        .body(b"again".to_vec())
        .send()
        .await
        .expect("push");
    expect_error(r, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn making_a_project_public_lets_anonymous_pull() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "shy"]);
    push_image(&admin(), &b, "shy/app", "v1", b"shy").await;
    let (t, c) = token(&b, None, &["repository:shy/app:pull"]).await;
    assert_eq!(granted(&c, "repository", "shy/app"), Vec::<String>::new());
    assert_eq!(manifest_status(&bearer(&t), &b, "shy/app", "v1").await, 401);

    cli_ok(&b, &["project", "visibility", "shy", "public"]);
    // The server re-reads the public projects every few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let t = loop {
        let (t, c) = token(&b, None, &["repository:shy/app:pull,push"]).await;
        if !granted(&c, "repository", "shy/app").is_empty() {
            assert_eq!(granted(&c, "repository", "shy/app"), ["pull"]);
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "anonymous never got pull on shy after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(manifest_status(&bearer(&t), &b, "shy/app", "v1").await, 200);
}

// ---- 6. real clients ----------------------------------------------------------------------

/// Writes an OCI layout at `dir` holding `tag`: an image of `layers` real gzipped tar
/// layers (one file each, with `seed` in it). Returns the manifest digest.
fn write_layout(dir: &Path, tag: &str, layers: usize, seed: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).expect("write blob");
        d
    };
    let work = tempfile::tempdir().expect("temp dir");
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let root = work.path().join(format!("l{i}"));
        std::fs::create_dir_all(&root).expect("layer dir");
        std::fs::write(
            root.join(format!("file{i}.txt")),
            format!("{seed} layer {i}\n"),
        )
        .expect("layer file");
        let tar = work.path().join(format!("l{i}.tar"));
        let ok = Command::new("tar")
            .args([
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "-cf",
            ])
            .arg(&tar)
            .arg("-C")
            .arg(&root)
            .arg(".")
            .status()
            .expect("run tar")
            .success();
        assert!(ok, "tar failed");
        let tar_bytes = std::fs::read(&tar).expect("read tar");
        diff_ids.push(sha256(&tar_bytes));
        let gz = Command::new("gzip")
            .args(["-n", "-c"])
            .arg(&tar)
            .output()
            .expect("run gzip");
        assert!(gz.status.success(), "gzip failed");
        let d = put(&gz.stdout);
        descriptors.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d,
            "size": gz.stdout.len(),
        }));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/file0.txt"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config JSON");
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    }))
    .expect("manifest JSON");
    let manifest_digest = put(&manifest);
    std::fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}")
        .expect("oci-layout");
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        }))
        .expect("index JSON"),
    )
    .expect("index.json");
    manifest_digest
}

#[tokio::test]
async fn skopeo_copies_into_library_and_back_out_with_credentials_asking_few_tokens() {
    let b = Berth::builtin(&[]);
    let c = Containers::new();
    let id = unique();
    let layout = c.path("layout");
    let digest = write_layout(&layout, "v1", 3, &id);
    let dest = format!("docker://{}/library/three-{id}:v1", b.host());
    let creds = format!("admin:{ADMIN_PASSWORD}");

    // Without credentials the push is refused and nothing is stored.
    let ran = run(c.cmd("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &dest,
    ]));
    assert!(
        !ran.success(),
        "an anonymous skopeo push into library succeeded"
    );
    assert!(
        ran.stderr.contains("unauthorized") || ran.stderr.contains("authentication"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        manifest_status(&admin(), &b, &format!("library/three-{id}"), "v1").await,
        404
    );

    let before = token_requests(&b);
    must(
        &b,
        c.cmd("skopeo").args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            "--digestfile",
            &c.p("pushed.digest"),
            &format!("oci:{}:v1", layout.display()),
            &dest,
        ]),
    );
    let asked = token_requests(&b) - before;
    let pushed = std::fs::read_to_string(c.path("pushed.digest")).expect("digest file");
    assert_eq!(pushed.trim(), digest);
    let r = admin()
        .get(b.url(&format!("/v2/library/three-{id}/manifests/v1")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET pushed");
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    // One token per scope, reused for every blob: not one per blob (3 layers + config).
    assert!(
        (1..=2).contains(&asked),
        "skopeo asked the token endpoint {asked} times to push a 3-layer image\n{}",
        b.log_text()
    );

    let back = c.path("back");
    must(
        &b,
        c.cmd("skopeo").args([
            "copy",
            "-q",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &dest,
            &format!("oci:{}:v1", back.display()),
        ]),
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).expect("index"))
            .expect("JSON");
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).expect("blobs") {
        let p = entry.expect("entry").path();
        let name = p.file_name().expect("name");
        assert_eq!(
            std::fs::read(&p).expect("blob"),
            std::fs::read(back.join("blobs/sha256").join(name)).expect("copied blob"),
            "blob {name:?} differs after the round trip"
        );
    }
}

#[tokio::test]
async fn podman_logs_in_pushes_and_pulls_as_a_user_and_as_a_robot() {
    let b = Berth::builtin(&[]);
    let c = Containers::new();
    let id = unique();
    cli_ok(&b, &["project", "create", "team"]);
    user(&b, "dev", "dev-password-01");
    cli_ok(&b, &["project", "member", "team", "dev", "developer"]);
    let (robot_name, robot_secret) = b.create_robot(&[
        "builder",
        "--project",
        "team",
        "--access",
        "repository:pull",
        "--access",
        "repository:push",
    ]);
    // A base image, pushed by admin with skopeo.
    let layout = c.path("layout");
    write_layout(&layout, "v1", 1, &id);
    let base = format!("{}/team/base-{id}:v1", b.host());
    must(
        &b,
        c.cmd("skopeo").args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("admin:{ADMIN_PASSWORD}"),
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{base}"),
        ]),
    );

    let auth = c.p("auth.json");
    for (who, password, tag) in [
        ("dev", "dev-password-01", "user"),
        (robot_name.as_str(), robot_secret.as_str(), "robot"),
    ] {
        // Not logged in: the private project refuses podman.
        let ran = run(c.cmd("podman").args([
            "pull",
            "-q",
            "--tls-verify=false",
            "--authfile",
            &auth,
            &base,
        ]));
        assert!(
            !ran.success(),
            "podman pulled from a private project without logging in"
        );
        assert!(
            ran.stderr.contains("unauthorized") || ran.stderr.contains("authentication required"),
            "{}",
            ran.stderr
        );

        must(
            &b,
            c.cmd("podman").args([
                "login",
                "--tls-verify=false",
                "--authfile",
                &auth,
                "-u",
                who,
                "-p",
                password,
                &b.host(),
            ]),
        );
        let saved = std::fs::read_to_string(&auth).expect("auth file");
        assert!(
            saved.contains(&b.host()),
            "podman login saved nothing: {saved}"
        );
        must(
            &b,
            c.cmd("podman").args([
                "pull",
                "-q",
                "--tls-verify=false",
                "--authfile",
                &auth,
                &base,
            ]),
        );
        let target = format!("{}/team/podman-{id}:{tag}", b.host());
        must(&b, c.cmd("podman").args(["tag", &base, &target]));
        must(
            &b,
            c.cmd("podman").args([
                "push",
                "-q",
                "--tls-verify=false",
                "--authfile",
                &auth,
                "--digestfile",
                &c.p("pushed.digest"),
                &target,
            ]),
        );
        let pushed = std::fs::read_to_string(c.path("pushed.digest")).expect("digest");
        assert_eq!(
            manifest_status(&admin(), &b, &format!("team/podman-{id}"), pushed.trim()).await,
            200,
            "{who}'s push is not in the registry"
        );
        must(&b, c.cmd("podman").args(["rmi", "-f", &target, &base]));
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
        let digest = must(
            &b,
            c.cmd("podman")
                .args(["image", "inspect", "--format", "{{.Digest}}", &target]),
        )
        .stdout;
        assert_eq!(digest.trim(), pushed.trim(), "{who} pulled another image");
        // Elsewhere it may do nothing: library accepts no push from it.
        let elsewhere = format!("{}/library/podman-{id}:{tag}", b.host());
        must(&b, c.cmd("podman").args(["tag", &target, &elsewhere]));
        let ran = run(c.cmd("podman").args([
            "push",
            "-q",
            "--tls-verify=false",
            "--authfile",
            &auth,
            &elsewhere,
        ]));
        assert!(!ran.success(), "{who} pushed into library");
        must(&b, c.cmd("podman").args(["rmi", "-f", &target, &elsewhere]));
        must(
            &b,
            c.cmd("podman")
                .args(["logout", "--authfile", &auth, &b.host()]),
        );
    }
}

#[tokio::test]
async fn oras_pushes_and_pulls_with_credentials() {
    let b = Berth::builtin(&[]);
    cli_ok(&b, &["project", "create", "arts"]);
    user(&b, "oras-user", "oras-password-1");
    cli_ok(&b, &["project", "member", "arts", "oras-user", "developer"]);
    let repo = format!("arts/oras-{}", unique());
    let home = tempfile::tempdir().expect("temp dir");
    let mut cmd = oras_script(home.path(), &b.host(), &repo);
    cmd.args(["--user", "oras-user:oras-password-1"])
        // oras-py's token backend keeps its first (pull) token and asks for another only
        // after a 403, while Berth, like distribution, answers a missing scope with 401
        // insufficient_scope (docs/testing-clients.md, recipe c); its basic backend sends
        // the credentials with every request, which /v2 accepts.
        .args(["--auth-backend", "basic"]);
    let ran = run(&mut cmd);
    assert!(
        ran.success(),
        "oras push with credentials failed\n{}",
        ran.describe()
    );
    let out = ran.stdout;
    let last = out.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(result["result"], "pass", "{out}");
    for k in ["subject", "signature", "sbom"] {
        let digest = result[k]["digest"].as_str().unwrap_or_default();
        assert_eq!(
            manifest_status(&admin(), &b, &repo, digest).await,
            200,
            "{k}"
        );
    }
    // Without credentials the script cannot push into the private project.
    let ran = run(&mut oras_script(
        home.path(),
        &b.host(),
        &format!("{repo}-anon"),
    ));
    assert!(
        !ran.success(),
        "oras pushed into a private project without credentials"
    );
    assert!(
        tags_of(&admin(), &b, &format!("{repo}-anon"))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn containerd_pulls_with_robot_credentials_like_a_pull_secret() {
    let b = Berth::builtin(&[]);
    let c = Containers::new();
    let id = unique();
    cli_ok(&b, &["project", "create", "prod"]);
    let layout = c.path("layout");
    let digest = write_layout(&layout, "v1", 2, &id);
    let image = format!("{}/prod/app-{id}:v1", b.host());
    must(
        &b,
        c.cmd("skopeo").args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("admin:{ADMIN_PASSWORD}"),
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{image}"),
        ]),
    );
    let (name, secret) = b.create_robot(&[
        "kubelet",
        "--project",
        "prod",
        "--access",
        "repository:pull",
    ]);
    let ctrd = Containerd::start();

    let ran = run(&mut ctrd.ctr(&["images", "pull", "--plain-http", &image]));
    assert!(
        !ran.success(),
        "containerd pulled from a private project without credentials"
    );
    // containerd gets an anonymous token (it grants nothing on a private project), and the
    // retry with it is refused for insufficient scope.
    assert!(
        ran.stderr.contains("pull access denied") && ran.stderr.contains("insufficient_scope"),
        "{}",
        ran.stderr
    );

    let user = format!("{name}:{secret}");
    must(
        &b,
        &mut ctrd.ctr(&["images", "pull", "--plain-http", "--user", &user, &image]),
    );
    let ls = must(&b, &mut ctrd.ctr(&["images", "ls"])).stdout;
    let row: Vec<&str> = ls
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&image.as_str()))
        .unwrap_or_else(|| panic!("{image} not in `ctr images ls`:\n{ls}"));
    assert_eq!(row.get(2), Some(&digest.as_str()));

    // A wrong secret is refused.
    let ran = run(&mut ctrd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        &format!("{name}:wrong-secret"),
        &format!("{}/prod/app-{id}:v1", b.host()),
    ]));
    assert!(!ran.success(), "containerd pulled with a wrong secret");

    // A person's CLI secret as the pull secret's password: set through Harbor's API; the
    // secret it replaced is refused.
    self::user(&b, "kube-user", "kube-user-pass-1");
    cli_ok(&b, &["project", "member", "prod", "kube-user", "guest"]);
    let id = api_user_id(&b, "kube-user").await;
    let path = format!("/api/v2.0/users/{id}/cli_secret");
    for secret in ["Kube-Cli-Secret-1", "Kube-Cli-Secret-2"] {
        let r = api_send(
            &b,
            reqwest::Method::PUT,
            &path,
            Some(("admin", ADMIN_PASSWORD)),
            Some(serde_json::json!({ "secret": secret })),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    must(
        &b,
        &mut ctrd.ctr(&[
            "images",
            "pull",
            "--plain-http",
            "--user",
            "kube-user:Kube-Cli-Secret-2",
            &image,
        ]),
    );
    let ran = run(&mut ctrd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--user",
        "kube-user:Kube-Cli-Secret-1",
        &image,
    ]));
    assert!(
        !ran.success(),
        "containerd pulled with a replaced CLI secret"
    );
}

/// A user's id, as the API lists it.
async fn api_user_id(b: &Berth, name: &str) -> i64 {
    let r = api_send(
        b,
        reqwest::Method::GET,
        &format!("/api/v2.0/users?q=username%3D~{name}"),
        Some(("admin", ADMIN_PASSWORD)),
        None,
    )
    .await;
    let users: serde_json::Value = r.json().await.expect("users JSON");
    users
        .as_array()
        .and_then(|u| u.iter().find(|u| u["username"] == name))
        .and_then(|u| u["user_id"].as_i64())
        .unwrap_or_else(|| panic!("{name} not listed: {users}"))
}

/// Harbor automation, with a client nobody here wrote (PyPI `harbor-api-client`, generated
/// from Harbor's own OpenAPI document): it creates a private project and a robot with push
/// permission; podman pushes with the robot's secret; the client lists the repository and
/// the artifact it now holds.
#[tokio::test]
async fn harbor_api_client_creates_a_project_and_a_robot_that_podman_pushes_with() {
    let b = Berth::builtin(&[]);
    let c = Containers::new();
    let id = unique();
    let python = std::env::var("BERTH_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/harbor_api.py");
    let url = format!("http://{}", b.host());
    let project = format!("auto{}", id.replace('-', ""));
    let out = must(
        &b,
        Command::new(&python).arg(&script).args([
            url.as_str(),
            ADMIN_PASSWORD,
            "setup",
            project.as_str(),
            "deployer",
        ]),
    )
    .stdout;
    let setup: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    let robot_name = setup["robot"].as_str().expect("robot name").to_string();
    let secret = setup["secret"].as_str().expect("robot secret").to_string();
    assert_eq!(robot_name, format!("robot${project}+deployer"));

    // podman pushes an image with the robot's secret (pulled in from a layout first).
    let layout = c.path("layout");
    write_layout(&layout, "v1", 2, &id);
    let image = format!("{}/{project}/app:1.0", b.host());
    must(
        &b,
        c.cmd("skopeo").args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("{robot_name}:{secret}"),
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{image}"),
        ]),
    );
    let auth = c.p("auth.json");
    must(
        &b,
        c.cmd("podman").args([
            "login",
            "--tls-verify=false",
            "--authfile",
            &auth,
            "-u",
            &robot_name,
            "-p",
            &secret,
            &b.host(),
        ]),
    );
    must(
        &b,
        c.cmd("podman").args([
            "pull",
            "-q",
            "--tls-verify=false",
            "--authfile",
            &auth,
            &image,
        ]),
    );
    let retagged = format!("{}/{project}/app:2.0", b.host());
    must(&b, c.cmd("podman").args(["tag", &image, &retagged]));
    must(
        &b,
        c.cmd("podman").args([
            "push",
            "-q",
            "--tls-verify=false",
            "--authfile",
            &auth,
            &retagged,
        ]),
    );

    let out = must(
        &b,
        Command::new(&python).arg(&script).args([
            url.as_str(),
            ADMIN_PASSWORD,
            "inspect",
            project.as_str(),
            "app",
        ]),
    )
    .stdout;
    let seen: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        seen["repositories"],
        serde_json::json!([format!("{project}/app")])
    );
    let artifacts = seen["artifacts"].as_array().expect("artifacts");
    let tags: Vec<&str> = artifacts
        .iter()
        .flat_map(|a| {
            a["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
        })
        .collect();
    assert!(tags.contains(&"1.0") && tags.contains(&"2.0"), "{seen}");
    assert!(
        artifacts
            .iter()
            .all(|a| a["size"].as_u64().unwrap_or(0) > 0),
        "{seen}"
    );
}

/// `berth token rotate-key` puts a new key in force: servers sign with it after their next
/// key refresh, and tokens the old key signed stay valid.
#[tokio::test]
async fn a_rotated_key_signs_new_tokens_and_old_tokens_stay_valid() {
    let b = Berth::builtin(&[("BERTH_AUTH__SERVICE__KEY_REFRESH_SECONDS", "1")]);
    let admin_creds = Some(("admin", ADMIN_PASSWORD));
    let scope = ["repository:library/rotated:pull,push"];
    let (old, _) = token(&b, admin_creds, &scope).await;
    let old_kid = jwt_header(&old)["kid"].as_str().unwrap().to_string();
    let printed = cli_ok(&b, &["token", "rotate-key"]);
    let new_kid = printed
        .trim()
        .strip_prefix("signing key ")
        .and_then(|r| r.strip_suffix(" in force"))
        .unwrap_or_else(|| panic!("unexpected output: {printed}"))
        .to_string();
    assert_ne!(new_kid, old_kid);
    // Within the refresh period (1 s here) the server signs with the new key.
    let mut kid = old_kid.clone();
    for _ in 0..40 {
        let (t, _) = token(&b, admin_creds, &scope).await;
        kid = jwt_header(&t)["kid"].as_str().unwrap().to_string();
        if kid == new_kid {
            let r = bearer(&t)
                .get(b.url("/v2/library/rotated/tags/list"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                404,
                "a new token is accepted (the repository is empty)"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(kid, new_kid, "the rotated key signs");
    let r = bearer(&old)
        .get(b.url("/v2/library/rotated/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a token the retired key signed is still accepted"
    );
}
