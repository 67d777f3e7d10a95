//! JSON Web Tokens of the Docker token authentication spec: the claims both token backends
//! read, the keys the built-in token service signs with, and a cache of verified tokens.
//!
//! A token's `access` claim lists what it grants:
//!
//! ```json
//! {"iss": "...", "aud": "<service>", "sub": "alice", "exp": 1700000000, "nbf": ...,
//!  "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
//!             {"type": "registry", "name": "catalog", "actions": ["*"]}]}
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use super::{Action, TokenGrants};

/// How many verified tokens a cache remembers; it starts over when it is full.
const CACHE_ENTRIES: usize = 4096;

#[derive(Debug, Deserialize, Serialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    /// One audience or a list of them (jsonwebtoken checks it while decoding).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub aud: serde_json::Value,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

/// One entry of the `access` claim (and of a token request's `scope`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

impl Claims {
    /// The `access` claim as grants; actions this registry does not know are ignored.
    pub fn grants(self) -> (String, TokenGrants) {
        let mut grants = TokenGrants {
            expires_at: self.exp,
            ..TokenGrants::default()
        };
        for e in self.access {
            match e.kind.as_str() {
                "repository" => {
                    let actions = grants.repositories.entry(e.name).or_default();
                    for a in &e.actions {
                        let add: &[Action] = match a.as_str() {
                            "pull" => &[Action::Pull],
                            "push" => &[Action::Push],
                            "delete" => &[Action::Delete],
                            "*" => &[Action::Pull, Action::Push, Action::Delete],
                            _ => &[],
                        };
                        for x in add {
                            if !actions.contains(x) {
                                actions.push(*x);
                            }
                        }
                    }
                }
                "registry" if e.name == "catalog" => {
                    grants.catalog |= e.actions.iter().any(|a| a == "*");
                }
                "project" if e.actions.iter().any(|a| a == "pull") => {
                    grants.listed_projects.insert(e.name);
                }
                _ => {}
            }
        }
        (self.sub, grants)
    }
}

/// A JWT error as a sentence for the client.
pub fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".into(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        K::InvalidSignature => "the signature does not match any configured key".into(),
        K::InvalidIssuer => "the token was issued by another issuer".into(),
        K::InvalidAudience => "the token is for another service (aud)".into(),
        K::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        other => format!("{other:?}"),
    }
}

/// A verified token: its subject and grants.
pub type Verified = (String, Arc<TokenGrants>);

/// Verified tokens by their exact text, so a signature is checked once per token rather
/// than once per request (kubelets and CI reuse a token for many requests). The expiry is
/// still checked on every use.
#[derive(Default)]
pub struct VerifiedCache(RwLock<HashMap<String, Verified>>);

impl VerifiedCache {
    /// A remembered token, unless it has expired (`Err`) or is not remembered (`None`).
    pub fn get(&self, token: &str, leeway: u64) -> Option<Result<Verified, ()>> {
        let hit = self.0.read().ok()?.get(token).cloned()?;
        let now = jsonwebtoken::get_current_timestamp();
        Some(if hit.1.expires_at + leeway > now {
            Ok(hit)
        } else {
            Err(())
        })
    }

    pub fn insert(&self, token: &str, verified: Verified) {
        if let Ok(mut c) = self.0.write() {
            if c.len() >= CACHE_ENTRIES {
                c.clear();
            }
            c.insert(token.to_string(), verified);
        }
    }
}

/// An ECDSA P-256 key the built-in token service signs with (ES256), kept as PKCS#8.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating a signing key failed")]
    Generate,
    #[error(
        "the signing key is not a PEM PKCS#8 EC P-256 private key (-----BEGIN PRIVATE KEY-----; \
         make one with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`)"
    )]
    NotP256,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Generate)?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| KeyError::NotP256)?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(SigningKey {
            kid: key_id(&public),
            pkcs8: pkcs8.to_vec(),
            public,
        })
    }

    /// Reads a `PRIVATE KEY` PEM block (PKCS#8).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let body: String = pem
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| KeyError::NotP256)?;
        SigningKey::from_pkcs8(&der)
    }

    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    pub fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ec_der(&self.pkcs8)
    }

    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ec_der(&self.public)
    }
}

/// A key's id (`kid`): the first 16 bytes of the SHA-256 of its public point, in hex.
fn key_id(public: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(public)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_and_keep_their_id() {
        let k = SigningKey::generate().unwrap();
        let back = SigningKey::from_pem(&k.to_pem()).unwrap();
        assert_eq!(back.kid, k.kid);
        assert_eq!(k.kid.len(), 32);
        assert_ne!(SigningKey::generate().unwrap().kid, k.kid);
        assert!(matches!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(KeyError::NotP256)
        ));
    }

    #[test]
    fn a_signed_token_verifies_with_its_key_only() {
        let k = SigningKey::generate().unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(k.kid.clone());
        let claims = Claims {
            iss: "berth".into(),
            sub: "alice".into(),
            aud: "registry".into(),
            exp: jsonwebtoken::get_current_timestamp() + 60,
            nbf: None,
            iat: None,
            jti: None,
            access: vec![AccessEntry {
                kind: "repository".into(),
                name: "a/b".into(),
                actions: vec!["pull".into()],
            }],
        };
        let token = jsonwebtoken::encode(&header, &claims, &k.encoding_key()).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&["registry"]);
        let got = jsonwebtoken::decode::<Claims>(&token, &k.decoding_key(), &v).unwrap();
        let (sub, grants) = got.claims.grants();
        assert_eq!(sub, "alice");
        assert!(grants.allows("a/b", Action::Pull));
        assert!(!grants.allows("a/b", Action::Push));
        let other = SigningKey::generate().unwrap();
        assert!(jsonwebtoken::decode::<Claims>(&token, &other.decoding_key(), &v).is_err());
    }
}
