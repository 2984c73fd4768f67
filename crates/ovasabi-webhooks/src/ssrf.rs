//! The SSRF guard for partner endpoints.
//!
//! Partners register URLs that we POST events to. A registration must never become a way into
//! our own network (server-side request forgery), so an endpoint is checked twice:
//!
//! 1. at registration, by [`check_url`] (the URL itself) and [`resolve`] (what its host name
//!    resolves to now);
//! 2. at every delivery, by [`check_url`] again (IP-literal hosts are never resolved) and by
//!    the [`GuardedResolver`] inside the delivery [`client`], which checks the addresses that
//!    the connection will actually use, *after* DNS. A host name that resolved to a public
//!    address at registration and to `127.0.0.1` later (DNS rebinding) is refused then.
//!
//! # What is refused, and why
//!
//! - Anything that is not an absolute URL.
//! - Schemes other than `https` (`http` too unless [`Policy::allow_http`], meant for local
//!   development): we only speak HTTP, and event payloads must be encrypted in transit.
//! - Credentials in the URL (`https://user:password@host/`): they would be stored and logged
//!   with the URL; partners authenticate our deliveries by their signature instead.
//! - URLs without a host.
//! - Hosts that are, or resolve to, an address in a range that is not the public internet
//!   ([`forbidden_range`]); if a host name resolves to several addresses, **any** forbidden
//!   one refuses the whole host (the connection could use any of them):
//!   - IPv4: `0.0.0.0/8` (this network, which includes the unspecified address that reaches
//!     the local host), `127.0.0.0/8` (loopback), `10.0.0.0/8`, `172.16.0.0/12` and
//!     `192.168.0.0/16` (RFC 1918 private networks: our own), `169.254.0.0/16` (link-local,
//!     where cloud metadata services live), `100.64.0.0/10` (carrier-grade NAT, shared
//!     internal space), `192.0.0.0/24` (IETF protocol assignments), `192.0.2.0/24`,
//!     `198.51.100.0/24` and `203.0.113.0/24` (documentation), `192.88.99.0/24` (deprecated
//!     6to4 relay anycast), `198.18.0.0/15` (benchmarking), `224.0.0.0/4` (multicast),
//!     `240.0.0.0/4` (reserved) and `255.255.255.255` (broadcast): none of these is a
//!     partner's server on the internet;
//!   - IPv6: `::` (unspecified), `::1` (loopback), `fc00::/7` (unique-local, the IPv6
//!     private networks), `fe80::/10` (link-local), `fec0::/10` (deprecated site-local),
//!     `ff00::/8` (multicast), `2001:db8::/32` (documentation), `100::/64` (discard) and
//!     `2001::/32` (Teredo, a tunnel whose far end we cannot judge: refused entirely);
//!   - IPv6 addresses that embed an IPv4 address are judged by the IPv4 address inside, since
//!     the packets may end up there: IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated
//!     `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, 6to4 `2002:AABB:CCDD::/48` and NAT64
//!     `64:ff9b::/96` and `64:ff9b:1::/48`.
//! - Host names that do not resolve, or resolve to no address.
//!
//! Odd IPv4 spellings such as `http://2130706433/`, `http://0x7f.1/`,
//! `http://017700000001/` or `http://127.1/` are normalized by the WHATWG URL parser (the
//! `url` crate) to `127.0.0.1` before any check, so they are refused like `127.0.0.1`.
//!
//! For local development and tests, a [`Policy`] may carry an allowlist of addresses and
//! networks ([`parse_allowlist`]) that are accepted even inside a forbidden range.
//!
//! The delivery [`client`] also follows no redirects (a public endpoint could otherwise
//! redirect us to an internal one) and uses no proxy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// What the guard accepts besides public `https` endpoints.
///
/// [`Policy::default`] is the strict policy for production: `https` only, empty allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept `http://` endpoints as well as `https://` ones (local development only).
    pub allow_http: bool,
    /// Addresses and networks accepted even when they are in a forbidden range (local
    /// development and tests), as read by [`parse_allowlist`].
    pub allowlist: Vec<Allowed>,
}

impl Policy {
    /// Whether `ip` is on the allowlist. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is also
    /// matched as the IPv4 address inside.
    pub fn is_allowlisted(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.allowlist
            .iter()
            .any(|allowed| allowed.contains(ip) || allowed.contains(canonical))
    }

    /// The forbidden range that `ip` is in ([`forbidden_range`]), unless `ip` is on the
    /// allowlist: `None` means a delivery may connect to `ip`.
    pub fn forbidden(&self, ip: IpAddr) -> Option<&'static str> {
        let range = forbidden_range(ip)?;
        if self.is_allowlisted(ip) {
            None
        } else {
            Some(range)
        }
    }
}

/// One entry of an allowlist: an IPv4 or IPv6 network in CIDR notation (a single address is a
/// `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Allowed {
    network: IpAddr,
    prefix_len: u8,
}

impl Allowed {
    /// The network address (host bits all zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length, in bits: up to 32 for IPv4 and 128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network. IPv4 networks contain only IPv4 addresses and IPv6
    /// networks only IPv6 addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_u32(self.prefix_len);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_u128(self.prefix_len);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Allowed {
    type Err = String;

    /// Reads `a.b.c.d/len`, `x:y::z/len` or a single address.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr.trim(), Some(len.trim())),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR network"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(len) => match len.parse::<u8>() {
                Ok(len) if len <= max => len,
                _ => {
                    return Err(format!(
                        "`{text}`: the prefix length must be a number from 0 to {max}"
                    ))
                }
            },
        };
        let network = match ip {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_u32(prefix_len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_u128(prefix_len))),
        };
        if network != ip {
            return Err(format!(
                "`{text}` has host bits set; did you mean `{network}/{prefix_len}`?"
            ));
        }
        Ok(Allowed {
            network,
            prefix_len,
        })
    }
}

fn mask_u32(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

fn mask_u128(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// Reads an allowlist for local development and tests: a comma-separated list of CIDR
/// networks (`127.0.0.1/32`, `10.0.0.0/8`, `::1/128`) and/or single addresses (`127.0.0.1`).
/// Blanks around entries and empty entries are ignored, so `""` is the empty allowlist.
///
/// # Errors
///
/// A message naming the first entry that is not an address or network, has a prefix length
/// out of range, or has host bits set (`10.0.0.1/8`).
pub fn parse_allowlist(text: &str) -> Result<Vec<Allowed>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(Allowed::from_str)
        .collect()
}

/// A special-purpose IPv4 range, with its name as such and inside each IPv6 form that embeds
/// an IPv4 address (all `&'static str`, built at compile time).
struct V4Range {
    network: u32,
    prefix_len: u8,
    name: &'static str,
    mapped: &'static str,
    translated: &'static str,
    compatible: &'static str,
    six_to_four: &'static str,
    nat64: &'static str,
    nat64_local: &'static str,
}

macro_rules! v4_ranges {
    ($(([$a:literal, $b:literal, $c:literal, $d:literal], $len:literal, $kind:literal, $cidr:literal)),* $(,)?) => {
        &[$(V4Range {
            network: u32::from_be_bytes([$a, $b, $c, $d]),
            prefix_len: $len,
            name: concat!($kind, " (", $cidr, ")"),
            mapped: concat!("IPv4-mapped IPv6 of ", $kind, " (", $cidr, ")"),
            translated: concat!("IPv4-translated IPv6 of ", $kind, " (", $cidr, ")"),
            compatible: concat!("IPv4-compatible IPv6 of ", $kind, " (", $cidr, ")"),
            six_to_four: concat!("6to4 IPv6 of ", $kind, " (", $cidr, ")"),
            nat64: concat!("NAT64 IPv6 of ", $kind, " (", $cidr, ")"),
            nat64_local: concat!("local-use NAT64 IPv6 of ", $kind, " (", $cidr, ")"),
        }),*]
    };
}

/// The forbidden IPv4 ranges; the first match names the range (broadcast before reserved).
const V4_RANGES: &[V4Range] = v4_ranges![
    ([0, 0, 0, 0], 8, "this network", "0.0.0.0/8"),
    ([10, 0, 0, 0], 8, "private", "10.0.0.0/8"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT", "100.64.0.0/10"),
    ([127, 0, 0, 0], 8, "loopback", "127.0.0.0/8"),
    ([169, 254, 0, 0], 16, "link-local", "169.254.0.0/16"),
    ([172, 16, 0, 0], 12, "private", "172.16.0.0/12"),
    (
        [192, 0, 0, 0],
        24,
        "IETF protocol assignments",
        "192.0.0.0/24"
    ),
    ([192, 0, 2, 0], 24, "documentation", "192.0.2.0/24"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast", "192.88.99.0/24"),
    ([192, 168, 0, 0], 16, "private", "192.168.0.0/16"),
    ([198, 18, 0, 0], 15, "benchmarking", "198.18.0.0/15"),
    ([198, 51, 100, 0], 24, "documentation", "198.51.100.0/24"),
    ([203, 0, 113, 0], 24, "documentation", "203.0.113.0/24"),
    ([224, 0, 0, 0], 4, "multicast", "224.0.0.0/4"),
    ([255, 255, 255, 255], 32, "broadcast", "255.255.255.255/32"),
    ([240, 0, 0, 0], 4, "reserved", "240.0.0.0/4"),
];

fn v4_range(ip: Ipv4Addr) -> Option<&'static V4Range> {
    let ip = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|range| ip & mask_u32(range.prefix_len) == range.network)
}

/// The IPv6 forms that embed an IPv4 address.
#[derive(Clone, Copy)]
enum Embedding {
    Mapped,
    Translated,
    Compatible,
    SixToFour,
    Nat64,
    Nat64Local,
}

fn embedded(ip: Ipv4Addr, form: Embedding) -> Option<&'static str> {
    let range = v4_range(ip)?;
    Some(match form {
        Embedding::Mapped => range.mapped,
        Embedding::Translated => range.translated,
        Embedding::Compatible => range.compatible,
        Embedding::SixToFour => range.six_to_four,
        Embedding::Nat64 => range.nat64,
        Embedding::Nat64Local => range.nat64_local,
    })
}

/// The name of the range `ip` is in, such as `"loopback (127.0.0.0/8)"` or
/// `"IPv4-mapped IPv6 of private (10.0.0.0/8)"`, when `ip` may not be a webhook target; `None`
/// for an address of the public internet. See the [module documentation](self) for the list
/// of ranges and why. The allowlist is not consulted here: see [`Policy::forbidden`].
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4).map(|range| range.name),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let o = ip.octets();
    let last_v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if ip == Ipv6Addr::UNSPECIFIED {
        return Some("unspecified (::/128)");
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Some("loopback (::1/128)");
    }
    if s[..5] == [0; 5] && s[5] == 0xffff {
        return embedded(last_v4, Embedding::Mapped);
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return embedded(last_v4, Embedding::Translated);
    }
    if s[..6] == [0; 6] {
        return embedded(last_v4, Embedding::Compatible);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return embedded(last_v4, Embedding::Nat64);
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        return embedded(last_v4, Embedding::Nat64Local);
    }
    if s[..4] == [0x100, 0, 0, 0] {
        return Some("discard (100::/64)");
    }
    if s[..2] == [0x2001, 0xdb8] {
        return Some("documentation (2001:db8::/32)");
    }
    if s[..2] == [0x2001, 0] {
        return Some("Teredo (2001::/32)");
    }
    if s[0] == 0x2002 {
        return embedded(Ipv4Addr::new(o[2], o[3], o[4], o[5]), Embedding::SixToFour);
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some("unique-local (fc00::/7)");
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some("link-local (fe80::/10)");
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some("site-local (fec0::/10)");
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some("multicast (ff00::/8)");
    }
    None
}

/// Why a webhook endpoint is refused. The messages are meant for partners: each names the URL,
/// host or address at fault and what to do about it. URLs in messages never include
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The text is not an absolute URL.
    #[error("webhook endpoint `{url}` is not a valid absolute URL: {reason}")]
    NotAUrl {
        /// The text given.
        url: String,
        /// What the URL parser objected to.
        reason: url::ParseError,
    },
    /// The scheme is not `https` (or `http` when the policy allows it).
    #[error("webhook endpoint `{url}` uses the scheme `{scheme}`; only {allowed} endpoints are accepted")]
    SchemeNotAllowed {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
        /// The schemes accepted, for the message (`https://`, or `http:// and https://`).
        allowed: &'static str,
    },
    /// The URL carries a user name or password.
    #[error("webhook endpoint `{url}` contains credentials (user:password@); remove them: our deliveries are authenticated by their signature")]
    Credentials {
        /// The URL, with its credentials removed.
        url: String,
    },
    /// The URL has no host.
    #[error("webhook endpoint `{url}` has no host")]
    NoHost {
        /// The URL.
        url: String,
    },
    /// The host is, or resolves to, an address in a forbidden range.
    #[error("webhook endpoint host `{host}` {how} {address}, which is in the forbidden range {range}; webhook endpoints must be reachable on the public internet")]
    ForbiddenAddress {
        /// The host, as in the URL (for an IP literal, the address itself).
        host: String,
        /// `"is"` for an IP-literal host, `"resolves to"` for a host name.
        how: &'static str,
        /// The forbidden address.
        address: IpAddr,
        /// The name of its range, as [`forbidden_range`] gives it.
        range: &'static str,
    },
    /// The host name could not be resolved.
    #[error("webhook endpoint host `{host}` could not be resolved: {reason}")]
    ResolutionFailed {
        /// The host name.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// The host name resolved to no address.
    #[error("webhook endpoint host `{host}` resolves to no address")]
    NoAddresses {
        /// The host name.
        host: String,
    },
}

/// `url` without its user name and password, for messages.
fn without_credentials(url: &Url) -> String {
    let mut url = url.clone();
    // Cannot fail for a URL with a host, which is the only kind that has credentials.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Checks a webhook endpoint URL without resolving anything: it must parse, use `https` (or
/// `http` if `policy.allow_http`), carry no credentials and have a host; an IP-literal host
/// (`https://10.0.0.1/`, `https://[::1]/`, or an odd IPv4 spelling that the WHATWG parser
/// normalizes, such as `https://2130706433/`) must not be in a forbidden range unless
/// allowlisted. Host names are checked when they are resolved ([`resolve`], and the
/// [`GuardedResolver`] at delivery).
///
/// Returns the parsed (normalized) URL, which is what should be stored and used.
///
/// # Errors
///
/// The [`Refusal`] of the first check that fails.
pub fn check_url(url: &str, policy: &Policy) -> Result<Url, Refusal> {
    let parsed = Url::parse(url.trim()).map_err(|reason| Refusal::NotAUrl {
        url: url.to_owned(),
        reason,
    })?;
    let scheme_ok = match parsed.scheme() {
        "https" => true,
        "http" => policy.allow_http,
        _ => false,
    };
    if !scheme_ok {
        return Err(Refusal::SchemeNotAllowed {
            url: without_credentials(&parsed),
            scheme: parsed.scheme().to_owned(),
            allowed: if policy.allow_http {
                "http:// and https://"
            } else {
                "https://"
            },
        });
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refusal::Credentials {
            url: without_credentials(&parsed),
        });
    }
    let literal = match parsed.host() {
        None => {
            return Err(Refusal::NoHost {
                url: parsed.to_string(),
            })
        }
        Some(Host::Domain("")) => {
            return Err(Refusal::NoHost {
                url: parsed.to_string(),
            })
        }
        Some(Host::Domain(_)) => None,
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
    };
    if let Some(address) = literal {
        if let Some(range) = policy.forbidden(address) {
            return Err(Refusal::ForbiddenAddress {
                host: parsed.host_str().unwrap_or_default().to_owned(),
                how: "is",
                address,
                range,
            });
        }
    }
    Ok(parsed)
}

/// Checks every address a host name resolved to: the first forbidden one refuses the host.
fn check_resolved(host: &str, addrs: &[SocketAddr], policy: &Policy) -> Result<(), Refusal> {
    if addrs.is_empty() {
        return Err(Refusal::NoAddresses {
            host: host.to_owned(),
        });
    }
    for addr in addrs {
        if let Some(range) = policy.forbidden(addr.ip()) {
            return Err(Refusal::ForbiddenAddress {
                host: host.to_owned(),
                how: "resolves to",
                address: addr.ip(),
                range,
            });
        }
    }
    Ok(())
}

/// Checks `url` with [`check_url`], then resolves its host with the system resolver
/// (`tokio::net::lookup_host`) and refuses it if **any** of the addresses is forbidden (and
/// not allowlisted), or if there is none. Used at registration; an IP-literal host resolves
/// to itself.
///
/// Returns the addresses, with the URL's port (or the scheme's default).
///
/// # Errors
///
/// The [`Refusal`] of [`check_url`], [`Refusal::ResolutionFailed`],
/// [`Refusal::NoAddresses`] or [`Refusal::ForbiddenAddress`].
pub async fn resolve(url: &Url, policy: &Policy) -> Result<Vec<SocketAddr>, Refusal> {
    let url = check_url(url.as_str(), policy)?;
    // `check_url` accepts only http and https, which have a default port.
    let port = url.port_or_known_default().unwrap_or(443);
    let host = match url.host() {
        Some(Host::Domain(host)) => host.to_owned(),
        Some(Host::Ipv4(v4)) => return Ok(vec![SocketAddr::new(IpAddr::V4(v4), port)]),
        Some(Host::Ipv6(v6)) => return Ok(vec![SocketAddr::new(IpAddr::V6(v6), port)]),
        None => {
            return Err(Refusal::NoHost {
                url: url.to_string(),
            })
        }
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|err| Refusal::ResolutionFailed {
            host: host.clone(),
            reason: err.to_string(),
        })?
        .collect();
    check_resolved(&host, &addrs, policy)?;
    Ok(addrs)
}

/// A DNS resolver for reqwest ([`reqwest::dns::Resolve`]) that resolves with the system
/// resolver and fails the connection, with a [`Refusal`] naming the range, if any address is
/// forbidden by its [`Policy`]. Because it runs at every delivery, after DNS, on the very
/// addresses the connection will use, DNS rebinding fails.
///
/// reqwest does not call a resolver for IP-literal hosts: those are checked by [`check_url`].
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<Policy>,
}

impl GuardedResolver {
    /// A resolver that enforces `policy` (only its allowlist matters here).
    pub fn new(policy: &Policy) -> Self {
        GuardedResolver {
            policy: Arc::new(policy.clone()),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest replaces it with the URL's port.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|err| Refusal::ResolutionFailed {
                    host: host.clone(),
                    reason: err.to_string(),
                })?
                .collect();
            check_resolved(&host, &addrs, &policy)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The `User-Agent` of deliveries.
const USER_AGENT: &str = concat!("ovasabi-webhooks/", env!("CARGO_PKG_VERSION"));

/// A reqwest client for deliveries: it resolves host names with a [`GuardedResolver`] for
/// `policy`, follows no redirects (a 3xx response is returned as is), uses no proxy (not even
/// one from the environment), gives up after `timeout` (whole request), only speaks `https`
/// unless `policy.allow_http`, and sends the user agent `ovasabi-webhooks/<version>`. TLS is
/// rustls with the `ring` provider, which this function installs as the process default if
/// there is none yet; server certificates are verified against the platform's roots.
///
/// **IP-literal URLs never go through the resolver**, so the delivery code must call
/// [`check_url`] on the URL before every request too (and send to the URL it returns).
///
/// # Errors
///
/// reqwest's message if the client cannot be built (for example if the TLS configuration
/// cannot be loaded).
pub fn client(policy: &Policy, timeout: Duration) -> Result<reqwest::Client, String> {
    // Fails only if a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .dns_resolver(GuardedResolver::new(policy))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .no_proxy()
        .https_only(!policy.allow_http)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|err| format!("cannot build the webhook delivery client: {err}"))
}
