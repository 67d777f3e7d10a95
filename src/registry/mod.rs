//! The `/v2` API. Repository names contain slashes, so one handler parses the path into a
//! [`Route`] and hands it to the resource's module; each module is thin: parse, authorize,
//! call the stores, write headers.

mod base;
mod blobs;
mod catalog;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, Version, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::oci::{ErrorCode, RegistryError, RepoName};
use crate::sendfile::ZeroCopy;

pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
pub const DOCKER_UPLOAD_UUID: &str = "docker-upload-uuid";
pub const OCI_SUBJECT: &str = "oci-subject";
pub const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";

pub type Result<T> = std::result::Result<T, RegistryError>;

/// A `/v2` path, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> Route<'a> {
    /// Parses the part of the path after `/v2/`.
    pub fn parse(rest: &'a str) -> Option<Route<'a>> {
        if rest.is_empty() {
            return Some(Route::Base);
        }
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        // `name/kind/arg`: the name is everything before the last resource keyword whose
        // argument contains no slash.
        let split = |keyword: &str| -> Option<(&'a str, &'a str)> {
            let pat = format!("/{keyword}/");
            let i = rest.rfind(&pat)?;
            let (name, arg) = (&rest[..i], &rest[i + pat.len()..]);
            (!name.is_empty() && !arg.contains('/')).then_some((name, arg))
        };
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return (!name.is_empty()).then_some(Route::Tags { name });
        }
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return (!name.is_empty()).then_some(Route::UploadStart { name });
        }
        if let Some((name, id)) = split("blobs/uploads") {
            return Some(Route::Upload { name, id });
        }
        if let Some((name, reference)) = split("manifests") {
            return Some(Route::Manifest { name, reference });
        }
        if let Some((name, digest)) = split("blobs") {
            return Some(Route::Blob { name, digest });
        }
        if let Some((name, digest)) = split("referrers") {
            return Some(Route::Referrers { name, digest });
        }
        None
    }
}

/// Everything under `/v2`.
pub async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    zero_copy: Option<Extension<ZeroCopy>>,
    body: Body,
) -> Response {
    let path = uri.path();
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let Some(route) = Route::parse(rest) else {
        return RegistryError::new(
            ErrorCode::NameUnknown,
            format!("no registry resource at {path}"),
        )
        .with_status(axum::http::StatusCode::NOT_FOUND)
        .into_response();
    };
    let query = uri.query().unwrap_or("");
    let req = Req {
        state: &state,
        method: &method,
        headers: &headers,
        query,
        zero_copy: zero_copy
            .as_ref()
            .map(|Extension(z)| z)
            .filter(|_| version < Version::HTTP_2),
    };
    let result = match route {
        Route::Base => base::handle(req).await,
        Route::Catalog => catalog::handle(req).await,
        Route::Tags { name } => with_name(name, |n| tags::handle(req, n)).await,
        Route::Manifest { name, reference } => {
            with_name(name, |n| manifests::handle(req, n, reference, body)).await
        }
        Route::Blob { name, digest } => with_name(name, |n| blobs::handle(req, n, digest)).await,
        Route::UploadStart { name } => with_name(name, |n| uploads::start(req, n, body)).await,
        Route::Upload { name, id } => with_name(name, |n| uploads::handle(req, n, id, body)).await,
        Route::Referrers { name, digest } => {
            with_name(name, |n| referrers::handle(req, n, digest)).await
        }
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn with_name<F, Fut>(name: &str, f: F) -> Result<Response>
where
    F: FnOnce(RepoName) -> Fut,
    Fut: std::future::Future<Output = Result<Response>>,
{
    let name = RepoName::parse(name)
        .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, e.to_string()))?;
    f(name).await
}

/// What every handler gets about the request, besides its route's arguments.
#[derive(Clone, Copy)]
pub struct Req<'a> {
    pub state: &'a AppState,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: &'a str,
    /// Set when blob bytes may be sent by the kernel straight from their file (HTTP/1 on a
    /// plain TCP connection; see [`crate::sendfile`]).
    pub zero_copy: Option<&'a ZeroCopy>,
}

impl Req<'_> {
    /// Values of a query parameter, percent-decoded, in order.
    pub fn query_all(&self, key: &str) -> Vec<String> {
        self.query
            .split('&')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == key).then(|| {
                    percent_encoding::percent_decode_str(&v.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
            .collect()
    }

    pub fn query_one(&self, key: &str) -> Option<String> {
        self.query_all(key).into_iter().next()
    }

    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn unsupported(&self, allowed: &str) -> RegistryError {
        RegistryError::unsupported(format!(
            "method {} is not supported here; allowed: {allowed}",
            self.method
        ))
        .with_header(
            header::ALLOW,
            HeaderValue::from_str(allowed).unwrap_or(HeaderValue::from_static("GET")),
        )
    }
}

/// Parses `n` and `last` pagination parameters.
pub fn pagination(req: &Req<'_>, default_n: i64) -> Result<(i64, Option<String>)> {
    let n = match req.query_one("n") {
        None => default_n,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={s:?} is not a non-negative integer"),
            )
        })?,
    };
    Ok((n, req.query_one("last").filter(|l| !l.is_empty())))
}

/// What `last` escapes in a `Link`: everything but RFC 3986's unreserved characters, so
/// that tags such as `v1.0` come back as they are and `/` in repository names is escaped.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An RFC 5988 `Link` header for the next page.
pub fn next_link(path: &str, n: i64, last: &str) -> HeaderValue {
    let last = percent_encoding::utf8_percent_encode(last, QUERY_VALUE);
    HeaderValue::from_str(&format!("<{path}?n={n}&last={last}>; rel=\"next\""))
        .unwrap_or(HeaderValue::from_static(""))
}

pub fn header_value(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).unwrap_or(HeaderValue::from_static(""))
}

/// A blob-store failure as the client sees it: an unreachable or refusing object store is
/// 503 (retry later), anything else 500; both are logged with the store's own words.
pub(crate) fn storage_error(e: crate::storage::StorageError) -> RegistryError {
    use crate::storage::StorageError;
    tracing::error!(error = %e, "blob store failed");
    match e {
        StorageError::Backend(msg) => RegistryError::new(
            crate::oci::ErrorCode::Unavailable,
            format!("blob storage is unavailable: {msg}"),
        )
        .with_header(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        ),
        other => RegistryError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::Route::*;
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse(""), Some(Base));
        assert_eq!(Route::parse("_catalog"), Some(Catalog));
        assert_eq!(Route::parse("a/b/tags/list"), Some(Tags { name: "a/b" }));
        assert_eq!(
            Route::parse("a/manifests/v1"),
            Some(Manifest {
                name: "a",
                reference: "v1"
            })
        );
        assert_eq!(
            Route::parse("a/blobs/sha256:x"),
            Some(Blob {
                name: "a",
                digest: "sha256:x"
            })
        );
        assert_eq!(
            Route::parse("a/blobs/uploads/"),
            Some(UploadStart { name: "a" })
        );
        assert_eq!(
            Route::parse("a/blobs/uploads/u1"),
            Some(Upload {
                name: "a",
                id: "u1"
            })
        );
        assert_eq!(
            Route::parse("a/referrers/sha256:x"),
            Some(Referrers {
                name: "a",
                digest: "sha256:x"
            })
        );
        // Keywords inside names.
        assert_eq!(
            Route::parse("manifests/blobs/manifests/t"),
            Some(Manifest {
                name: "manifests/blobs",
                reference: "t"
            })
        );
        assert_eq!(
            Route::parse("blobs/blobs/d"),
            Some(Blob {
                name: "blobs",
                digest: "d"
            })
        );
        assert_eq!(Route::parse("a/unknown"), None);
        assert_eq!(Route::parse("/manifests/x"), None);
    }

    #[test]
    fn next_links_escape_only_what_they_must() {
        assert_eq!(
            next_link("/v2/a/tags/list", 2, "v1.0_rc-1~x"),
            "</v2/a/tags/list?n=2&last=v1.0_rc-1~x>; rel=\"next\""
        );
        assert_eq!(
            next_link("/v2/_catalog", 1, "a/b"),
            "</v2/_catalog?n=1&last=a%2Fb>; rel=\"next\""
        );
    }
}
