//! `GET /v2/<name>/referrers/<digest>`: manifests whose subject is `digest`, as an image index.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{OCI_FILTERS_APPLIED, Req, Result, parse_digest};
use crate::oci::{RepoName, media};

pub async fn list(req: Req<'_>, name: RepoName, digest: &str) -> Result<Response> {
    let subject = parse_digest(digest)?;
    let filter = req.query.one("artifactType").filter(|a| !a.is_empty());
    let referrers = req
        .state
        .content
        .referrers(&name, &subject, filter.as_deref())
        .await?;
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
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
