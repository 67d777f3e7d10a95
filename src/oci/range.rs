//! Byte ranges in the protocol: a blob GET's `Range: bytes=...` and an upload chunk's
//! `Content-Range: <start>-<end>`.

use std::ops::Range;

/// A parsed `Range: bytes=...` request header.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=a-b` or `bytes=a-`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// Parses a single-range `Range` header. `None` for anything else: per RFC 9110 a server
/// may ignore a Range it does not understand and send the whole blob.
pub fn parse_range(value: &str) -> Option<RangeRequest> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return Some(RangeRequest::Suffix(b.parse().ok()?));
    }
    let start = a.parse().ok()?;
    let end = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(RangeRequest::From { start, end })
}

impl RangeRequest {
    /// The half-open range this request selects from a blob of `size` bytes, or `None`
    /// when it cannot be satisfied.
    pub fn resolve(&self, size: u64) -> Option<Range<u64>> {
        match *self {
            RangeRequest::From { start, end } => {
                if start >= size {
                    return None;
                }
                let end = end.map_or(size, |e| (e + 1).min(size));
                Some(start..end)
            }
            RangeRequest::Suffix(n) => {
                if n == 0 || size == 0 {
                    return None;
                }
                Some(size.saturating_sub(n)..size)
            }
        }
    }
}

/// Parses an upload chunk's `Content-Range` (`<start>-<end>`, inclusive; a `bytes ` or
/// `bytes=` prefix and a `/total` suffix are tolerated) into `(start, end)`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .map(|r| r.trim_start_matches([' ', '=']))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b >= a).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-9"),
            Some(RangeRequest::From {
                start: 0,
                end: Some(9)
            })
        );
        assert_eq!(
            parse_range("bytes=5-"),
            Some(RangeRequest::From {
                start: 5,
                end: None
            })
        );
        assert_eq!(parse_range("bytes=-3"), Some(RangeRequest::Suffix(3)));
        assert_eq!(parse_range("bytes=9-0"), None);
        assert_eq!(parse_range("bytes=0-1,3-4"), None);
        assert_eq!(parse_range("items=0-1"), None);
        let from = |start, end| RangeRequest::From { start, end };
        assert_eq!(from(0, Some(99)).resolve(10), Some(0..10));
        assert_eq!(from(10, None).resolve(10), None);
        assert_eq!(RangeRequest::Suffix(3).resolve(10), Some(7..10));
        assert_eq!(RangeRequest::Suffix(30).resolve(10), Some(0..10));
        assert_eq!(RangeRequest::Suffix(0).resolve(10), None);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-9"), Some((0, 9)));
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 19)));
        assert_eq!(parse_content_range("bytes=10-19"), Some((10, 19)));
        assert_eq!(parse_content_range("9-0"), None);
        assert_eq!(parse_content_range("x"), None);
    }
}
