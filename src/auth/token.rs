//! Bearer tokens of the Docker token authentication spec, checked at the registry.
//!
//! A client without a token gets `401` and a challenge (`WWW-Authenticate: Bearer realm=,
//! service=, scope=`) naming the token service and the access the request needs; it asks
//! the token service at `realm` for a token, and sends it back as `Authorization: Bearer`.
//! The token is a JWT signed by the token service (RS256/384/512 or ES256/384) whose `access`
//! claim lists what it grants:
//!
//! ```json
//! {"iss": "...", "aud": "<service>", "sub": "alice", "exp": 1700000000, "nbf": ...,
//!  "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
//!             {"type": "registry", "name": "catalog", "actions": ["*"]}]}
//! ```
//!
//! Checking one needs no database round trip: the signature (against the configured public
//! keys), issuer, audience and validity window, then the access list. A verified token is
//! kept in a bounded in-memory cache keyed by its exact text, so the signature is checked
//! once per token, not once per request (kubelets and CI reuse a token for many requests);
//! the expiry is still checked on every use.

use std::sync::Arc;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::jwt::{Claims, Verified, VerifiedCache, describe};
use super::{Access, AccessController, Action, Challenge, Credentials, Principal, Refusal};

/// `[auth.token]`: where clients get tokens, and how to check them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The token service's URL, sent to clients in the challenge.
    pub realm: String,
    /// This registry's name at the token service: the challenge's `service` and the
    /// audience (`aud`) every token must carry.
    pub service: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// PEM files with the public keys (`PUBLIC KEY`, `RSA PUBLIC KEY`) tokens may be signed
    /// with; more than one while the token service rotates its key. A list, or one string
    /// with the paths separated by commas (as `BERTH_AUTH__TOKEN__PUBLIC_KEYS` gives it).
    #[serde(deserialize_with = "paths")]
    pub public_keys: Vec<std::path::PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

fn paths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<std::path::PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<std::path::PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Into::into)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

pub struct TokenAccess {
    realm: String,
    service: String,
    keys: Vec<(Vec<Algorithm>, DecodingKey)>,
    validation: Validation,
    cache: VerifiedCache,
}

impl TokenAccess {
    /// Reads the public keys and checks the settings; errors name what is wrong.
    pub fn new(config: &TokenConfig) -> anyhow::Result<TokenAccess> {
        use anyhow::{Context, bail};
        if config.realm.is_empty() || config.service.is_empty() || config.issuer.is_empty() {
            bail!("auth.token needs realm, service and issuer");
        }
        if config.public_keys.is_empty() {
            bail!("auth.token.public_keys names no key to check tokens with");
        }
        let mut keys = Vec::new();
        for path in &config.public_keys {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading token key {}", path.display()))?;
            let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                (
                    vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                    k,
                )
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (vec![Algorithm::ES256, Algorithm::ES384], k)
            } else {
                bail!(
                    "{} is not a PEM RSA or EC public key (PUBLIC KEY / RSA PUBLIC KEY)",
                    path.display()
                );
            };
            keys.push(key);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.service]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway_seconds;
        Ok(TokenAccess {
            realm: config.realm.clone(),
            service: config.service.clone(),
            keys,
            validation,
            cache: VerifiedCache::default(),
        })
    }

    fn verify(&self, token: &str) -> Result<Verified, Refusal> {
        if let Some(hit) = self.cache.get(token, self.validation.leeway) {
            return hit.map_err(|()| Refusal::Invalid("the token has expired".into()));
        }
        let head = jsonwebtoken::decode_header(token)
            .map_err(|e| Refusal::Invalid(format!("the token is not a JWT ({e})")))?;
        let mut last = format!("tokens signed with {:?} are not accepted", head.alg);
        for (algs, key) in &self.keys {
            if !algs.contains(&head.alg) {
                continue;
            }
            let mut v = self.validation.clone();
            v.algorithms = vec![head.alg];
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => {
                    let (subject, grants) = data.claims.grants();
                    let g = (subject, Arc::new(grants));
                    self.cache.insert(token, g.clone());
                    return Ok(g);
                }
                Err(e) => last = describe(&e),
            }
        }
        Err(Refusal::Invalid(last))
    }
}

#[async_trait]
impl AccessController for TokenAccess {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, Refusal> {
        match credentials {
            Credentials::Bearer(token) => {
                let (subject, grants) = self.verify(token)?;
                Ok(Principal::Token { subject, grants })
            }
            // Anything else is no token: the client is challenged for one.
            _ => Ok(Principal::Anonymous),
        }
    }

    fn admits(&self, principal: &Principal) -> bool {
        matches!(principal, Principal::Token { .. })
    }

    fn allows(&self, principal: &Principal, repository: &str, action: Action) -> bool {
        match principal {
            Principal::Token { grants, .. } => grants.allows(repository, action),
            _ => false,
        }
    }

    fn lists(&self, principal: &Principal, repository: &str) -> bool {
        match principal {
            Principal::Token { grants, .. } => grants.lists(repository),
            _ => false,
        }
    }

    fn explain(&self, refusal: &Refusal, scope: &str) -> String {
        match refusal {
            Refusal::Missing => {
                "authentication required: get a token from the realm in WWW-Authenticate".into()
            }
            Refusal::Invalid(why) => format!("invalid token: {why}"),
            Refusal::Insufficient if scope.is_empty() => {
                "the token does not let its holder use this registry".into()
            }
            Refusal::Insufficient => format!("the token does not grant {scope}"),
            Refusal::Throttled(wait) => super::throttled(*wait),
        }
    }

    fn challenge(
        &self,
        wanted: &[Access<'_>],
        refusal: &Refusal,
        _host: Option<&str>,
    ) -> Option<Challenge> {
        Some(Challenge::bearer(
            &self.realm,
            &self.service,
            wanted,
            refusal,
        ))
    }
}
