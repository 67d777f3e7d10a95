//! Repository names and references (tag or digest), per the distribution-spec grammar:
//!
//! ```text
//! name      = component ("/" component)*
//! component = [a-z0-9]+ (separator [a-z0-9]+)*
//! separator = "." | "_" | "__" | "-"+
//! tag       = [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! ```

use std::fmt;

use super::digest::{Digest, DigestError};

/// Longest repository name accepted; distribution uses the same bound.
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;

/// A validated repository name such as `library/nginx`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "repository name {0:?} is invalid: use lower-case components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'"
    )]
    Invalid(String),
    #[error("repository name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        let sep = b[i];
        while i < b.len() && !alnum(b[i]) {
            if b[i] != sep {
                return false;
            }
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.len()));
        }
        if s.split('/').all(valid_component) {
            Ok(RepoName(s.to_string()))
        } else {
            Err(NameError::Invalid(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(
        "tag {0:?} is invalid: up to 128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"
    )]
    Tag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else if valid_tag(s) {
            Ok(Reference::Tag(s.to_string()))
        } else {
            Err(ReferenceError::Tag(s.to_string()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for n in ["a", "library/nginx", "a.b_c__d---e/f0", "x/y/z", "0"] {
            assert!(RepoName::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for n in [
            "", "A", "a//b", "/a", "a/", "a..b", "a___b", "-a", "a-", "a_.b", "a b", "a:b",
        ] {
            assert!(RepoName::parse(n).is_err(), "{n}");
        }
        assert_eq!(
            RepoName::parse(&"a".repeat(256)),
            Err(NameError::TooLong(256))
        );
    }

    #[test]
    fn tags() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_v1.2-rc3"));
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag(".hidden"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag("a+b"));
        assert!(!valid_tag(""));
    }

    #[test]
    fn references() {
        assert_eq!(Reference::parse("v1"), Ok(Reference::Tag("v1".into())));
        assert!(matches!(
            Reference::parse(&format!("sha256:{}", "a".repeat(64))),
            Ok(Reference::Digest(_))
        ));
        assert!(Reference::parse("sha256:zz").is_err());
        assert!(Reference::parse("bad tag").is_err());
    }
}
