//! The access seam. Every handler asks one question, "may this request do these actions
//! on these repositories?", through [`AccessController`]; which backend answers (open,
//! token service) is decided once, in `app.rs`.

pub mod token;

use async_trait::async_trait;
use axum::http::HeaderMap;

use crate::oci::RegistryError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

/// Actions wanted on one repository.
#[derive(Clone, Debug)]
pub struct Access<'a> {
    pub repository: &'a str,
    pub actions: &'a [Action],
}

impl<'a> Access<'a> {
    pub fn pull(repository: &'a str) -> Access<'a> {
        Access {
            repository,
            actions: &[Action::Pull],
        }
    }

    pub fn push(repository: &'a str) -> Access<'a> {
        Access {
            repository,
            actions: &[Action::Pull, Action::Push],
        }
    }

    pub fn delete(repository: &'a str) -> Access<'a> {
        Access {
            repository,
            actions: &[Action::Delete],
        }
    }
}

/// What an authorized request may do beyond what it asked for; used to filter listings
/// (the catalog shows only what the caller may pull).
pub trait Grant: Send + Sync {
    fn may_pull(&self, repository: &str) -> bool;
}

#[async_trait]
pub trait AccessController: Send + Sync + 'static {
    /// Grants the `wanted` access or returns the error (401 with a challenge, or 403)
    /// the client must see. An empty `wanted` asks only to be let in (`/v2/`, catalog).
    async fn authorize(
        &self,
        headers: &HeaderMap,
        wanted: &[Access<'_>],
    ) -> Result<Box<dyn Grant>, RegistryError>;
}

/// Lets everyone do everything: the registry before authentication is configured.
pub struct OpenAccess;

struct Everything;

impl Grant for Everything {
    fn may_pull(&self, _repository: &str) -> bool {
        true
    }
}

#[async_trait]
impl AccessController for OpenAccess {
    async fn authorize(
        &self,
        _headers: &HeaderMap,
        _wanted: &[Access<'_>],
    ) -> Result<Box<dyn Grant>, RegistryError> {
        Ok(Box::new(Everything))
    }
}
