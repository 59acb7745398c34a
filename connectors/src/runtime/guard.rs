//! The address guard (DESIGN §9): every URL a connector will call (base URLs, token URLs,
//! next-page links, redirects, health checks) is checked before a connection is made, and
//! every name is resolved through [`GuardedResolver`], which keeps only the addresses the
//! guard allows, so the connection goes to an address that was checked (no DNS rebinding
//! between check and connect).
//!
//! - [`PublicOnly`] (the production default) allows public unicast addresses only:
//!   loopback, private, link-local (cloud metadata), CGNAT, unspecified, multicast,
//!   broadcast, documentation, IPv4-mapped and IPv4-embedding IPv6 (NAT64, 6to4) and
//!   unique-local IPv6 are refused, unless the operator allow-lists a range.
//! - [`LoopbackOnly`] is the explicit allow-list of the tests and the demo.
//!
//! Decimal and hex IPv4 forms (`http://2130706433/`, `http://0x7f000001/`) are normalized
//! to dotted quads by the URL parser before any check sees them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Decides whether the runtime may call a URL, and which resolved addresses it may use.
pub trait AddressGuard: Send + Sync + fmt::Debug {
    /// `Ok` to allow, `Err(reason)` to refuse. Names pass here; their addresses are checked
    /// by [`AddressGuard::allows_ip`] when resolved.
    fn check(&self, url: &Url) -> Result<(), String>;

    /// Whether a connection to `ip` is allowed.
    fn allows_ip(&self, ip: IpAddr) -> bool;
}

/// The IPv4 address an IPv6 address carries, if any: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Public unicast: the only addresses a partner may be at without an allow-list.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1])))
        }
        IpAddr::V6(ip) => match embedded_v4(ip) {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = ip.segments()[0];
                !(ip.is_loopback()
                    || ip.is_unspecified()
                    || ip.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    || first == 0x2001 && ip.segments()[1] == 0x0db8)
            }
        },
    }
}

/// An address range of an operator allow-list, `a.b.c.d/n` or `x::/n` (a bare address is
/// one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address or range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix must be 0..={max}"))?,
        };
        Ok(Self { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.net.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            other => other,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// Allows `http`/`https` URLs whose host is a loopback address (127.0.0.0/8, `::1`) or
/// `localhost` (resolved to loopback only), and nothing else: the explicit allow-list of
/// tests and the demo.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopbackOnly;

/// The checks every guard starts with: `http`/`https`, and no user info in the URL.
fn http_without_credentials(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".to_owned());
    }
    Ok(())
}

/// The guard's verdict on a URL's host: literals now, names when resolved.
fn check_host(guard: &dyn AddressGuard, url: &Url, refusal: &str) -> Result<(), String> {
    http_without_credentials(url)?;
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(name)) => {
            // A name spelled as an address in a way the parser kept as a name.
            return match name.trim_end_matches('.').parse::<IpAddr>() {
                Ok(ip) if !guard.allows_ip(ip) => Err(refusal.to_owned()),
                _ => Ok(()),
            };
        }
        None => return Err("the URL has no host".into()),
    };
    if guard.allows_ip(ip) {
        Ok(())
    } else {
        Err(refusal.to_owned())
    }
}

impl AddressGuard for LoopbackOnly {
    fn check(&self, url: &Url) -> Result<(), String> {
        const REFUSAL: &str = "only loopback addresses are allowed here";
        if let Some(Host::Domain(name)) = url.host() {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name != "localhost" && !name.ends_with(".localhost") {
                return Err(REFUSAL.to_owned());
            }
        }
        check_host(self, url, REFUSAL)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
    }
}

/// The production guard: public unicast addresses, plus the operator's allow-list.
#[derive(Debug, Clone, Default)]
pub struct PublicOnly {
    pub allow: Vec<Cidr>,
}

impl PublicOnly {
    pub fn with_allow_list(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }
}

impl AddressGuard for PublicOnly {
    fn check(&self, url: &Url) -> Result<(), String> {
        check_host(
            self,
            url,
            "the address is not public (loopback, private, link-local or reserved); the operator may allow-list it",
        )
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow.iter().any(|c| c.contains(ip))
    }
}

/// A reqwest resolver that resolves with the system resolver and keeps only the addresses
/// the guard allows; a name with none left fails to resolve, so no connection is made.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<dyn AddressGuard>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<dyn AddressGuard>) -> Self {
        Self { guard }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                .collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| guard.allows_ip(a.ip()))
                .collect();
            if allowed.is_empty() {
                let reason = format!(
                    "`{host}` resolves only to addresses the guard refuses ({} found)",
                    found.len()
                );
                return Err(reason.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// A URL as errors and logs may show it: scheme, host, port and path; never the query
/// (API keys travel there) nor user info.
pub fn redact(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::str::FromStr;

    fn check(text: &str) -> Result<(), String> {
        LoopbackOnly.check(&Url::parse(text).expect("url"))
    }

    #[test]
    fn loopback_only() {
        assert!(check("http://127.0.0.1:8080/x").is_ok());
        assert!(check("http://127.8.9.10/x").is_ok());
        assert!(check("http://[::1]:80/").is_ok());
        assert!(check("http://localhost/").is_ok());
        // url normalizes decimal and hex IPv4 forms to dotted quads before we see them.
        assert!(check("http://2130706433/").is_ok());
        assert!(check("http://0x7f000001/").is_ok());
        assert!(check("http://169.254.169.254/latest").is_err());
        assert!(check("http://10.0.0.1/").is_err());
        assert!(check("http://example.com/").is_err());
        assert!(check("file:///etc/passwd").is_err());
        assert!(check("http://user:pw@127.0.0.1/").is_err());
    }

    #[test]
    fn redaction_drops_query_and_user_info() {
        let url = Url::parse("http://u:p@127.0.0.1:9/a/b?apiKey=SECRET").expect("url");
        assert_eq!(redact(&url), "http://127.0.0.1:9/a/b");
    }

    #[test]
    fn public_only_refuses_private_literals() {
        let guard = PublicOnly::default();
        let check = |u: &str| guard.check(&Url::parse(u).expect("url"));
        assert!(check("https://api.partner.example/v1").is_ok());
        assert!(check("http://93.184.215.14/").is_ok());
        for bad in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://10.1.2.3/",
            "http://192.168.1.1/",
            "http://172.16.0.1/",
            "http://169.254.169.254/latest",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            // https URLs pass the same guard as http ones.
            "https://127.0.0.1/",
            "https://10.0.0.1:8443/",
            "https://169.254.169.254/latest",
            "https://[::ffff:a9fe:a9fe]/",
            "https://user:pw@example.com/",
        ] {
            assert!(check(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn allow_lists() {
        let guard = PublicOnly::with_allow_list(vec![
            Cidr::parse("127.0.0.1").expect("cidr"),
            Cidr::parse("10.20.0.0/16").expect("cidr"),
        ]);
        let check = |u: &str| guard.check(&Url::parse(u).expect("url"));
        assert!(check("http://127.0.0.1:9/").is_ok());
        assert!(
            check("http://127.0.0.2:9/").is_err(),
            "one address, not the range"
        );
        assert!(check("http://10.20.3.4/").is_ok());
        assert!(check("http://10.21.0.1/").is_err());
        assert!(
            check("http://[::ffff:127.0.0.1]/").is_ok(),
            "mapped forms match too"
        );
        assert!(check("http://169.254.169.254/").is_err());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }

    #[tokio::test]
    async fn names_are_resolved_through_the_guard() {
        use reqwest::dns::Resolve;
        let public: Arc<dyn AddressGuard> = Arc::new(PublicOnly::default());
        let name = |n: &str| reqwest::dns::Name::from_str(n).expect("name");
        // `localhost` resolves (from /etc/hosts) to loopback only: nothing is left.
        let refused = GuardedResolver::new(Arc::clone(&public))
            .resolve(name("localhost"))
            .await;
        assert!(refused.is_err(), "a name resolving to loopback is refused");
        let loopback: Arc<dyn AddressGuard> = Arc::new(LoopbackOnly);
        let allowed = GuardedResolver::new(loopback)
            .resolve(name("localhost"))
            .await
            .expect("loopback allowed here");
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }
}
