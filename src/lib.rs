//! Berth: an OCI distribution registry server.
//!
//! The folders are the architecture: `oci` (the protocol, IO-free), `storage` (blob
//! store seam), `metadata` (metadata store seam), `registry` (the `/v2` handlers),
//! `auth` (access control seam), `app` (state and router), `config`, `server`, `sendfile`
//! (zero-copy blob responses).

pub mod app;
pub mod auth;
pub mod config;
pub mod metadata;
pub mod oci;
pub mod registry;
pub mod sendfile;
pub mod server;
pub mod storage;
