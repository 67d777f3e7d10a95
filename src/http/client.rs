//! Where a request comes from: the peer's address or, when the peer is a proxy the
//! configuration trusts (`server.trusted_proxies`), the client that proxy names in
//! `X-Forwarded-For`. Failed logins are throttled per source with it.
//!
//! The address is set for the duration of each request (a task-local, like the request's
//! tracing span), so the code that checks credentials reads it without every front end
//! passing it along. Outside a request (the admin CLI, unit tests) there is none.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Request, Response};
use axum::middleware::Next;
use ipnet::IpNet;

tokio::task_local! {
    static CLIENT: IpAddr;
}

/// The address of the client whose request is being served, if known.
pub fn client_address() -> Option<IpAddr> {
    CLIENT.try_with(|a| *a).ok()
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Arc<[IpNet]>);

impl TrustedProxies {
    fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`: walking `X-Forwarded-For` from the right (each proxy
    /// appends the address it received from), the first hop that is not a trusted proxy.
    /// A value that does not parse ends the walk at the last trusted hop.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(addr) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = canonical(addr);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// IPv4 clients of a dual-stack listener arrive as `::ffff:a.b.c.d`; they are the same
/// client as `a.b.c.d`.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Middleware: serves the request with its client's address set (see [`client_address`]).
/// Requests that did not come through a listener (no peer address) are served without one.
pub async fn with_client_address(
    State(proxies): State<TrustedProxies>,
    request: Request<Body>,
    next: Next,
) -> Response<Body> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match peer {
        Some(peer) => {
            let client = proxies.client(peer, request.headers());
            CLIENT.scope(client, next.run(request)).await
        }
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(
            nets.iter()
                .map(|n| n.parse().expect("test network"))
                .collect(),
        )
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("test header"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = forwarded(&["1.2.3.4"]);
        assert_eq!(p.client(ip("192.0.2.7"), &h), ip("192.0.2.7"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.1.1.1"), &h),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_spoofed_hops_to_its_left_are_ignored() {
        let p = proxies(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client claims to be 6.6.6.6; the first proxy appended its real address.
        let h = forwarded(&["6.6.6.6, 198.51.100.9", "10.2.3.4"]);
        assert_eq!(p.client(ip("127.0.0.1"), &h), ip("198.51.100.9"));
        assert_eq!(p.client(ip("::ffff:127.0.0.1"), &h), ip("198.51.100.9"));
    }

    #[test]
    fn a_trusted_proxy_without_a_usable_header_is_the_client() {
        let p = proxies(&["127.0.0.1/32"]);
        assert_eq!(
            p.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            p.client(ip("127.0.0.1"), &forwarded(&["not-an-address"])),
            ip("127.0.0.1")
        );
        assert_eq!(
            p.client(ip("127.0.0.1"), &forwarded(&["2001:db8::1"])),
            ip("2001:db8::1")
        );
    }
}
