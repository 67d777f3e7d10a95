//! The spec tests' registry client, and the two modes they run in.
//!
//! [`RegistryClient`] speaks to `/v2` the way docker and containerd do: without
//! credentials until the registry asks for them. A `401` with a `WWW-Authenticate: Bearer`
//! challenge sends it to the challenge's realm for a token (Basic credentials) for the
//! scopes the challenge names, plus `pull,push` on the repository the request is about;
//! it keeps each token under the scopes it was asked for and the repository it serves,
//! and sends the request again with it. A body that cannot be sent twice (a stream) goes
//! out with a token fetched first, as docker does once it knows the realm. Every refusal
//! it answers this way must carry the spec's error body (`UNAUTHORIZED`).
//!
//! [`Auth`] starts a server in one mode with a client for it, and `in_both_modes!` turns
//! one test function into a test for each mode.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{IntoUrl, Method};

use super::{Berth, Options, api_send, builtin_env, error_message, header_str};

/// What sends requests to a registry: a plain `reqwest::Client`, or a [`RegistryClient`]
/// (which signs in when asked). The shared helpers take either.
pub trait Http {
    fn request(&self, method: Method, url: impl IntoUrl) -> RegistryRequest;

    fn get(&self, url: impl IntoUrl) -> RegistryRequest {
        self.request(Method::GET, url)
    }
    fn head(&self, url: impl IntoUrl) -> RegistryRequest {
        self.request(Method::HEAD, url)
    }
    fn post(&self, url: impl IntoUrl) -> RegistryRequest {
        self.request(Method::POST, url)
    }
    fn put(&self, url: impl IntoUrl) -> RegistryRequest {
        self.request(Method::PUT, url)
    }
    fn patch(&self, url: impl IntoUrl) -> RegistryRequest {
        self.request(Method::PATCH, url)
    }
    fn delete(&self, url: impl IntoUrl) -> RegistryRequest {
        self.request(Method::DELETE, url)
    }
}

impl Http for reqwest::Client {
    fn request(&self, method: Method, url: impl IntoUrl) -> RegistryRequest {
        RegistryRequest {
            inner: reqwest::Client::request(self, method, url),
            login: None,
        }
    }
}

/// A request being built; `send` signs in when the registry asks.
pub struct RegistryRequest {
    inner: reqwest::RequestBuilder,
    login: Option<Arc<Login>>,
}

impl RegistryRequest {
    pub fn header<K, V>(mut self, key: K, value: V) -> RegistryRequest
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<axum::http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<axum::http::Error>,
    {
        self.inner = self.inner.header(key, value);
        self
    }

    pub fn body(mut self, body: impl Into<reqwest::Body>) -> RegistryRequest {
        self.inner = self.inner.body(body);
        self
    }

    pub fn query<T: serde::Serialize + ?Sized>(mut self, query: &T) -> RegistryRequest {
        self.inner = self.inner.query(query);
        self
    }

    pub async fn send(self) -> reqwest::Result<reqwest::Response> {
        match self.login {
            None => self.inner.send().await,
            Some(login) => login.send(self.inner).await,
        }
    }
}

/// A `/v2` client: anonymous in [`Auth::None`], signing in as a user in [`Auth::Builtin`].
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    login: Option<Arc<Login>>,
}

impl RegistryClient {
    /// A client that never signs in.
    pub fn anonymous() -> RegistryClient {
        RegistryClient {
            http: super::client(),
            login: None,
        }
    }

    /// A client that signs in as `user` / `password` when challenged.
    pub fn signing_in(user: &str, password: &str) -> RegistryClient {
        let http = super::client();
        RegistryClient {
            login: Some(Arc::new(Login {
                http: http.clone(),
                user: user.to_string(),
                password: password.to_string(),
                state: Mutex::new(LoginState::default()),
            })),
            http,
        }
    }

    /// How many tokens it has fetched so far.
    pub fn tokens_fetched(&self) -> usize {
        self.login
            .as_ref()
            .map_or(0, |l| l.state.lock().expect("login state").fetched)
    }
}

impl Http for RegistryClient {
    fn request(&self, method: Method, url: impl IntoUrl) -> RegistryRequest {
        RegistryRequest {
            inner: self.http.request(method, url),
            login: self.login.clone(),
        }
    }
}

/// Scopes as the token spec writes them: `type:name` → actions.
type Scopes = BTreeMap<(String, String), BTreeSet<String>>;

/// `type:name:a,b` joined by spaces, in order: the key a token is kept under.
fn scope_key(scopes: &Scopes) -> String {
    scopes
        .iter()
        .map(|((kind, name), actions)| {
            let actions: Vec<&str> = actions.iter().map(String::as_str).collect();
            format!("{kind}:{name}:{}", actions.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn add_scope(scopes: &mut Scopes, kind: &str, name: &str, actions: &[&str]) {
    scopes
        .entry((kind.to_string(), name.to_string()))
        .or_default()
        .extend(actions.iter().map(|a| a.to_string()));
}

/// The resource a `/v2` path is about, and what a client asks for it before any
/// challenge: `pull,push` on a repository (as docker asks), `*` on the catalog. `None`
/// for `/v2/` itself and paths that name neither.
fn resource_of(path: &str) -> Option<(&'static str, String, &'static [&'static str])> {
    let rest = path.strip_prefix("/v2/")?;
    if rest == "_catalog" {
        return Some(("registry", "catalog".to_string(), &["*"]));
    }
    // The name is everything before the route's last segments (names may hold
    // `blobs`, `tags` and the like): `blobs/uploads/<id>`, or `<kind>/<reference>`.
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let keywords = ["blobs", "manifests", "tags", "referrers"];
    let at = if n >= 4 && segments[n - 3] == "blobs" && segments[n - 2] == "uploads" {
        n - 3
    } else if n >= 3 && keywords.contains(&segments[n - 2]) {
        n - 2
    } else {
        return None;
    };
    Some(("repository", segments[..at].join("/"), &["pull", "push"]))
}

/// A `Bearer` challenge: realm, service and the scopes it names.
struct Challenge {
    realm: String,
    service: String,
    scopes: Scopes,
}

/// Parses `Bearer k="v",k="v"` (values may hold commas); `None` for any other scheme.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let params = value.strip_prefix("Bearer ")?;
    let mut fields = HashMap::new();
    let mut chars = params.chars().peekable();
    for _ in 0..16 {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            val = chars.by_ref().take_while(|&c| c != '"').collect();
            chars.next(); // the comma after the closing quote
        } else {
            val.extend(chars.by_ref().take_while(|&c| c != ','));
        }
        fields.insert(key.trim().to_string(), val);
    }
    let mut scopes = Scopes::new();
    for one in fields.get("scope").map_or("", String::as_str).split(' ') {
        let Some((kind, rest)) = one.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let actions: Vec<&str> = actions.split(',').collect();
        add_scope(&mut scopes, kind, name, &actions);
    }
    Some(Challenge {
        realm: fields.get("realm")?.clone(),
        service: fields.get("service").cloned().unwrap_or_default(),
        scopes,
    })
}

struct Login {
    http: reqwest::Client,
    user: String,
    password: String,
    state: Mutex<LoginState>,
}

#[derive(Default)]
struct LoginState {
    /// Realm and service, once a challenge named them.
    realm: Option<(String, String)>,
    /// Tokens by [`scope_key`].
    tokens: HashMap<String, String>,
    /// The scope key of the token last used for each resource (`type:name`; `""` for `/v2/`).
    in_use: HashMap<String, String>,
    fetched: usize,
}

impl Login {
    async fn send(&self, builder: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        let (client, request) = builder.build_split();
        let mut request = request?;
        let resource = resource_of(request.url().path());
        let resource_key = resource
            .as_ref()
            .map_or(String::new(), |(kind, name, _)| format!("{kind}:{name}"));
        let mut sent_with = self.in_use(&resource_key);
        // A mount names its source: docker asks for pull there along with the target.
        let from = request
            .url()
            .query_pairs()
            .find(|(k, _)| k == "from")
            .map(|(_, v)| v.into_owned())
            .filter(|_| request.url().query_pairs().any(|(k, _)| k == "mount"));
        // The catalog's scope is known before any challenge, and so is a repository's
        // once the realm is: a body that cannot be sent twice goes with a token at once.
        let known = matches!(&resource, Some(("registry", _, _)))
            || (request.try_clone().is_none() && resource.is_some());
        if (sent_with.is_none() && known) || (from.is_some() && resource.is_some()) {
            let (kind, name, actions) = resource.as_ref().expect("known resource");
            let mut scopes = Scopes::new();
            add_scope(&mut scopes, kind, name, actions);
            if let Some(from) = &from {
                add_scope(&mut scopes, "repository", from, &["pull"]);
            }
            let origin = request.url().origin().ascii_serialization();
            let token = self.token(&origin, &scopes).await;
            self.use_for(&resource_key, &scopes);
            sent_with = Some((scope_key(&scopes), token));
        }
        if let Some((_, token)) = &sent_with {
            set_bearer(&mut request, token);
        }
        let retry = request.try_clone();
        let method = request.method().clone();
        let r = client.execute(request).await?;
        if r.status() != 401 {
            return Ok(r);
        }
        let (Some(challenge), Some(mut retry)) = (
            parse_challenge(&header_str(&r, WWW_AUTHENTICATE.as_str())),
            retry,
        ) else {
            return Ok(r);
        };
        let mut scopes = challenge.scopes;
        if let Some(("repository", name, actions)) = &resource {
            add_scope(&mut scopes, "repository", name, actions);
        }
        if sent_with.is_some_and(|(key, _)| key == scope_key(&scopes)) {
            // The token already held everything it could ask for: a real refusal.
            return Ok(r);
        }
        self.state.lock().expect("login state").realm =
            Some((challenge.realm.clone(), challenge.service.clone()));
        if method != Method::HEAD {
            let content_type = header_str(&r, "content-type");
            let url = r.url().clone();
            let text = r.text().await?;
            error_message(
                &format!("the challenge from {method} {url}"),
                &content_type,
                &text,
                "UNAUTHORIZED",
            );
        }
        let token = self.token("", &scopes).await;
        self.use_for(&resource_key, &scopes);
        set_bearer(&mut retry, &token);
        client.execute(retry).await
    }

    /// The scope key and token last used for `resource`.
    fn in_use(&self, resource: &str) -> Option<(String, String)> {
        let state = self.state.lock().expect("login state");
        let key = state.in_use.get(resource)?;
        Some((key.clone(), state.tokens.get(key)?.clone()))
    }

    fn use_for(&self, resource: &str, scopes: &Scopes) {
        self.state
            .lock()
            .expect("login state")
            .in_use
            .insert(resource.to_string(), scope_key(scopes));
    }

    /// A token for `scopes`: kept, or asked of the realm with Basic credentials. Before
    /// any challenge, the realm is learnt from `GET <origin>/v2/`, as docker does.
    async fn token(&self, origin: &str, scopes: &Scopes) -> String {
        let key = scope_key(scopes);
        let known = {
            let state = self.state.lock().expect("login state");
            if let Some(t) = state.tokens.get(&key) {
                return t.clone();
            }
            state.realm.clone()
        };
        let (realm, service) = match known {
            Some(known) => known,
            None => {
                let r = self
                    .http
                    .get(format!("{origin}/v2/"))
                    .send()
                    .await
                    .expect("ping /v2/");
                let challenge = parse_challenge(&header_str(&r, WWW_AUTHENTICATE.as_str()))
                    .unwrap_or_else(|| panic!("/v2/ answered {} without a challenge", r.status()));
                (challenge.realm, challenge.service)
            }
        };
        let mut query = vec![("service", service.clone())];
        query.extend(
            key.split(' ')
                .filter(|s| !s.is_empty())
                .map(|s| ("scope", s.to_string())),
        );
        let r = self
            .http
            .get(&realm)
            .query(&query)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .expect("token request");
        let status = r.status();
        let body: serde_json::Value = r.json().await.expect("token response JSON");
        assert_eq!(status, 200, "token for {key:?}: {body}");
        let token = body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("token response without a token: {body}"))
            .to_string();
        let mut state = self.state.lock().expect("login state");
        state.realm = Some((realm, service));
        state.tokens.insert(key, token.clone());
        state.fetched += 1;
        token
    }
}

fn set_bearer(request: &mut reqwest::Request, token: &str) {
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("token header"),
    );
}

/// The account the spec tests push and pull with when auth is on: a maintainer of each
/// project the test works in (maintainers may pull, push and delete), not an admin.
pub const SPEC_USER: (&str, &str) = ("spec-user", "Spec-user-pass-1");

/// The mode a spec test's server runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `auth.mode = "none"`: an open registry, an anonymous client.
    None,
    /// `auth.mode = "builtin"`: the client signs in as [`SPEC_USER`] through the token
    /// service.
    Builtin,
}

impl Auth {
    /// A server in this mode and a client for it; with auth on, `projects` exist (private)
    /// and [`SPEC_USER`] is a maintainer of each.
    pub async fn start(self, projects: &[&str]) -> (Berth, RegistryClient) {
        self.start_with(Options::default(), projects).await
    }

    pub async fn start_with(self, options: Options, projects: &[&str]) -> (Berth, RegistryClient) {
        assert!(
            projects.iter().all(|p| !p.contains('/')),
            "projects are names' first segments: {projects:?}"
        );
        match self {
            Auth::None => (Berth::start_with(options), RegistryClient::anonymous()),
            Auth::Builtin => {
                let mut options = options;
                options.env.splice(0..0, builtin_env());
                let b = Berth::start_with(options);
                let (user, password) = SPEC_USER;
                let admin = Some(("admin", super::API_ADMIN_PW));
                let r = api_send(
                    &b,
                    Method::POST,
                    "/api/v2.0/users",
                    admin,
                    Some(serde_json::json!({"username": user, "password": password})),
                )
                .await;
                assert_eq!(r.status(), 201, "create {user}: {:?}", r.text().await);
                for project in projects {
                    create_project(&b, project, Some(SPEC_USER.0)).await;
                }
                (b, RegistryClient::signing_in(user, password))
            }
        }
    }
}

/// A token from the server's token service for `who` and `scopes`.
pub async fn token_for(b: &Berth, who: (&str, &str), scopes: &[&str]) -> String {
    let mut query = vec![("service", "berth")];
    query.extend(scopes.iter().map(|s| ("scope", *s)));
    let r = super::client()
        .get(b.url("/service/token"))
        .query(&query)
        .basic_auth(who.0, Some(who.1))
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200, "token for {scopes:?}");
    let v: serde_json::Value = r.json().await.expect("token JSON");
    v["token"].as_str().expect("token").to_string()
}

/// The projects of `repositories` (their first segments), each once.
pub fn projects_of<'a>(repositories: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut projects: Vec<&str> = repositories
        .into_iter()
        .map(|r| r.split('/').next().unwrap_or(r))
        .collect();
    projects.sort();
    projects.dedup();
    projects
}

/// Creates the private project `name` (as admin), with `maintainer` as its maintainer
/// when one is named.
pub async fn create_project(b: &Berth, name: &str, maintainer: Option<&str>) {
    let admin = Some(("admin", super::API_ADMIN_PW));
    let r = api_send(
        b,
        Method::POST,
        "/api/v2.0/projects",
        admin,
        Some(serde_json::json!({"project_name": name, "metadata": {"public": "false"}})),
    )
    .await;
    assert_eq!(
        r.status(),
        201,
        "create project {name}: {:?}",
        r.text().await
    );
    let Some(maintainer) = maintainer else {
        return;
    };
    let r = api_send(
        b,
        Method::POST,
        &format!("/api/v2.0/projects/{name}/members"),
        admin,
        Some(serde_json::json!({"role_id": 4, "member_user": {"username": maintainer}})),
    )
    .await;
    assert_eq!(
        r.status(),
        201,
        "make {maintainer} maintainer of {name}: {:?}",
        r.text().await
    );
}

/// Runs the test `async fn $name(auth: Auth)` in both [`Auth`] modes, as the tests
/// `$name::auth_none` and `$name::auth_builtin`. Written just above the function.
#[allow(unused_macros)]
macro_rules! in_both_modes {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn auth_none() {
                super::$name(super::Auth::None).await
            }

            #[tokio::test]
            async fn auth_builtin() {
                super::$name(super::Auth::Builtin).await
            }
        }
    };
}
