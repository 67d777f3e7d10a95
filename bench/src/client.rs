//! A minimal OCI distribution client: only what the scenarios need, every status checked.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::data::{Blob, sha256_digest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Timeout of a request that moves at most a few MiB.
pub const SMALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of a request that moves a large blob.
pub const LARGE_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Clone)]
pub struct Registry {
    /// `http://127.0.0.1:PORT` without a trailing slash.
    pub base: String,
    pub http: reqwest::Client,
    auth: Auth,
}

/// What a request carries.
#[derive(Clone)]
pub enum Auth {
    None,
    /// The same `Authorization` value on every request (`--token`, `--basic`).
    Fixed(HeaderValue),
    /// Tokens from the registry's token service, as docker gets them (`--login`).
    Login(Arc<Login>),
}

/// A docker-like login: credentials for the token service named in the registry's
/// challenge, and one token per repository scope, fetched on first use and kept until it
/// is about to expire.
pub struct Login {
    /// `USER:PASS`, as given.
    pub user_pass: String,
    /// `Basic ...` of `user_pass`.
    pub basic: HeaderValue,
    /// The realm and service of the registry's `WWW-Authenticate: Bearer` challenge.
    service: tokio::sync::OnceCell<(String, String)>,
    /// Tokens by scope, with when to fetch a new one.
    tokens: tokio::sync::Mutex<HashMap<String, (HeaderValue, Instant)>>,
    /// Tokens fetched so far.
    pub fetched: AtomicU64,
}

impl Login {
    pub fn new(user_pass: &str) -> Result<Login> {
        let basic = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        ))
        .context("credentials are not a header value")?;
        Ok(Login {
            user_pass: user_pass.to_string(),
            basic,
            service: tokio::sync::OnceCell::new(),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            fetched: AtomicU64::new(0),
        })
    }
}

/// The scope a docker client asks a token for before requesting `path` (`/v2/<name>/...`):
/// pull and push on the repository, the catalog, or none (`/v2/`).
pub fn scope_of(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return String::new();
    };
    if rest.starts_with("_catalog") {
        return "registry:catalog:*".into();
    }
    for marker in ["/manifests/", "/blobs/", "/tags/", "/referrers/"] {
        if let Some(i) = rest.find(marker) {
            return format!("repository:{}:pull,push", &rest[..i]);
        }
    }
    String::new()
}

/// Where berth-bench may send requests and which CA it trusts for https: set once from
/// the command line (`--link-host`, `--ca-file`) before any request.
pub struct Net {
    /// Hosts besides loopback (`--link-host`): IPv4 link-local addresses only.
    pub link_hosts: Vec<Ipv4Addr>,
    /// The PEM text of `--ca-file`, for reqwest.
    pub ca_pem: Option<Vec<u8>>,
    /// The TLS configuration of the raw receivers ([`crate::fetch`]).
    pub tls: Arc<rustls::ClientConfig>,
}

static NET: OnceLock<Net> = OnceLock::new();

impl Net {
    /// Checks `link_hosts` (each must be in 169.254.0.0/16) and reads `ca_file`.
    pub fn new(link_hosts: &[String], ca_file: Option<&Path>) -> Result<Net> {
        let mut hosts = Vec::new();
        for h in link_hosts {
            let ip: Ipv4Addr = h.parse().map_err(|_| {
                anyhow::anyhow!("--link-host {h:?}: not an IPv4 address (169.254.0.0/16 only)")
            })?;
            if !ip.is_link_local() {
                bail!(
                    "--link-host {ip}: not a link-local address (169.254.0.0/16 only: \
                     berth-bench drives no routed host)"
                );
            }
            hosts.push(ip);
        }
        // The certificates of `--ca-file`, trusted for every https URL.
        let (ca, ca_pem) = match ca_file {
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("--ca-file {}: bad PEM", path.display()))?;
                if certs.is_empty() {
                    bail!("--ca-file {}: no certificate in it", path.display());
                }
                (certs, Some(pem))
            }
            None => (Vec::new(), None),
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in &ca {
            roots
                .add(c.clone())
                .context("--ca-file: a certificate rustls does not take")?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Net {
            link_hosts: hosts,
            ca_pem,
            tls: Arc::new(tls),
        })
    }

    /// Makes `net` the one of this process; fails if one was set already.
    pub fn install(net: Net) -> Result<()> {
        NET.set(net)
            .map_err(|_| anyhow::anyhow!("the network settings were set twice"))
    }

    /// This process's settings (loopback only, no CA, unless [`Net::install`]ed).
    pub fn get() -> &'static Net {
        NET.get_or_init(|| Net::new(&[], None).expect("default network settings"))
    }

    /// Whether berth-bench may send requests to `host` (a URL's host).
    pub fn allows(&self, host: Option<&str>) -> bool {
        match host {
            Some("127.0.0.1") | Some("localhost") | Some("[::1]") => true,
            Some(h) => h
                .parse::<Ipv4Addr>()
                .is_ok_and(|ip| self.link_hosts.contains(&ip)),
            None => false,
        }
    }
}

/// Only loopback and the `--link-host` addresses: the benchmark must not load anyone
/// else's server.
pub fn check_loopback(url: &str) -> Result<()> {
    let u = reqwest::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    if Net::get().allows(u.host_str()) {
        return Ok(());
    }
    bail!(
        "refusing to talk to {:?}: berth-bench only drives 127.0.0.1 (and --link-host addresses)",
        u.host_str()
    )
}

impl Registry {
    pub fn new(base: &str, auth: Auth, pool: usize) -> Result<Registry> {
        check_loopback(base)?;
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &Net::get().ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).context("--ca-file")? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(120))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            // Follow redirects (e.g. Berth on S3 redirects blob GETs to presigned URLs),
            // but only to loopback (and --link-host) and at most 5.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if !Net::get().allows(attempt.url().host_str()) {
                    attempt.error("berth-bench follows redirects to 127.0.0.1 only")
                } else if attempt.previous().len() >= 5 {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Registry {
            base: base.trim_end_matches('/').to_string(),
            http,
            auth,
        })
    }

    /// The `Authorization` for a request to `url` (of this registry): the fixed one, or
    /// with `--login` the token of its scope (fetched now if there is none yet).
    pub async fn auth_for(&self, url: &str) -> Result<Option<HeaderValue>> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Fixed(h) => Ok(Some(h.clone())),
            Auth::Login(login) => {
                let Some(path) = url.strip_prefix(&self.base) else {
                    return Ok(None);
                };
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                let mut scope = scope_of(path);
                // A mount also needs pull on its source, which docker asks for up front.
                if let Some(from) = query.split('&').find_map(|kv| kv.strip_prefix("from=")) {
                    scope.push_str(&format!(" repository:{from}:pull"));
                }
                self.token(login, &scope).await.map(Some)
            }
        }
    }

    /// The realm and service of this registry's Bearer challenge (asked once).
    pub async fn token_service(&self, login: &Login) -> Result<(String, String)> {
        let got = login
            .service
            .get_or_try_init(|| async {
                let r = self
                    .http
                    .get(self.url("/v2/"))
                    .timeout(SMALL_TIMEOUT)
                    .send()
                    .await
                    .context("GET /v2/ for the challenge")?;
                let h = header_str(r.headers(), "www-authenticate")
                    .context("--login: the registry sent no challenge")?;
                let param = |k: &str| {
                    let at = h.find(&format!("{k}=\""))? + k.len() + 2;
                    let end = h[at..].find('"')? + at;
                    Some(h[at..end].to_string())
                };
                match (h.starts_with("Bearer "), param("realm"), param("service")) {
                    (true, Some(realm), Some(service)) => {
                        check_loopback(&realm)?;
                        Ok::<_, anyhow::Error>((realm, service))
                    }
                    _ => bail!("--login: the challenge is not a Bearer realm: {h}"),
                }
            })
            .await?;
        Ok(got.clone())
    }

    /// The token URL for `scope` (none: a token for no repository).
    pub async fn token_url(&self, login: &Login, scope: &str) -> Result<String> {
        let (realm, service) = self.token_service(login).await?;
        let mut u = reqwest::Url::parse(&realm).context("the realm is not a URL")?;
        u.query_pairs_mut().append_pair("service", &service);
        // One `scope` parameter per scope, as docker sends them.
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            u.query_pairs_mut().append_pair("scope", s);
        }
        Ok(u.to_string())
    }

    /// `Bearer <token>` for `scope`: the one fetched before unless it is about to expire.
    /// Concurrent first users of a scope wait for one fetch, as one docker process does.
    async fn token(&self, login: &Login, scope: &str) -> Result<HeaderValue> {
        let mut tokens = login.tokens.lock().await;
        if let Some((t, until)) = tokens.get(scope) {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let url = self.token_url(login, scope).await?;
        let r = self
            .http
            .get(&url)
            .header(header::AUTHORIZATION, login.basic.clone())
            .timeout(SMALL_TIMEOUT)
            .send()
            .await
            .context("GET token")?;
        let r = expect(r, StatusCode::OK, "GET token").await?;
        let body: serde_json::Value = r.json().await.context("token response")?;
        let token = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .context("token response without a token")?;
        let expires = body["expires_in"].as_u64().unwrap_or(60);
        let h = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a header value")?;
        login.fetched.fetch_add(1, Ordering::Relaxed);
        // Renewed 30 s before it expires (a docker client renews on a 401 instead).
        let until = Instant::now() + Duration::from_secs(expires.saturating_sub(30).max(1));
        tokens.insert(scope.to_string(), (h.clone(), until));
        Ok(h)
    }

    /// The login (`--login`), if any.
    pub fn login(&self) -> Option<&Arc<Login>> {
        match &self.auth {
            Auth::Login(l) => Some(l),
            _ => None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the credentials and a timeout.
    pub async fn req(
        &self,
        method: Method,
        url: &str,
        timeout: Duration,
    ) -> Result<RequestBuilder> {
        let mut r = self.http.request(method, url).timeout(timeout);
        if let Some(a) = self.auth_for(url).await? {
            r = r.header(header::AUTHORIZATION, a);
        }
        Ok(r)
    }

    /// Resolves a `Location` (absolute or relative) against the base, refusing other hosts.
    pub fn resolve(&self, location: &str) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            check_loopback(location)?;
            Ok(location.to_string())
        } else if location.starts_with('/') {
            Ok(self.url(location))
        } else {
            bail!("unexpected relative Location {location:?}")
        }
    }

    /// `GET /v2/`: the registry answers (200, or 401 when it wants credentials).
    pub async fn ping(&self) -> Result<StatusCode> {
        let r = self
            .req(Method::GET, &self.url("/v2/"), SMALL_TIMEOUT)
            .await?
            .send()
            .await
            .context("GET /v2/")?;
        Ok(r.status())
    }

    /// `POST /v2/<repo>/blobs/uploads/`: a new session's absolute location.
    pub async fn start_upload(&self, repo: &str) -> Result<String> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let r = self
            .req(Method::POST, &url, SMALL_TIMEOUT)
            .await?
            .header(header::CONTENT_LENGTH, "0")
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let r = expect(r, StatusCode::ACCEPTED, "start upload").await?;
        location(self, &r)
    }

    /// `PATCH` a range of `blob` to the session; returns the next location. With
    /// `content_range`, sends `Content-Range` and `Content-Length` (a chunk); without,
    /// a chunked transfer-encoding body (a streamed upload).
    pub async fn patch(
        &self,
        loc: &str,
        blob: Blob,
        range: std::ops::Range<u64>,
        content_range: bool,
    ) -> Result<String> {
        let mut rb = self
            .req(Method::PATCH, loc, LARGE_TIMEOUT)
            .await?
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if content_range {
            rb = rb
                .header(header::CONTENT_LENGTH, range.end - range.start)
                .header(
                    header::CONTENT_RANGE,
                    format!("{}-{}", range.start, range.end - 1),
                );
        }
        let r = rb
            .body(reqwest::Body::wrap_stream(blob.stream(range.clone())))
            .send()
            .await
            .with_context(|| format!("PATCH {range:?}"))?;
        let r = expect(r, StatusCode::ACCEPTED, "PATCH").await?;
        location(self, &r)
    }

    /// `PUT <loc>?digest=` with the rest of the blob (`range`, may be empty).
    pub async fn finish(
        &self,
        loc: &str,
        digest: &str,
        blob: Blob,
        range: std::ops::Range<u64>,
    ) -> Result<()> {
        let sep = if loc.contains('?') { '&' } else { '?' };
        let url = format!("{loc}{sep}digest={digest}");
        let len = range.end - range.start;
        let mut rb = self
            .req(Method::PUT, &url, LARGE_TIMEOUT)
            .await?
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len);
        rb = if len == 0 {
            rb.body(Bytes::new())
        } else {
            rb.body(reqwest::Body::wrap_stream(blob.stream(range)))
        };
        let r = rb.send().await.context("PUT (finish upload)")?;
        let r = expect(r, StatusCode::CREATED, "PUT (finish upload)").await?;
        check_digest_header(&r, digest)?;
        Ok(())
    }

    /// POST + PUT of a whole blob (the OCI "monolithic" two-request upload).
    pub async fn push_monolithic(&self, repo: &str, blob: Blob, digest: &str) -> Result<()> {
        let loc = self.start_upload(repo).await?;
        self.finish(&loc, digest, blob, 0..blob.size).await
    }

    /// Pushes small in-memory bytes; returns the digest.
    pub async fn push_bytes(&self, repo: &str, data: Bytes) -> Result<String> {
        let digest = sha256_digest(&data);
        if self.blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let loc = self.start_upload(repo).await?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let url = format!("{loc}{sep}digest={digest}");
        let r = self
            .req(Method::PUT, &url, SMALL_TIMEOUT)
            .await?
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await
            .context("PUT blob")?;
        expect(r, StatusCode::CREATED, "PUT blob").await?;
        Ok(digest)
    }

    /// One `POST /v2/<repo>/blobs/uploads/?digest=` with the whole blob as its body (the
    /// single-request monolithic upload; no session to finish). For fixtures of many small
    /// blobs: it does not ask first whether the blob exists.
    pub async fn post_whole(&self, repo: &str, data: Bytes) -> Result<String> {
        let digest = sha256_digest(&data);
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
        let r = self
            .req(Method::POST, &url, SMALL_TIMEOUT)
            .await?
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await
            .context("POST blob")?;
        let r = expect(r, StatusCode::CREATED, "POST blob (?digest=)").await?;
        check_digest_header(&r, &digest)?;
        Ok(digest)
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let r = self
            .req(Method::HEAD, &url, SMALL_TIMEOUT)
            .await?
            .send()
            .await
            .with_context(|| format!("HEAD {url}"))?;
        match r.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("HEAD {url}: unexpected status {s}"),
        }
    }

    /// Cross-repository mount; `true` when mounted (201). A 202 (the registry opened an
    /// upload instead) is an error here: fixtures mount only blobs that exist.
    pub async fn mount(&self, repo: &str, digest: &str, from: &str) -> Result<()> {
        let url = self.url(&format!(
            "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
        ));
        let r = self
            .req(Method::POST, &url, SMALL_TIMEOUT)
            .await?
            .header(header::CONTENT_LENGTH, "0")
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        expect(r, StatusCode::CREATED, "mount").await?;
        Ok(())
    }

    /// `PUT` a manifest by tag or digest.
    pub async fn put_manifest(&self, repo: &str, reference: &str, body: Bytes) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = self
            .req(Method::PUT, &url, SMALL_TIMEOUT)
            .await?
            .header(header::CONTENT_TYPE, OCI_MANIFEST)
            .body(body)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        expect(r, StatusCode::CREATED, "PUT manifest").await?;
        Ok(())
    }

    /// `DELETE` a manifest by digest (its tags go with it).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let r = self
            .req(Method::DELETE, &url, SMALL_TIMEOUT)
            .await?
            .send()
            .await
            .with_context(|| format!("DELETE {url}"))?;
        expect(r, StatusCode::ACCEPTED, "DELETE manifest").await?;
        Ok(())
    }

    /// `HEAD` a manifest: `Some(digest)` when it exists.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<String>> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = self
            .req(Method::HEAD, &url, SMALL_TIMEOUT)
            .await?
            .header(header::ACCEPT, ACCEPT_MANIFESTS)
            .send()
            .await
            .with_context(|| format!("HEAD {url}"))?;
        match r.status() {
            StatusCode::OK => Ok(Some(header_str(r.headers(), "docker-content-digest")?)),
            StatusCode::NOT_FOUND => Ok(None),
            s => bail!("HEAD {url}: unexpected status {s}"),
        }
    }
}

/// An image manifest for `config` and `layers` (digest, size).
pub fn image_manifest(config: (&str, u64), layers: &[(String, u64)]) -> Bytes {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, s)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": s}))
        .collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    });
    Bytes::from(serde_json::to_vec(&m).expect("a JSON value serializes"))
}

/// Fails unless the response has `status`; the error carries the body's start.
pub async fn expect(r: Response, status: StatusCode, what: &str) -> Result<Response> {
    if r.status() == status {
        return Ok(r);
    }
    let got = r.status();
    let body = r.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    bail!("{what}: expected {status}, got {got}: {body}")
}

fn location(reg: &Registry, r: &Response) -> Result<String> {
    let loc = header_str(r.headers(), "location")?;
    reg.resolve(&loc)
}

pub fn header_str(h: &HeaderMap, name: &str) -> Result<String> {
    h.get(name)
        .with_context(|| format!("response has no {name} header"))?
        .to_str()
        .with_context(|| format!("{name} header is not ASCII"))
        .map(str::to_string)
}

fn check_digest_header(r: &Response, digest: &str) -> Result<()> {
    if let Some(d) = r.headers().get("docker-content-digest") {
        if d.as_bytes() != digest.as_bytes() {
            bail!("registry reports digest {d:?}, pushed {digest}");
        }
    }
    Ok(())
}

/// The `next` target of a `Link` header, if any.
pub fn next_link(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::LINK)?.to_str().ok()?;
    for part in v.split(',') {
        if part.contains("rel=\"next\"") || part.contains("rel=next") {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            return Some(part[start..end].to_string());
        }
    }
    None
}
