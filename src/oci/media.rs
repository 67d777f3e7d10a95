//! Media types Berth understands as manifests.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";

/// The shape of a manifest: an image (config + layers) or an index (child manifests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

pub fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// Whether a descriptor with this media type points at a manifest (as opposed to a blob).
pub fn is_manifest(media_type: &str) -> bool {
    manifest_kind(media_type).is_some()
}

/// Every manifest media type, in the order a server prefers them.
pub const ALL_MANIFESTS: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];
