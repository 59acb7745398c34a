//! The address guard: every URL a connector will call (base URLs, token URLs, next-page
//! links, redirects) is checked before a connection is made. The SSRF policy proper (private
//! ranges, DNS answers, operator allow-lists) lands with the admin API; this module holds
//! the seam, the loopback-only guard the tests and the demo use explicitly, and the
//! literal-address guard that is the production default until then.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

/// Decides whether the runtime may call a URL.
pub trait AddressGuard: Send + Sync + fmt::Debug {
    /// `Ok` to allow, `Err(reason)` to refuse.
    fn check(&self, url: &Url) -> Result<(), String>;
}

/// Allows `http`/`https` URLs whose host is a loopback address (127.0.0.0/8, `::1`) or
/// `localhost`, and nothing else: the explicit allow-list of tests and the demo.
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

impl AddressGuard for LoopbackOnly {
    fn check(&self, url: &Url) -> Result<(), String> {
        http_without_credentials(url)?;
        let loopback = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        if loopback {
            Ok(())
        } else {
            Err("only loopback addresses are allowed here".to_owned())
        }
    }
}

/// The production default until the resolving SSRF guard lands with the admin API: http(s)
/// only, no credentials in URLs, no `localhost`, and no IP literal outside public unicast
/// space (loopback, private, link-local, CGNAT, unspecified, multicast, documentation and
/// IPv4-mapped IPv6 are refused). Names are not resolved here yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl AddressGuard for PublicOnly {
    fn check(&self, url: &Url) -> Result<(), String> {
        use std::net::Ipv4Addr;
        http_without_credentials(url)?;
        let v4_public = |ip: Ipv4Addr| {
            let o = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])))
        };
        let public = match url.host() {
            Some(Host::Ipv4(ip)) => v4_public(ip),
            Some(Host::Ipv6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => v4_public(v4),
                None => {
                    let first = ip.segments()[0];
                    !(ip.is_loopback()
                        || ip.is_unspecified()
                        || ip.is_multicast()
                        || (first & 0xfe00) == 0xfc00
                        || (first & 0xffc0) == 0xfe80)
                }
            },
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                !(name == "localhost" || name.ends_with(".localhost"))
                    && name.parse::<IpAddr>().is_err()
            }
            None => false,
        };
        if public {
            Ok(())
        } else {
            Err("the address is not public; loopback partners need allow_loopback_partners".into())
        }
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
        let check = |u: &str| PublicOnly.check(&Url::parse(u).expect("url"));
        assert!(check("https://api.partner.example/v1").is_ok());
        for bad in [
            "http://127.0.0.1/",
            "http://localhost:80/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
        ] {
            assert!(check(bad).is_err(), "{bad} must be refused");
        }
    }
}
