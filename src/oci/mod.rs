//! The OCI distribution protocol, pure and IO-free: digests, the name and
//! reference grammar, media types, manifest parsing, byte ranges and the error codes.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;
pub mod range;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::{ErrorCode, RegistryError};
pub use name::{Reference, RepoName};
