//! Berth: an OCI distribution registry server.
//!
//! The folders are the architecture: `oci` (the protocol, IO-free), `storage` (the blob
//! store seam), `metadata` (the metadata store seam), `content` (what each change does to
//! both stores), `auth` (the access seam), `registry` (the `/v2` handlers), `http` (HTTP
//! helpers every front end shares), `state` (the stores and access controller a server
//! holds), `app` (the router), `config`, `server`.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod content;
pub mod http;
pub mod jobs;
pub mod metadata;
pub mod oci;
pub mod ops;
pub mod registry;
pub mod server;
pub mod state;
pub mod storage;
pub mod web;
