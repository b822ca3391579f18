//! Which address a request comes from.
//!
//! The address is the connection's peer, read from the request's extensions: a
//! [`ClientAddr`] you insert (plain hyper), or axum's `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`). `Forwarded` and
//! `X-Forwarded-For` are believed only when the peer is one of the configured trusted
//! proxies; then the client is the rightmost address that is not a trusted proxy, so a
//! client cannot spoof its address by sending the header itself.
//!
//! ```
//! use keygate::client_ip::ClientIpSource;
//!
//! // Behind one load balancer at 10.0.0.5:
//! let source = ClientIpSource::new().trust_proxies(["10.0.0.5/32".parse().unwrap()]);
//! # let _ = source;
//! ```

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// The peer address of a connection, for services that are not axum: insert it into each
/// request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// How the layer finds the client's address.
#[derive(Debug, Clone, Default)]
pub struct ClientIpSource {
    trusted: Vec<IpNet>,
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) become plain IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Parses one `X-Forwarded-For` element or `Forwarded: for=` value: a bare address,
/// `"[v6]:port"`, `v4:port`, optionally quoted.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        return rest[..end].parse().ok().map(canonical);
    }
    s.parse::<SocketAddr>().ok().map(|a| canonical(a.ip()))
}

impl ClientIpSource {
    /// Only the socket peer; forwarding headers are ignored.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Believes forwarding headers from peers in these networks.
    #[must_use]
    pub fn trust_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted.extend(nets);
        self
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request, from its extensions and headers; `None` when the
    /// peer is unknown.
    #[must_use]
    pub fn client_ip(&self, extensions: &http::Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer(extensions)?;
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return Some(peer);
        }
        // The forwarding chain, nearest hop last: `Forwarded` (RFC 7239) if present, else
        // `X-Forwarded-For`.
        let mut chain: Vec<IpAddr> = Vec::new();
        let forwarded: Vec<_> = headers.get_all(http::header::FORWARDED).iter().collect();
        if !forwarded.is_empty() {
            for v in forwarded {
                let Ok(v) = v.to_str() else { return Some(peer) };
                for element in v.split(',') {
                    for pair in element.split(';') {
                        if let Some((k, val)) = pair.split_once('=')
                            && k.trim().eq_ignore_ascii_case("for")
                        {
                            match parse_node(val) {
                                Some(ip) => chain.push(ip),
                                // `unknown` or an obfuscated node: stop believing the chain.
                                None => return Some(peer),
                            }
                        }
                    }
                }
            }
        } else {
            for v in headers.get_all("x-forwarded-for") {
                let Ok(v) = v.to_str() else { return Some(peer) };
                for part in v.split(',') {
                    match parse_node(part) {
                        Some(ip) => chain.push(ip),
                        None => return Some(peer),
                    }
                }
            }
        }
        // Walk from the nearest hop outwards; the first untrusted address is the client.
        let mut client = peer;
        for ip in chain.into_iter().rev() {
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Some(client)
    }
}

fn peer(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(ClientAddr(a)) = extensions.get::<ClientAddr>() {
        return Some(canonical(a.ip()));
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(a)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(canonical(a.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(peer: &str) -> http::Extensions {
        let mut e = http::Extensions::new();
        e.insert(ClientAddr(peer.parse().unwrap()));
        e
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn untrusted_peers_cannot_spoof_with_headers() {
        let src = ClientIpSource::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            src.client_ip(&ext("203.0.113.9:5000"), &h),
            ip("203.0.113.9")
        );
        assert_eq!(
            ClientIpSource::new().client_ip(&ext("10.0.0.1:1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let src = ClientIpSource::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
        // The client sent a forged first element; the proxy appended the real address.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(src.client_ip(&ext("10.0.0.2:443"), &h), ip("198.51.100.7"));
        let h = headers(&[("forwarded", "for=6.6.6.6, for=\"[2001:db8::7]:4711\"")]);
        assert_eq!(src.client_ip(&ext("10.0.0.2:443"), &h), ip("2001:db8::7"));
        let h = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(src.client_ip(&ext("10.0.0.2:443"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn mapped_ipv4_is_canonical_and_no_peer_is_none() {
        let src = ClientIpSource::new();
        assert_eq!(
            src.client_ip(&ext("[::ffff:192.0.2.1]:80"), &HeaderMap::new()),
            ip("192.0.2.1")
        );
        assert_eq!(
            src.client_ip(&http::Extensions::new(), &HeaderMap::new()),
            None
        );
    }
}
