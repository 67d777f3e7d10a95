//! The `/v2` API. Repository names contain slashes, so one handler parses the path into a
//! [`Route`], the route and method into an [`Operation`], asks the access seam once for
//! what that operation needs, and hands it to the resource's module; each module is thin:
//! parse its arguments, call the content layer, write headers.

mod base;
mod blobs;
mod catalog;
mod error;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};

use crate::auth::{self, Access, Grant};
use crate::http::sendfile::ZeroCopy;
use crate::http::{Query, header_value};
use crate::oci::{Digest, ErrorCode, RegistryError, RepoName};
use crate::state::AppState;

pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
pub const DOCKER_UPLOAD_UUID: &str = "docker-upload-uuid";
pub const OCI_SUBJECT: &str = "oci-subject";
pub const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";
pub const OCI_TAG: &str = "oci-tag";

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
        let split = |pat: &'static str| -> Option<(&'a str, &'a str)> {
            let i = rest.rfind(pat)?;
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
        if let Some((name, id)) = split("/blobs/uploads/") {
            return Some(Route::Upload { name, id });
        }
        if let Some((name, reference)) = split("/manifests/") {
            return Some(Route::Manifest { name, reference });
        }
        if let Some((name, digest)) = split("/blobs/") {
            return Some(Route::Blob { name, digest });
        }
        if let Some((name, digest)) = split("/referrers/") {
            return Some(Route::Referrers { name, digest });
        }
        None
    }

    /// The route with its arguments as placeholders, in the distribution spec's notation
    /// (`/v2/<name>/blobs/<digest>`): what metrics label requests with, so that names and
    /// digests never become series.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Base => "/v2/",
            Route::Catalog => "/v2/_catalog",
            Route::Tags { .. } => "/v2/<name>/tags/list",
            Route::Manifest { .. } => "/v2/<name>/manifests/<reference>",
            Route::Blob { .. } => "/v2/<name>/blobs/<digest>",
            Route::UploadStart { .. } => "/v2/<name>/blobs/uploads/",
            Route::Upload { .. } => "/v2/<name>/blobs/uploads/<uuid>",
            Route::Referrers { .. } => "/v2/<name>/referrers/<digest>",
        }
    }

    fn name(&self) -> Option<&'a str> {
        match *self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }
}

/// What a request asks for: its route and method together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation<'a> {
    Base,
    Catalog,
    ListTags,
    GetManifest { reference: &'a str, head: bool },
    PutManifest { reference: &'a str },
    DeleteManifest { reference: &'a str },
    GetBlob { digest: &'a str, head: bool },
    DeleteBlob { digest: &'a str },
    StartUpload,
    UploadStatus { id: &'a str },
    PatchUpload { id: &'a str },
    FinishUpload { id: &'a str },
    CancelUpload { id: &'a str },
    Referrers { digest: &'a str },
}

impl<'a> Operation<'a> {
    /// The operation `method` asks of `route`, or the methods the route allows.
    pub fn of(route: &Route<'a>, method: &Method) -> std::result::Result<Self, &'static str> {
        let (get, head) = (method == Method::GET, method == Method::HEAD);
        Ok(match *route {
            Route::Base if get || head => Operation::Base,
            Route::Base => return Err("GET, HEAD"),
            Route::Catalog if get => Operation::Catalog,
            Route::Tags { .. } if get => Operation::ListTags,
            Route::Referrers { digest, .. } if get => Operation::Referrers { digest },
            Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => return Err("GET"),
            Route::Manifest { reference, .. } => match *method {
                Method::GET | Method::HEAD => Operation::GetManifest { reference, head },
                Method::PUT => Operation::PutManifest { reference },
                Method::DELETE => Operation::DeleteManifest { reference },
                _ => return Err("GET, HEAD, PUT, DELETE"),
            },
            Route::Blob { digest, .. } => match *method {
                Method::GET | Method::HEAD => Operation::GetBlob { digest, head },
                Method::DELETE => Operation::DeleteBlob { digest },
                _ => return Err("GET, HEAD, DELETE"),
            },
            Route::UploadStart { .. } if *method == Method::POST => Operation::StartUpload,
            Route::UploadStart { .. } => return Err("POST"),
            Route::Upload { id, .. } => match *method {
                Method::GET => Operation::UploadStatus { id },
                Method::PATCH => Operation::PatchUpload { id },
                Method::PUT => Operation::FinishUpload { id },
                Method::DELETE => Operation::CancelUpload { id },
                _ => return Err("GET, PATCH, PUT, DELETE"),
            },
        })
    }

    /// The access the operation needs on `name` (as distribution's `appendAccessRecords`
    /// derives it): nothing beyond coming in for the base and the catalog (which filters
    /// what it shows), pull to read, pull and push to write, delete to delete.
    pub fn access<'n>(&self, name: Option<&'n RepoName>) -> Vec<Access<'n>> {
        let Some(name) = name.map(RepoName::as_str) else {
            return Vec::new();
        };
        vec![match self {
            Operation::Base | Operation::Catalog => return Vec::new(),
            Operation::ListTags
            | Operation::GetManifest { .. }
            | Operation::GetBlob { .. }
            | Operation::UploadStatus { .. }
            | Operation::Referrers { .. } => Access::pull(name),
            Operation::PutManifest { .. }
            | Operation::StartUpload
            | Operation::PatchUpload { .. }
            | Operation::FinishUpload { .. }
            | Operation::CancelUpload { .. } => Access::push(name),
            Operation::DeleteManifest { .. } | Operation::DeleteBlob { .. } => Access::delete(name),
        }]
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
    let zero_copy = zero_copy
        .as_ref()
        .map(|Extension(z)| z)
        .filter(|_| version < Version::HTTP_2);
    handle(&state, &method, &uri, &headers, zero_copy, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    zero_copy: Option<&ZeroCopy>,
    body: Body,
) -> Result<Response> {
    let path = uri.path();
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let route = Route::parse(rest).ok_or_else(|| {
        RegistryError::new(
            ErrorCode::NameUnknown,
            format!("no registry resource at {path}"),
        )
        .with_status(StatusCode::NOT_FOUND)
    })?;
    let name = route.name().map(RepoName::parse).transpose()?;
    let op = Operation::of(&route, method).map_err(|allowed| unsupported(method, allowed))?;
    // HTTP/2 carries the host in the URI, not in a `Host` header; a challenge that sends
    // the client back to this registry needs it.
    let with_host;
    let auth_headers = match (headers.contains_key(header::HOST), uri.authority()) {
        (false, Some(authority)) => {
            let mut h = headers.clone();
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                h.insert(header::HOST, v);
            }
            with_host = h;
            &with_host
        }
        _ => headers,
    };
    let grant = auth::check(&state.access, auth_headers, &op.access(name.as_ref())).await?;
    let req = Req {
        state,
        headers,
        query: Query(uri.query().unwrap_or("")),
        zero_copy,
        grant: &grant,
    };
    let Some(name) = name else {
        return match op {
            Operation::Catalog => catalog::list(req).await,
            _ => base::check(),
        };
    };
    match op {
        Operation::Base | Operation::Catalog => base::check(),
        Operation::ListTags => tags::list(req, name).await,
        Operation::GetManifest { reference, head } => {
            manifests::get(req, name, reference, head).await
        }
        Operation::PutManifest { reference } => manifests::put(req, name, reference, body).await,
        Operation::DeleteManifest { reference } => manifests::delete(req, name, reference).await,
        Operation::GetBlob { digest, head } => blobs::get(req, name, digest, head).await,
        Operation::DeleteBlob { digest } => blobs::delete(req, name, digest).await,
        Operation::StartUpload => uploads::start(req, name, body).await,
        Operation::UploadStatus { id } => uploads::status(req, name, id).await,
        Operation::PatchUpload { id } => uploads::patch(req, name, id, body).await,
        Operation::FinishUpload { id } => uploads::finish(req, name, id, body).await,
        Operation::CancelUpload { id } => uploads::cancel(req, name, id).await,
        Operation::Referrers { digest } => referrers::list(req, name, digest).await,
    }
}

/// What every handler gets about the request, besides its route's arguments.
#[derive(Clone, Copy)]
pub struct Req<'a> {
    pub state: &'a AppState,
    pub headers: &'a HeaderMap,
    pub query: Query<'a>,
    /// Set when blob bytes may be sent by the kernel straight from their file (HTTP/1 on a
    /// plain TCP connection; see [`crate::http::sendfile`]).
    pub zero_copy: Option<&'a ZeroCopy>,
    /// What the caller was allowed, for handlers that look beyond the request's own
    /// repository (a mount's source, the catalog).
    pub grant: &'a Grant,
}

impl Req<'_> {
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        crate::http::header_str(self.headers, name)
    }
}

fn unsupported(method: &Method, allowed: &'static str) -> RegistryError {
    RegistryError::unsupported(format!(
        "method {method} is not supported here; allowed: {allowed}"
    ))
    .with_header(header::ALLOW, HeaderValue::from_static(allowed))
}

/// Parses a digest from a URL or query parameter.
pub fn parse_digest(s: &str) -> Result<Digest> {
    Ok(s.parse::<Digest>()?)
}

/// Parses `n` and `last` pagination parameters.
pub fn pagination(req: &Req<'_>, default_n: i64) -> Result<(i64, Option<String>)> {
    let n = match req.query.one("n") {
        None => default_n,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={s:?} is not a non-negative integer"),
            )
        })?,
    };
    Ok((n, req.query.one("last").filter(|l| !l.is_empty())))
}

/// `201 Created` for a stored blob or manifest: where it is now, and its digest.
pub fn created(location: String, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, header_value(location)),
            (
                HeaderName::from_static(DOCKER_CONTENT_DIGEST),
                header_value(digest.to_string()),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from_static("0")),
        ],
    )
        .into_response()
}

/// `202 Accepted` with no body: a delete was done.
pub fn accepted() -> Response {
    (StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response()
}

#[cfg(test)]
mod tests {
    use super::Route::*;
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            ("", Some(Base)),
            ("_catalog", Some(Catalog)),
            ("a/b/tags/list", Some(Tags { name: "a/b" })),
            (
                "a/manifests/v1",
                Some(Manifest {
                    name: "a",
                    reference: "v1",
                }),
            ),
            (
                "a/blobs/sha256:x",
                Some(Blob {
                    name: "a",
                    digest: "sha256:x",
                }),
            ),
            ("a/blobs/uploads/", Some(UploadStart { name: "a" })),
            (
                "a/blobs/uploads/u1",
                Some(Upload {
                    name: "a",
                    id: "u1",
                }),
            ),
            (
                "a/referrers/sha256:x",
                Some(Referrers {
                    name: "a",
                    digest: "sha256:x",
                }),
            ),
            // Keywords inside names.
            (
                "manifests/blobs/manifests/t",
                Some(Manifest {
                    name: "manifests/blobs",
                    reference: "t",
                }),
            ),
            (
                "blobs/blobs/d",
                Some(Blob {
                    name: "blobs",
                    digest: "d",
                }),
            ),
            ("a/unknown", None),
            ("/manifests/x", None),
        ];
        for (path, want) in cases {
            assert_eq!(Route::parse(path), want, "{path:?}");
        }
    }

    #[test]
    fn each_operation_asks_for_the_access_it_needs() {
        let name = RepoName::parse("team/app").unwrap();
        let cases: &[(&str, Method, Option<Access<'_>>)] = &[
            ("", Method::GET, None),
            ("_catalog", Method::GET, None),
            (
                "team/app/tags/list",
                Method::GET,
                Some(Access::pull("team/app")),
            ),
            (
                "team/app/manifests/v1",
                Method::HEAD,
                Some(Access::pull("team/app")),
            ),
            (
                "team/app/manifests/v1",
                Method::PUT,
                Some(Access::push("team/app")),
            ),
            (
                "team/app/manifests/v1",
                Method::DELETE,
                Some(Access::delete("team/app")),
            ),
            (
                "team/app/blobs/sha256:x",
                Method::GET,
                Some(Access::pull("team/app")),
            ),
            (
                "team/app/blobs/sha256:x",
                Method::DELETE,
                Some(Access::delete("team/app")),
            ),
            (
                "team/app/blobs/uploads/",
                Method::POST,
                Some(Access::push("team/app")),
            ),
            (
                "team/app/blobs/uploads/u",
                Method::GET,
                Some(Access::pull("team/app")),
            ),
            (
                "team/app/blobs/uploads/u",
                Method::PATCH,
                Some(Access::push("team/app")),
            ),
            (
                "team/app/blobs/uploads/u",
                Method::PUT,
                Some(Access::push("team/app")),
            ),
            (
                "team/app/blobs/uploads/u",
                Method::DELETE,
                Some(Access::push("team/app")),
            ),
            (
                "team/app/referrers/sha256:x",
                Method::GET,
                Some(Access::pull("team/app")),
            ),
        ];
        for (path, method, want) in cases {
            let route = Route::parse(path).unwrap();
            let op = Operation::of(&route, method).unwrap();
            let repo = route.name().map(|_| &name);
            assert_eq!(
                op.access(repo),
                want.iter().cloned().collect::<Vec<_>>(),
                "{method} {path}"
            );
        }
        let refused: &[(&str, Method, &str)] = &[
            ("", Method::POST, "GET, HEAD"),
            ("_catalog", Method::HEAD, "GET"),
            ("a/manifests/v1", Method::PATCH, "GET, HEAD, PUT, DELETE"),
            ("a/blobs/sha256:x", Method::PUT, "GET, HEAD, DELETE"),
            ("a/blobs/uploads/", Method::GET, "POST"),
            ("a/blobs/uploads/u", Method::POST, "GET, PATCH, PUT, DELETE"),
            ("a/referrers/sha256:x", Method::DELETE, "GET"),
        ];
        for (path, method, allowed) in refused {
            let route = Route::parse(path).unwrap();
            assert_eq!(
                Operation::of(&route, method),
                Err(*allowed),
                "{method} {path}"
            );
        }
    }
}
