//! The test OpenID Connect provider and the Chromium driver that `scripts/test.sh` starts and
//! installs (`tests/oidc/provider.mjs`, `tests/oidc/browser.mjs`; their header comments are the
//! full protocol). Tests that need them fail, not skip, outside the test command.
//!
//! - [`Provider`]: the issuer, its default client and its admin routes (users, sub changes,
//!   revocation, clients, settings, minted ID tokens).
//! - [`WebSession`]: a plain HTTP client with a cookie jar that follows redirects by hand and
//!   fills the provider's login form, so a sign-in works without a browser.
//! - [`Browser`]: Chromium driven step by step with JSON (goto, fill, click, wait_url, text,
//!   screenshot, ...), answers as JSON.
//! - [`AuthRequest`], [`Pkce`], [`jwt_claims`], [`jwt_header`], [`query_param`], [`form_encode`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

fn env_or_fail(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which {what}")
    })
}

/// The running test provider (`BERTH_TEST_OIDC_*`).
#[derive(Clone)]
pub struct Provider {
    /// `http://127.0.0.1:PORT`, the `iss` of its tokens.
    pub issuer: String,
    /// `ISSUER/__test`, the admin routes.
    pub admin: String,
    /// The default client: any `http://127.0.0.1:PORT/c/oidc/callback` is a valid redirect URI.
    pub client_id: String,
    pub client_secret: String,
    http: reqwest::Client,
}

impl Provider {
    /// Panics (the test fails) when the test command did not start a provider.
    pub fn from_env() -> Provider {
        let what = "starts the test OpenID Connect provider (tests/oidc/provider.mjs)";
        Provider {
            issuer: env_or_fail("BERTH_TEST_OIDC_ISSUER", what),
            admin: env_or_fail("BERTH_TEST_OIDC_ADMIN", what),
            client_id: env_or_fail("BERTH_TEST_OIDC_CLIENT_ID", what),
            client_secret: env_or_fail("BERTH_TEST_OIDC_CLIENT_SECRET", what),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
        }
    }

    /// The discovery document.
    pub async fn discovery(&self) -> Value {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let r = self.http.get(&url).send().await.expect("GET discovery");
        assert_eq!(r.status(), 200, "GET {url}");
        r.json().await.expect("discovery JSON")
    }

    /// One admin call: status and JSON answer.
    pub async fn admin_call(&self, method: &str, route: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method.clone(), format!("{}{route}", self.admin));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {route}: {e}"));
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn admin_ok(&self, method: &str, route: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.admin_call(method, route, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {route} answered {status}: {answer}"
        );
        answer
    }

    /// Creates or changes a user (`fields`: password, sub, email, email_verified, name,
    /// preferred_username, groups; null removes a claim). A changed `sub` deletes everything
    /// issued to the old one. Returns the user (with its password).
    pub async fn put_user(&self, username: &str, fields: Value) -> Value {
        self.admin_ok("PUT", &format!("/users/{username}"), Some(fields))
            .await
    }

    /// A user of this test only: `PREFIX-xxxxxxxx`, password `NAME-password`, sub `sub-NAME`,
    /// email `NAME@example.com` (verified), plus `fields`.
    pub async fn new_user(&self, prefix: &str, fields: Value) -> Value {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        self.put_user(&name, fields).await
    }

    /// Deletes the user's grants and codes, access and refresh tokens (and with `sessions`,
    /// the provider's browser sessions). Returns the counts per kind.
    pub async fn revoke(&self, username: &str, sessions: bool) -> Value {
        let body = json!({ "sessions": sessions });
        self.admin_ok("POST", &format!("/users/{username}/revoke"), Some(body))
            .await
    }

    /// Registers or replaces a client (RFC 7591 metadata; `redirect_uris` required). Returns
    /// its metadata, `client_secret` included.
    pub async fn put_client(&self, client_id: &str, metadata: Value) -> Value {
        self.admin_ok("PUT", &format!("/clients/{client_id}"), Some(metadata))
            .await
    }

    /// Changes access_token_ttl, id_token_ttl, refresh_token_ttl (s), issue_refresh_tokens.
    /// The provider is shared by the whole run: put them back at the end of the test.
    pub async fn settings(&self, settings: Value) -> Value {
        self.admin_ok("PUT", "/settings", Some(settings)).await
    }

    /// An ID token minted without a login (see provider.mjs: username, client_id, claims,
    /// expires_in, key "provider" | "unknown").
    pub async fn mint_id_token(&self, request: Value) -> String {
        let answer = self.admin_ok("POST", "/id-token", Some(request)).await;
        answer["id_token"].as_str().expect("id_token").to_string()
    }

    /// `ISSUER/__test/callback`: a redirect URI that shows its query parameters as
    /// `<dd id="NAME">` (for clients registered with [`Provider::put_client`]).
    pub fn echo_redirect_uri(&self) -> String {
        format!("{}/callback", self.admin)
    }

    /// An authorization request URL for the authorization code flow with PKCE (S256).
    pub fn authorization_url(&self, discovery: &Value, req: &AuthRequest, pkce: &Pkce) -> String {
        let endpoint = discovery["authorization_endpoint"]
            .as_str()
            .expect("authorization_endpoint");
        let params = [
            ("response_type", "code"),
            ("client_id", req.client_id),
            ("redirect_uri", req.redirect_uri),
            ("scope", req.scope),
            ("state", req.state),
            ("nonce", req.nonce),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ];
        format!("{endpoint}?{}", form_encode(&params))
    }

    /// A token endpoint request with client_secret_basic: status and JSON answer.
    pub async fn token_request(
        &self,
        discovery: &Value,
        client_id: &str,
        client_secret: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let endpoint = discovery["token_endpoint"]
            .as_str()
            .expect("token_endpoint");
        let r = self
            .http
            .post(endpoint)
            .basic_auth(client_id, Some(client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(form))
            .send()
            .await
            .expect("POST token endpoint");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// The parameters of an authorization request that tests vary.
pub struct AuthRequest<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
}

/// PKCE (RFC 7636) with S256.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let verifier = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

/// The payload of a JWT, decoded without checking its signature.
pub fn jwt_claims(jwt: &str) -> Value {
    jwt_part(jwt, 1)
}

/// The header of a JWT (`alg`, `kid`, ...).
pub fn jwt_header(jwt: &str) -> Value {
    jwt_part(jwt, 0)
}

fn jwt_part(jwt: &str, index: usize) -> Value {
    let part = jwt
        .split('.')
        .nth(index)
        .unwrap_or_else(|| panic!("not a JWT: {jwt}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("JWT part {index} is not base64url ({e}): {jwt}"));
    serde_json::from_slice(&bytes).expect("JWT part JSON")
}

/// `application/x-www-form-urlencoded`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, SET),
                percent_encoding::utf8_percent_encode(v, SET)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The decoded value of a query parameter of `url` (`+` is a space).
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (decode(k) == name).then(|| decode(v))
    })
}

/// A page reached by [`WebSession::follow`].
#[derive(Debug)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub body: String,
}

/// A plain HTTP client that behaves like a browser without JavaScript: a cookie jar and
/// redirects followed by hand (so a test can stop at a redirect URI nothing listens on).
/// Every test server is on 127.0.0.1, and cookies ignore ports, so the jar keys cookies by
/// name and path only, as a browser does for one host.
pub struct WebSession {
    http: reqwest::Client,
    /// (name, path) -> value
    cookies: BTreeMap<(String, String), String>,
}

impl WebSession {
    pub fn new() -> WebSession {
        WebSession {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("reqwest client"),
            cookies: BTreeMap::new(),
        }
    }

    /// A session whose client also trusts the CA certificate at `ca` (PEM), for a provider
    /// served over HTTPS with a private certificate.
    pub fn trusting(ca: &std::path::Path) -> WebSession {
        let pem = std::fs::read(ca).expect("read the CA certificate");
        WebSession {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .add_root_certificate(
                    reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"),
                )
                .build()
                .expect("reqwest client"),
            cookies: BTreeMap::new(),
        }
    }

    /// The value of a cookie the jar holds (any path).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|((n, _), _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Puts a cookie for every path of the site in the jar (as a replayed request would).
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies
            .insert((name.to_string(), "/".to_string()), value.to_string());
    }

    /// Every cookie name in the jar.
    pub fn cookie_names(&self) -> Vec<String> {
        self.cookies.keys().map(|(n, _)| n.clone()).collect()
    }

    fn cookie_header(&self, url: &str) -> Option<String> {
        let path = url_path(url);
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|((_, p), _)| path_matches(&path, p))
            .map(|((n, _), v)| format!("{n}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn store_cookies(&mut self, url: &str, r: &reqwest::Response) {
        for header in r.headers().get_all("set-cookie") {
            let Ok(header) = header.to_str() else {
                continue;
            };
            let mut parts = header.split(';');
            let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim().to_string(), value.trim().to_string());
            let mut path = default_cookie_path(url);
            let mut expired = false;
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.trim().to_ascii_lowercase().as_str() {
                    "path" => path = v.trim().to_string(),
                    "max-age" => expired |= v.trim().parse::<i64>().is_ok_and(|s| s <= 0),
                    "expires" => expired |= v.contains("1970"),
                    _ => {}
                }
            }
            if expired {
                self.cookies.remove(&(name, path));
            } else {
                self.cookies.insert((name, path), value);
            }
        }
    }

    /// One request (no redirect followed), cookies sent and stored.
    pub async fn send(&mut self, req: reqwest::RequestBuilder, url: &str) -> reqwest::Response {
        let req = match self.cookie_header(url) {
            Some(cookies) => req.header("cookie", cookies),
            None => req,
        };
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url}: {e}"));
        self.store_cookies(url, &r);
        r
    }

    /// A plain GET.
    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let req = self.http.get(url);
        self.send(req, url).await
    }

    /// A form POST (`application/x-www-form-urlencoded`).
    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let req = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(form));
        self.send(req, url).await
    }

    /// Follows redirects from `response` (got from `url`), at most 20, until a page that is
    /// not a redirect, or a Location for which `stop` is true (not requested; returned with
    /// status 0 and an empty body).
    pub async fn follow_from(
        &mut self,
        mut url: String,
        mut response: reqwest::Response,
        stop: &dyn Fn(&str) -> bool,
    ) -> Page {
        for _ in 0..20 {
            if !response.status().is_redirection() {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                return Page { url, status, body };
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or_else(|| panic!("redirect from {url} without a Location"));
            url = resolve(&url, location);
            if stop(&url) {
                return Page {
                    url,
                    status: 0,
                    body: String::new(),
                };
            }
            response = self.get(&url).await;
        }
        panic!("more than 20 redirects, the last to {url}");
    }

    /// GET `url` and [`WebSession::follow_from`] there.
    pub async fn follow(&mut self, url: &str, stop: &dyn Fn(&str) -> bool) -> Page {
        let r = self.get(url).await;
        self.follow_from(url.to_string(), r, stop).await
    }

    /// Starts at `url` (an authorization request, or a relying party's sign-in link that
    /// redirects to one), fills the test provider's login form if it is shown, and follows
    /// redirects until `stop`. Returns the last page and whether the form was shown (false:
    /// the provider's session signed the user in silently).
    pub async fn sign_in(
        &mut self,
        url: &str,
        username: &str,
        password: &str,
        stop: &dyn Fn(&str) -> bool,
    ) -> (Page, bool) {
        let page = self.follow(url, stop).await;
        let Some(action) = login_form_action(&page.body) else {
            return (page, false);
        };
        let action = resolve(&page.url, &action);
        let r = self
            .post_form(&action, &[("username", username), ("password", password)])
            .await;
        (self.follow_from(action, r, stop).await, true)
    }
}

impl Default for WebSession {
    fn default() -> Self {
        WebSession::new()
    }
}

/// The `action` of the provider's `<form id="login">`, if the page is its login form.
pub fn login_form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form id=\"login\"")?..];
    let rest = &form[form.find("action=\"")? + "action=\"".len()..];
    Some(rest[..rest.find('"')?].replace("&#38;", "&"))
}

fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    path.split(['?', '#']).next().unwrap_or("/").to_string()
}

fn default_cookie_path(url: &str) -> String {
    let path = url_path(url);
    match path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => path[..i].to_string(),
    }
}

fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/')
                || request_path.as_bytes().get(cookie_path.len()) == Some(&b'/')))
}

/// `location` resolved against `base` (absolute URLs, absolute paths and relative paths).
pub fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").expect("absolute base URL");
    let authority = rest.split('/').next().unwrap_or(rest);
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = url_path(base);
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{scheme}://{authority}{dir}{location}")
}

/// Chromium driven through `tests/oidc/browser.mjs` (playwright-core), one fresh profile per
/// `Browser`. Steps are JSON objects (`{"op":"goto","url":...}`; the ops are listed in
/// browser.mjs); [`Browser::step`] sends one and returns its value, [`Browser::try_step`] the
/// whole answer. Events (dialogs, page errors, console errors) are collected in `events`.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// `{"event":...}` lines seen so far.
    pub events: Vec<Value>,
    /// The per-step timeout given to browser.mjs (the Rust side waits 30 s more).
    step_timeout: Duration,
}

impl Browser {
    /// Starts Chromium with browser.mjs's `config` (timeout_ms, base_url, javascript,
    /// failure_screenshot_dir, permissions, ...). Fails the test outside the test command.
    pub async fn start(config: Value) -> Browser {
        let what = "installs Node.js, playwright-core and chromium";
        let node = env_or_fail("BERTH_TEST_NODE", what);
        let dir = PathBuf::from(env_or_fail("BERTH_TEST_OIDC_DIR", what));
        let step_timeout = Duration::from_millis(config["timeout_ms"].as_u64().unwrap_or(15_000));
        let mut child = Command::new(node)
            .arg(dir.join("browser.mjs"))
            .arg(config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node browser.mjs");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut browser = Browser {
            child,
            stdin,
            lines,
            events: Vec::new(),
            step_timeout,
        };
        let ready = browser.answer(Duration::from_secs(90)).await;
        assert_eq!(ready["ready"], true, "browser.mjs did not start: {ready}");
        browser
    }

    /// The next line that is not an event.
    async fn answer(&mut self, wait: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("browser.mjs gave no answer within {wait:?}"))
                .expect("read browser.mjs output")
                .unwrap_or_else(|| panic!("browser.mjs ended; events: {:?}", self.events));
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("browser.mjs printed non-JSON ({e}): {line}"));
            if value.get("event").is_some() {
                self.events.push(value);
                continue;
            }
            return value;
        }
    }

    /// Runs one step; returns browser.mjs's answer (`ok`, `value`, `url`, or `error`).
    pub async fn try_step(&mut self, step: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("browser closed");
        let line = format!("{step}\n");
        stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to browser.mjs");
        stdin.flush().await.expect("flush browser.mjs stdin");
        let step_ms = step["timeout_ms"].as_u64().map(Duration::from_millis);
        let wait = step_ms.unwrap_or(self.step_timeout) + Duration::from_secs(30);
        self.answer(wait).await
    }

    /// Runs one step and returns its value; panics (with the page URL, the error and the
    /// events so far) when it fails.
    pub async fn step(&mut self, step: Value) -> Value {
        let answer = self.try_step(step.clone()).await;
        if answer["ok"] != true {
            panic!(
                "browser step {step} failed: {answer}\nevents: {:?}",
                self.events
            );
        }
        answer["value"].clone()
    }

    /// `{"op":"text","selector":...}` as a String.
    pub async fn text(&mut self, selector: &str) -> String {
        let v = self.step(json!({"op": "text", "selector": selector})).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Closes the browser and waits (at most 30 s) for browser.mjs to end.
    pub async fn close(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
