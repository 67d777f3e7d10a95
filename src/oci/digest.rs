//! Content digests (`algorithm:hex`) in the two registered algorithms, and a
//! hasher whose state can be saved and resumed, so that an upload can move
//! between replicas without re-reading what was already hashed.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest: a registered algorithm and lower-case hex of the right length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form algorithm:hex")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported; use sha256 or sha512")]
    UnsupportedAlgorithm(String),
    #[error(
        "digest {0:?} has an encoded part of the wrong length or with characters other than 0-9a-f"
    )]
    BadEncoding(String),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn compute(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::compute(Algorithm::Sha256, bytes)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        // The grammar's algorithm component: [a-z0-9]+([+._-][a-z0-9]+)*
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !alg_ok || hex.is_empty() {
            return Err(DigestError::Malformed(s.to_string()));
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_string())),
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadEncoding(s.to_string()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for either algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest { algorithm, hex }
    }

    /// The hasher's internal state, to resume it later (possibly in another process).
    /// The first byte names the algorithm.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        match self {
            Hasher::Sha256(h) => {
                out.push(1);
                out.extend_from_slice(h.serialize().as_slice());
            }
            Hasher::Sha512(h) => {
                out.push(2);
                out.extend_from_slice(h.serialize().as_slice());
            }
        }
        out
    }

    /// Restores a state written by [`Hasher::save`]; `None` if it is not one.
    pub fn restore(saved: &[u8]) -> Option<Hasher> {
        let (tag, state) = saved.split_first()?;
        match tag {
            1 => {
                let s = SerializedState::<sha2::Sha256>::try_from(state).ok()?;
                sha2::Sha256::deserialize(&s).ok().map(Hasher::Sha256)
            }
            2 => {
                let s = SerializedState::<sha2::Sha512>::try_from(state).ok()?;
                sha2::Sha512::deserialize(&s).ok().map(Hasher::Sha512)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_registered_algorithms() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        let d: Digest = format!("sha512:{}", "0".repeat(128)).parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(matches!(
            "sha256".parse::<Digest>(),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            format!("md5:{}", "a".repeat(32)).parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            format!("sha256:{}", "A".repeat(64)).parse::<Digest>(),
            Err(DigestError::BadEncoding(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Digest>(),
            Err(DigestError::BadEncoding(_))
        ));
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            Digest::sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(
            Digest::compute(Algorithm::Sha512, b"abc")
                .hex()
                .starts_with("ddaf35a193617aba")
        );
    }

    #[test]
    fn saved_state_resumes_to_the_same_digest() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = Hasher::new(alg);
            h.update(b"hello, ");
            let saved = h.save();
            let mut resumed = Hasher::restore(&saved).unwrap();
            resumed.update(b"world");
            assert_eq!(resumed.finish(), Digest::compute(alg, b"hello, world"));
        }
        assert!(Hasher::restore(b"\x01short").is_none());
    }
}
