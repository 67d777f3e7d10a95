//! Secrets at rest: passwords hashed with argon2id (slow on purpose: a stolen database does
//! not give them away), robot secrets generated with 190 bits of entropy and stored as a
//! SHA-256 digest (a guess of something that random is hopeless, so a fast digest is enough
//! and checking one costs microseconds).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest as _;

/// Characters of a generated secret: letters and digits only, so it survives shells, CI
/// variables and URLs unquoted.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// 32 characters of 62: about 190 bits.
const SECRET_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the system's random number generator failed")]
    Random,
    #[error("hashing a password failed: {0}")]
    Hash(String),
}

/// Fills `buf` from the system's cryptographic random number generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), SecretError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| SecretError::Random)
}

/// A new random secret (robot secrets, generated passwords).
pub fn generate_secret() -> Result<String, SecretError> {
    let mut out = String::with_capacity(SECRET_LEN);
    let mut byte = [0u8; 1];
    while out.len() < SECRET_LEN {
        random_bytes(&mut byte)?;
        // Rejection sampling keeps every character equally likely.
        let b = byte[0] as usize;
        if b < ALPHABET.len() * (256 / ALPHABET.len()) {
            out.push(ALPHABET[b % ALPHABET.len()] as char);
        }
    }
    Ok(out)
}

/// The stored form of a generated secret.
pub fn secret_digest(secret: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    )
}

/// Whether `secret` is the one `digest` was made from (in constant time).
pub fn secret_matches(secret: &str, digest: &str) -> bool {
    let mine = secret_digest(secret);
    // Every byte is compared whatever the earlier ones were, so the time taken says
    // nothing about how much of a guess was right.
    mine.len() == digest.len()
        && mine
            .bytes()
            .zip(digest.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// An argon2id hash of `password` in PHC string form, with a random salt.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| SecretError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches a stored argon2 hash; a hash that cannot be read matches
/// nothing.
pub fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_a_fresh_salt() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(password_matches("correct horse", &a));
        assert!(!password_matches("correct horse!", &a));
        assert!(!password_matches("correct horse", "not a hash"));
    }

    #[test]
    fn secrets_are_long_alphanumeric_and_stored_as_digests() {
        let s = generate_secret().unwrap();
        assert_eq!(s.len(), SECRET_LEN);
        assert!(s.bytes().all(|c| c.is_ascii_alphanumeric()), "{s}");
        assert_ne!(s, generate_secret().unwrap());
        let d = secret_digest(&s);
        assert!(d.starts_with("sha256:") && !d.contains(&s));
        assert!(secret_matches(&s, &d));
        assert!(!secret_matches(&format!("{s}x"), &d));
    }
}
