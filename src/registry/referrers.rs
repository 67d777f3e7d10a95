//! `GET /v2/<name>/referrers/<digest>`: manifests whose subject is `digest`, as an image index.

use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};

use super::{OCI_FILTERS_APPLIED, Req, Result};
use crate::auth::Access;
use crate::oci::{Digest, ErrorCode, RegistryError, RepoName, media};

pub async fn handle(req: Req<'_>, name: RepoName, digest: &str) -> Result<Response> {
    if req.method != Method::GET {
        return Err(req.unsupported("GET"));
    }
    req.state
        .access
        .authorize(req.headers, &[Access::pull(name.as_str())])
        .await?;
    let subject: Digest = digest
        .parse()
        .map_err(|e: crate::oci::digest::DigestError| {
            RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
        })?;
    let filter = req.query_one("artifactType").filter(|a| !a.is_empty());
    let referrers = req
        .state
        .meta
        .referrers(&name, &subject, filter.as_deref())
        .await
        .map_err(RegistryError::internal)?;
    let manifests: Vec<serde_json::Value> = referrers
        .into_iter()
        .map(|r| {
            let mut d = serde_json::json!({
                "mediaType": r.media_type,
                "digest": r.digest.to_string(),
                "size": r.size,
            });
            if let Some(at) = r.artifact_type {
                d["artifactType"] = at.into();
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let mut resp = ([(header::CONTENT_TYPE, media::OCI_INDEX)], body).into_response();
    if filter.is_some() {
        resp.headers_mut().insert(
            OCI_FILTERS_APPLIED,
            header::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
