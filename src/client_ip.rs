//! Which address a request comes from.
//!
//! The address is the connection's peer, read from the request's extensions: a
//! [`ClientAddr`] you insert (plain hyper), or axum's `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`). When the peer is one of the
//! configured trusted proxies, the client's address is read from ONE forwarding header,
//! the one the operator names ([`ClientIpHeader`], by default `X-Forwarded-For`); every
//! other forwarding header is ignored, so a client cannot add a `Forwarded` header next to
//! the proxy's `X-Forwarded-For` (or the other way round) and be believed.
//!
//! A list header (`X-Forwarded-For`, `Forwarded`) is walked from the right, the nearest hop
//! first, skipping trusted proxies; the first address that is not a trusted proxy is the
//! client. Whatever stands left of it was written by the client and is never read. A hop
//! at or right of that point that is not an address (garbage, `unknown`, an obfuscated
//! RFC 7239 node, a value that is not UTF-8) makes the client **unknown**, as does a
//! single-value header (`X-Real-IP`, `CF-Connecting-IP`, …) sent more than once or
//! holding something other than one address. An unknown client is never guessed: a token
//! with an allow-list is refused (403 `ip_not_allowed`), and failure limits count against
//! the socket peer (see [`Addresses::failure_key`]). When the trusted proxy sends no such
//! header at all, the request is the proxy's own and the client is the peer.
//!
//! When the peer is not a trusted proxy, every forwarding header is ignored and the
//! client is the peer.
//!
//! ```
//! use keygate::client_ip::{ClientIpHeader, ClientIpSource};
//!
//! // Behind one load balancer at 10.0.0.5 that appends to X-Forwarded-For:
//! let source = ClientIpSource::new().trust_proxies(["10.0.0.5/32".parse().unwrap()]);
//! // Behind Cloudflare, which sets CF-Connecting-IP:
//! let source = ClientIpSource::new()
//!     .trust_proxies(["173.245.48.0/20".parse().unwrap()])
//!     .with_header(ClientIpHeader::single("cf-connecting-ip").unwrap());
//! # let _ = source;
//! ```

// Written by hand rather than on the `client-ip` crate: that crate reads only the
// rightmost element of a list header (it cannot walk past a chain of several trusted
// proxies), offers single-value headers only from a fixed list of names (its generic
// reader is private), and copies the header value into every error; keygate needs the
// walk, any header name, and no allocation on the fast path.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// The peer address of a connection, for services that are not axum: insert it into each
/// request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The one forwarding header a trusted proxy's client address is read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`: a comma-separated list, each proxy appending the address it
    /// received the request from (nginx `$proxy_add_x_forwarded_for`, AWS ALB, most
    /// ingresses). The default.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239): the `for=` parameter of each element, walked like
    /// `X-Forwarded-For`.
    Forwarded,
    /// `X-Real-IP` (nginx `proxy_set_header X-Real-IP $remote_addr`): one address.
    XRealIp,
    /// Another header holding one address, set (not appended to) by the proxy, e.g.
    /// `CF-Connecting-IP` or `True-Client-IP`.
    Single(HeaderName),
}

/// A header name that is not a valid HTTP header name.
#[derive(Debug, thiserror::Error)]
#[error("invalid client address header name")]
pub struct InvalidHeaderName;

impl ClientIpHeader {
    /// A single-value header by name (any case).
    ///
    /// # Errors
    ///
    /// [`InvalidHeaderName`] when `name` is not a header name.
    pub fn single(name: &str) -> Result<Self, InvalidHeaderName> {
        HeaderName::from_bytes(name.trim().as_bytes())
            .map(Self::Single)
            .map_err(|_| InvalidHeaderName)
    }

    /// Reads a setting: `x-forwarded-for`, `forwarded`, `x-real-ip` (any case), or any
    /// other header name for a single-value header.
    ///
    /// # Errors
    ///
    /// [`InvalidHeaderName`] when `name` is none of these.
    pub fn parse(name: &str) -> Result<Self, InvalidHeaderName> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            Ok(Self::XForwardedFor)
        } else if name.eq_ignore_ascii_case("forwarded") {
            Ok(Self::Forwarded)
        } else if name.eq_ignore_ascii_case("x-real-ip") {
            Ok(Self::XRealIp)
        } else {
            Self::single(name)
        }
    }

    /// The header's name.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
            Self::XRealIp => "x-real-ip",
            Self::Single(name) => name.as_str(),
        }
    }
}

/// How the layer finds the client's address: the trusted proxies and the one header they
/// set. Without trusted proxies, only the socket peer counts.
#[derive(Debug, Clone, Default)]
pub struct ClientIpSource {
    trusted: Vec<IpNet>,
    header: ClientIpHeader,
}

/// The addresses of one request: the client's, when known, and the socket peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Addresses {
    /// The client: the peer itself, or the address a trusted proxy forwarded. `None` when
    /// unknown (no peer, or a forwarding header that could not be read).
    pub client: Option<IpAddr>,
    /// The connection's peer, `None` when the request carries none.
    pub peer: Option<IpAddr>,
}

impl Addresses {
    /// The address failure limits count against: the client, or when it is unknown the
    /// socket peer (a trusted proxy then shares its budget among the clients it cannot
    /// name, rather than letting them go uncounted).
    #[must_use]
    pub fn failure_key(&self) -> Option<IpAddr> {
        self.client.or(self.peer)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) become plain IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Parses one `X-Forwarded-For` element, `Forwarded: for=` value or single header value: a
/// bare address, `"[v6]:port"`, `v4:port`, optionally quoted. `None` for anything else
/// (`unknown`, an obfuscated node, garbage, an empty element).
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = match s.strip_prefix('"') {
        Some(inner) => inner.strip_suffix('"')?,
        None => s,
    };
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return ip.parse().ok().map(canonical);
    }
    s.parse::<SocketAddr>().ok().map(|a| canonical(a.ip()))
}

fn is_port(s: &str) -> bool {
    s.parse::<u16>().is_ok()
}

/// The `for=` value of one `Forwarded` element; `None` when it has none or several.
fn forwarded_for(element: &str) -> Option<&str> {
    let mut found = None;
    for pair in element.split(';') {
        if let Some((k, v)) = pair.split_once('=')
            && k.trim().eq_ignore_ascii_case("for")
        {
            if found.is_some() {
                return None;
            }
            found = Some(v);
        }
    }
    found
}

/// One step of the walk from the right.
enum Hop {
    /// An address that is a trusted proxy: go on left.
    Trusted(IpAddr),
    /// The client.
    Client(IpAddr),
    /// Not an address: the client is unknown.
    Unreadable,
}

impl ClientIpSource {
    /// Only the socket peer; forwarding headers are ignored.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Believes the forwarding header (see [`with_header`](Self::with_header)) from peers
    /// in these networks.
    #[must_use]
    pub fn trust_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted.extend(nets);
        self
    }

    /// The one header trusted proxies put the client's address in (default
    /// [`ClientIpHeader::XForwardedFor`]). Every other forwarding header is ignored.
    #[must_use]
    pub fn with_header(mut self, header: ClientIpHeader) -> Self {
        self.header = header;
        self
    }

    /// The header client addresses are read from.
    #[must_use]
    pub fn header(&self) -> &ClientIpHeader {
        &self.header
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    fn hop(&self, node: &str) -> Hop {
        match parse_node(node) {
            Some(ip) if self.is_trusted(ip) => Hop::Trusted(ip),
            Some(ip) => Hop::Client(ip),
            None => Hop::Unreadable,
        }
    }

    /// The client address of a request, from its extensions and headers; `None` when the
    /// peer is unknown or the forwarding header cannot be read. Shorthand for
    /// [`resolve`](Self::resolve)`(…).client`.
    #[must_use]
    pub fn client_ip(&self, extensions: &http::Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        self.resolve(extensions, headers).client
    }

    /// The client and peer addresses of a request (see the [module docs](self)).
    #[must_use]
    pub fn resolve(&self, extensions: &http::Extensions, headers: &HeaderMap) -> Addresses {
        let Some(peer) = peer(extensions) else {
            return Addresses::default();
        };
        let client = if self.trusted.is_empty() || !self.is_trusted(peer) {
            Some(peer)
        } else {
            self.forwarded_client(peer, headers)
        };
        Addresses {
            client,
            peer: Some(peer),
        }
    }

    /// The client behind the trusted proxy `peer`; `None` when unknown.
    fn forwarded_client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        match &self.header {
            ClientIpHeader::XForwardedFor => self.walk(peer, headers, "x-forwarded-for", whole),
            ClientIpHeader::Forwarded => {
                self.walk(peer, headers, http::header::FORWARDED, forwarded_for)
            }
            ClientIpHeader::XRealIp => single(headers, "x-real-ip", peer),
            ClientIpHeader::Single(name) => single(headers, name, peer),
        }
    }

    /// Walks a list header from the right (the last value first, each value's elements
    /// from its end), skipping trusted proxies; the first other address is the client.
    /// `node` takes the address out of one element. Every hop trusted (or no header): the
    /// leftmost one, or the peer.
    fn walk(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
        name: impl http::header::AsHeaderName,
        node: fn(&str) -> Option<&str>,
    ) -> Option<IpAddr> {
        let mut client = peer;
        for value in headers.get_all(name).iter().rev() {
            let value = value.to_str().ok()?;
            for element in value.rsplit(',') {
                match self.hop(node(element)?) {
                    Hop::Trusted(ip) => client = ip,
                    Hop::Client(ip) => return Some(ip),
                    Hop::Unreadable => return None,
                }
            }
        }
        Some(client)
    }
}

/// An `X-Forwarded-For` element is the node itself.
fn whole(element: &str) -> Option<&str> {
    Some(element)
}

/// The one address of a single-value header: `None` (unknown) when it is sent more than
/// once or holds anything but one address; the peer when the proxy did not send it.
fn single(
    headers: &HeaderMap,
    name: impl http::header::AsHeaderName,
    peer: IpAddr,
) -> Option<IpAddr> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Some(peer);
    };
    if values.next().is_some() {
        return None;
    }
    one_address(value)
}

fn one_address(value: &HeaderValue) -> Option<IpAddr> {
    let value = value.to_str().ok()?;
    if value.contains(',') {
        return None;
    }
    parse_node(value)
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
        // Several header lines are one list, the last line nearest.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7:4711, 10.1.1.1"),
        ]);
        assert_eq!(src.client_ip(&ext("10.0.0.2:443"), &h), ip("198.51.100.7"));
        // Garbage left of the client was written by the client and is not read.
        let h = headers(&[("x-forwarded-for", "junk, unknown, 198.51.100.7")]);
        assert_eq!(src.client_ip(&ext("10.0.0.2:443"), &h), ip("198.51.100.7"));
        // Every hop trusted: the leftmost; no header at all: the proxy itself.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(src.client_ip(&ext("10.0.0.2:443"), &h), ip("10.9.9.9"));
        assert_eq!(
            src.client_ip(&ext("10.0.0.2:443"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
        let fwd = src.clone().with_header(ClientIpHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https",
        )]);
        assert_eq!(fwd.client_ip(&ext("10.0.0.2:443"), &h), ip("2001:db8::7"));
    }

    /// Before, an unreadable hop made the client the proxy's own address (so a token
    /// allow-listed to the proxy's network let anyone in); now the client is unknown.
    #[test]
    fn an_unreadable_hop_at_or_right_of_the_client_makes_it_unknown() {
        let src = ClientIpSource::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
        for xff in [
            "garbage",
            "198.51.100.7, junk",
            "198.51.100.7, unknown, 10.1.1.1",
            "198.51.100.7,",
            "",
            "[2001:db8::1]:x",
        ] {
            let h = headers(&[("x-forwarded-for", xff)]);
            let a = src.resolve(&ext("10.0.0.2:443"), &h);
            assert_eq!(a.client, None, "{xff:?}");
            assert_eq!(a.failure_key(), ip("10.0.0.2"), "{xff:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.7, \xff").unwrap(),
        );
        assert_eq!(src.client_ip(&ext("10.0.0.2:443"), &h), None, "not UTF-8");
        let fwd = src.clone().with_header(ClientIpHeader::Forwarded);
        for value in [
            "for=198.51.100.7, for=unknown",
            "for=198.51.100.7, for=_hidden",
            "for=198.51.100.7, proto=https",
            "for=198.51.100.7;for=198.51.100.8",
        ] {
            let h = headers(&[("forwarded", value)]);
            assert_eq!(fwd.client_ip(&ext("10.0.0.2:443"), &h), None, "{value:?}");
        }
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let src = ClientIpSource::new().trust_proxies(["10.0.0.0/8".parse().unwrap()]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.7"),
            ("x-real-ip", "198.51.100.8"),
        ]);
        let peer = ext("10.0.0.2:443");
        assert_eq!(src.client_ip(&peer, &h), ip("203.0.113.9"));
        let fwd = src.clone().with_header(ClientIpHeader::Forwarded);
        assert_eq!(fwd.client_ip(&peer, &h), ip("198.51.100.7"));
        let real = src.clone().with_header(ClientIpHeader::XRealIp);
        assert_eq!(real.client_ip(&peer, &h), ip("198.51.100.8"));
        let cf = src
            .clone()
            .with_header(ClientIpHeader::parse("CF-Connecting-IP").unwrap());
        assert_eq!(cf.client_ip(&peer, &h), ip("10.0.0.2"), "not sent");
        let h = headers(&[("cf-connecting-ip", "2001:db8::9")]);
        assert_eq!(cf.client_ip(&peer, &h), ip("2001:db8::9"));
        // A single-value header sent twice, or holding a list, is unreadable.
        for pairs in [
            &[
                ("cf-connecting-ip", "2001:db8::9"),
                ("cf-connecting-ip", "198.51.100.7"),
            ][..],
            &[("cf-connecting-ip", "198.51.100.7, 2001:db8::9")][..],
            &[("cf-connecting-ip", "nope")][..],
        ] {
            assert_eq!(cf.client_ip(&peer, &headers(pairs)), None, "{pairs:?}");
        }
        assert_eq!(
            ClientIpHeader::parse("X-Real-IP").unwrap(),
            ClientIpHeader::XRealIp
        );
        assert_eq!(
            ClientIpHeader::parse("Forwarded").unwrap().name(),
            "forwarded"
        );
        assert!(ClientIpHeader::parse("bad header").is_err());
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
