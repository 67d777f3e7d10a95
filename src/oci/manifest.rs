//! Manifest parsing: what a pushed manifest is, what it references, its subject and
//! artifactType. The registry keeps the pushed bytes exactly; this module only reads them.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::media::{self, ManifestKind};

/// A content descriptor as it appears in manifests and in referrers responses.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// The fields of a manifest that the registry acts on; unknown fields are ignored here
/// and kept in the stored bytes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A manifest as the registry understands it.
#[derive(Clone, Debug)]
pub struct ParsedManifest {
    /// The manifest's media type: its own `mediaType`, or the request's `Content-Type`.
    pub media_type: String,
    pub kind: ManifestKind,
    /// Blobs this manifest needs in the repository (config and layers of an image).
    pub blobs: Vec<Descriptor>,
    /// Manifests this manifest needs in the repository (children of an index).
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without one, its config media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON of a manifest: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error(
        "manifest has no mediaType and the request has no manifest Content-Type; send Content-Type: {}",
        media::OCI_MANIFEST
    )]
    NoMediaType,
    #[error("manifest media type {0:?} is not supported; supported: {supported}", supported = media::ALL_MANIFESTS.join(", "))]
    UnsupportedMediaType(String),
    #[error("manifest declares mediaType {body:?} but was sent with Content-Type {header:?}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("manifest of type {0} must have {1}")]
    MissingField(String, &'static str),
    #[error("manifest of type {0} must not have {1}")]
    UnexpectedField(String, &'static str),
    #[error("descriptor {0} has a negative size")]
    NegativeSize(Digest),
    #[error("descriptor {0} carries data that is not base64 or does not match its digest and size")]
    BadData(Digest),
}

/// Parses a manifest body. `content_type` is the request's Content-Type, if any.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    // A Content-Type that is not a manifest type (e.g. application/octet-stream sent by a
    // careless client) is not treated as a declaration.
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && media::is_manifest(c));
    let media_type = match (&raw.media_type, header) {
        (Some(body), Some(header)) if body != header => {
            return Err(ManifestError::MediaTypeMismatch {
                body: body.clone(),
                header: header.to_string(),
            });
        }
        (Some(body), _) => body.clone(),
        (None, Some(header)) => header.to_string(),
        (None, None) => match (&raw.manifests, &raw.config) {
            (Some(_), None) => media::OCI_INDEX.to_string(),
            (None, Some(_)) => media::OCI_MANIFEST.to_string(),
            _ => return Err(ManifestError::NoMediaType),
        },
    };
    let kind = media::manifest_kind(&media_type)
        .ok_or_else(|| ManifestError::UnsupportedMediaType(media_type.clone()))?;

    let (blobs, manifests) = match kind {
        ManifestKind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::UnexpectedField(media_type, "manifests"));
            }
            let config = raw
                .config
                .clone()
                .ok_or_else(|| ManifestError::MissingField(media_type.clone(), "config"))?;
            let layers = raw
                .layers
                .clone()
                .ok_or_else(|| ManifestError::MissingField(media_type.clone(), "layers"))?;
            let mut blobs = vec![config];
            blobs.extend(layers);
            (blobs, Vec::new())
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::UnexpectedField(
                    media_type,
                    "config or layers",
                ));
            }
            let manifests = raw
                .manifests
                .clone()
                .ok_or_else(|| ManifestError::MissingField(media_type.clone(), "manifests"))?;
            (Vec::new(), manifests)
        }
    };
    for d in blobs
        .iter()
        .chain(manifests.iter())
        .chain(raw.subject.iter())
    {
        check_descriptor(d)?;
    }
    // An empty artifactType counts as missing (distribution-spec, "Listing Referrers").
    let artifact_type =
        raw.artifact_type
            .clone()
            .filter(|a| !a.is_empty())
            .or_else(|| match kind {
                ManifestKind::Image => raw.config.as_ref().map(|c| c.media_type.clone()),
                ManifestKind::Index => None,
            });
    Ok(ParsedManifest {
        media_type,
        kind,
        blobs,
        manifests,
        subject: raw.subject,
        artifact_type,
        annotations: raw.annotations,
    })
}

fn check_descriptor(d: &Descriptor) -> Result<(), ManifestError> {
    if d.size < 0 {
        return Err(ManifestError::NegativeSize(d.digest.clone()));
    }
    if let Some(data) = &d.data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| ManifestError::BadData(d.digest.clone()))?;
        if bytes.len() as i64 != d.size || Digest::compute(d.digest.algorithm(), &bytes) != d.digest
        {
            return Err(ManifestError::BadData(d.digest.clone()));
        }
    }
    Ok(())
}

impl Descriptor {
    /// Layers that live elsewhere (foreign/non-distributable, with URLs) need not be in
    /// the registry.
    pub fn is_external(&self) -> bool {
        self.urls.as_ref().is_some_and(|u| !u.is_empty())
            && (self.media_type.contains("foreign") || self.media_type.contains("nondistributable"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}]{extra}}}"#,
            media::OCI_MANIFEST,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn image_manifest_references_config_and_layers() {
        let m = parse(image("").as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn empty_artifact_type_counts_as_missing() {
        let m = parse(image(r#","artifactType":"""#).as_bytes(), None).unwrap();
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"","manifests":[]}}"#,
            media::OCI_INDEX
        );
        assert_eq!(parse(idx.as_bytes(), None).unwrap().artifact_type, None);
    }

    #[test]
    fn unknown_fields_are_accepted() {
        assert!(parse(image(r#","x-unknown":{"deep":[1,2]}"#).as_bytes(), None).is_ok());
    }

    #[test]
    fn contradicting_media_type_is_refused() {
        let e = parse(image("").as_bytes(), Some(media::OCI_INDEX)).unwrap_err();
        assert!(matches!(e, ManifestError::MediaTypeMismatch { .. }));
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[],"config":{{"mediaType":"x","digest":"{}","size":1}}}}"#,
            media::OCI_INDEX,
            d('c')
        );
        assert!(matches!(
            parse(idx.as_bytes(), None),
            Err(ManifestError::UnexpectedField(..))
        ));
    }

    #[test]
    fn not_json_is_refused() {
        assert!(matches!(parse(b"nope", None), Err(ManifestError::Json(_))));
        assert!(matches!(
            parse(b"{\"schemaVersion\":1}", None),
            Err(ManifestError::SchemaVersion)
        ));
    }

    #[test]
    fn data_field_must_match() {
        let good = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":2,"data":"e30="}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::OCI_EMPTY_JSON,
            Digest::sha256(b"{}")
        );
        assert!(parse(good.as_bytes(), None).is_ok());
        let bad = good.replace("e30=", "e31=");
        assert!(matches!(
            parse(bad.as_bytes(), None),
            Err(ManifestError::BadData(_))
        ));
    }
}
