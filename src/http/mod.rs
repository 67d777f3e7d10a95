//! HTTP helpers every front end shares: header values, query parameters, `Link` headers
//! for paginated listings, the connection rule after a refused body, and zero-copy blob
//! responses (`sendfile`).

pub mod client;
pub mod sendfile;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response, Version, header};
use axum::middleware::Next;

/// A header value from text; text that cannot be a header value becomes empty.
pub fn header_value(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).unwrap_or(HeaderValue::from_static(""))
}

/// A request header as text, if present and visible ASCII.
pub fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request's `Content-Length`, if present and a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// Whether a request carries a body: a non-zero `Content-Length`, or chunked.
pub fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// A request's query string, read by parameter name.
#[derive(Clone, Copy, Debug, Default)]
pub struct Query<'a>(pub &'a str);

impl Query<'_> {
    /// Values of a parameter, percent-decoded, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .split('&')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == key).then(|| {
                    percent_encoding::percent_decode_str(&v.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
            .collect()
    }

    /// The first value of a parameter.
    pub fn one(&self, key: &str) -> Option<String> {
        self.all(key).into_iter().next()
    }
}

/// What `last` escapes in a `Link`: everything but RFC 3986's unreserved characters, so
/// that tags such as `v1.0` come back as they are and `/` in repository names is escaped.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An RFC 5988 `Link` header for the next page of a listing.
pub fn next_link(path: &str, n: i64, last: &str) -> HeaderValue {
    let last = percent_encoding::utf8_percent_encode(last, QUERY_VALUE);
    header_value(format!("<{path}?n={n}&last={last}>; rel=\"next\""))
}

/// An error answered before the request body was read (a refused chunk, a busy upload, a
/// wrong digest) leaves the rest of the body on the connection. HTTP/1.1 cannot reuse such a
/// connection, so say so: a client that pooled it would otherwise send its next request into
/// a socket the server is closing.
pub async fn close_after_refused_body(req: Request<Body>, next: Next) -> Response<Body> {
    let http1 = req.version() < Version::HTTP_2;
    let body = has_body(req.headers());
    let mut res = next.run(req).await;
    if http1 && body && (res.status().is_client_error() || res.status().is_server_error()) {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_escape_only_what_they_must() {
        assert_eq!(
            next_link("/v2/a/tags/list", 2, "v1.0_rc-1~x"),
            "</v2/a/tags/list?n=2&last=v1.0_rc-1~x>; rel=\"next\""
        );
        assert_eq!(
            next_link("/v2/_catalog", 1, "a/b"),
            "</v2/_catalog?n=1&last=a%2Fb>; rel=\"next\""
        );
    }

    #[test]
    fn query_parameters_repeat_and_decode() {
        let q = Query("tag=a&n=1&tag=b%2Bc&tag=d+e&flag");
        assert_eq!(q.all("tag"), vec!["a", "b+c", "d e"]);
        assert_eq!(q.one("n").as_deref(), Some("1"));
        assert_eq!(q.one("flag").as_deref(), Some(""));
        assert_eq!(q.one("missing"), None);
    }
}
