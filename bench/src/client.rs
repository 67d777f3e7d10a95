//! A minimal OCI distribution client: only what the scenarios need, every status checked.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

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
    auth: Option<HeaderValue>,
}

/// Only loopback: the benchmark must not load anyone else's server.
pub fn check_loopback(url: &str) -> Result<()> {
    let u = reqwest::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    match u.host_str() {
        Some("127.0.0.1") | Some("localhost") | Some("[::1]") => Ok(()),
        other => bail!("refusing to talk to {other:?}: berth-bench only drives 127.0.0.1"),
    }
}

impl Registry {
    pub fn new(base: &str, auth: Option<HeaderValue>, pool: usize) -> Result<Registry> {
        check_loopback(base)?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(120))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            // Follow redirects (e.g. Berth on S3 redirects blob GETs to presigned URLs),
            // but only to loopback and at most 5.
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let loopback = matches!(
                    attempt.url().host_str(),
                    Some("127.0.0.1") | Some("localhost") | Some("[::1]")
                );
                if !loopback {
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

    /// The credentials sent with every request, if any.
    pub fn auth(&self) -> Option<&HeaderValue> {
        self.auth.as_ref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the credentials and a timeout.
    pub fn req(&self, method: Method, url: &str, timeout: Duration) -> RequestBuilder {
        let mut r = self.http.request(method, url).timeout(timeout);
        if let Some(a) = &self.auth {
            r = r.header(header::AUTHORIZATION, a.clone());
        }
        r
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
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await
            .context("PUT blob")?;
        expect(r, StatusCode::CREATED, "PUT blob").await?;
        Ok(digest)
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let r = self
            .req(Method::HEAD, &url, SMALL_TIMEOUT)
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
            .header(header::CONTENT_TYPE, OCI_MANIFEST)
            .body(body)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        expect(r, StatusCode::CREATED, "PUT manifest").await?;
        Ok(())
    }

    /// `HEAD` a manifest: `Some(digest)` when it exists.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<String>> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = self
            .req(Method::HEAD, &url, SMALL_TIMEOUT)
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
