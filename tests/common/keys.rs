//! Signing keys for token authentication (`auth.mode = "token"`): key pairs made with
//! openssl, tokens signed with them here as a token service would, and a server that
//! trusts them.

use std::path::PathBuf;
use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{Berth, Options};

/// The issuer, service and realm of the tokens [`token_claims`] makes and
/// [`start_trusting`] checks. The realm is a loopback port nothing listens on: the tests
/// sign tokens themselves; no token service runs.
pub const ISSUER: &str = "berth-test-issuer";
pub const SERVICE: &str = "berth-test";
pub const REALM: &str = "http://127.0.0.1:1/service/token";

/// Key pairs in a temporary directory: for each name, `NAME.key` (private, PKCS#8 PEM)
/// and `NAME.pub` (public PEM).
pub struct Keys {
    dir: tempfile::TempDir,
    algorithms: Vec<(String, Algorithm)>,
}

impl Keys {
    /// One key pair a name: RSA 2048 for `RS256`, EC P-256 for `ES256`.
    pub fn generate(pairs: &[(&str, Algorithm)]) -> Keys {
        let dir = tempfile::tempdir().expect("temp dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for &(name, alg) in pairs {
            let private = format!("{name}.key");
            let kind: &[&str] = match alg {
                Algorithm::RS256 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                other => panic!("no test keys for {other:?}"),
            };
            let mut args = vec!["genpkey"];
            args.extend_from_slice(kind);
            args.extend_from_slice(&["-out", &private]);
            openssl(&args);
            openssl(&[
                "pkey",
                "-in",
                &private,
                "-pubout",
                "-out",
                &format!("{name}.pub"),
            ]);
        }
        Keys {
            dir,
            algorithms: pairs.iter().map(|&(n, a)| (n.to_string(), a)).collect(),
        }
    }

    /// `name` inside the keys' directory (e.g. `rsa.pub`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The public key file of pair `name`.
    pub fn public(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.pub"))
    }

    /// The algorithm and private key of pair `name`.
    pub fn encoding(&self, name: &str) -> (Algorithm, EncodingKey) {
        let alg = self
            .algorithms
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, a)| a)
            .unwrap_or_else(|| panic!("no key pair {name:?}"));
        let pem = std::fs::read(self.path(&format!("{name}.key"))).expect("private key");
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).expect("EC key"),
            _ => EncodingKey::from_rsa_pem(&pem).expect("RSA key"),
        };
        (alg, key)
    }

    /// A JWT of `claims` signed with pair `name`.
    pub fn sign(&self, name: &str, claims: &Value) -> String {
        let (alg, key) = self.encoding(name);
        jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("sign token")
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The claims of a token from [`ISSUER`] for [`SERVICE`], subject `alice`, valid from 5 s
/// ago for 300 s, granting `access` (`[(type, name, actions)]`).
pub fn token_claims(access: &[(&str, &str, &[&str])]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": SERVICE,
        "sub": "alice",
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 300,
        "access": access
            .iter()
            .map(|(t, n, a)| json!({"type": t, "name": n, "actions": a}))
            .collect::<Vec<_>>(),
    })
}

/// A server in token mode ([`REALM`], [`SERVICE`], [`ISSUER`]) trusting the public keys of
/// `trusted` (pair names of `keys`).
pub fn start_trusting(keys: &Keys, trusted: &[&str]) -> Berth {
    let public_keys = trusted
        .iter()
        .map(|name| keys.public(name).display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    Berth::start_with(Options {
        env: vec![
            ("BERTH_AUTH__MODE".into(), "token".into()),
            ("BERTH_AUTH__TOKEN__REALM".into(), REALM.into()),
            ("BERTH_AUTH__TOKEN__SERVICE".into(), SERVICE.into()),
            ("BERTH_AUTH__TOKEN__ISSUER".into(), ISSUER.into()),
            ("BERTH_AUTH__TOKEN__PUBLIC_KEYS".into(), public_keys),
        ],
        ..Options::default()
    })
}

/// A client that sends `Authorization: Bearer TOKEN` with every request and follows no
/// redirect.
pub fn bearer(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header value"),
    );
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .expect("http client")
}
