//! The address guard: every URL a connector will call (base URLs, token URLs, next-page
//! links, redirects) is checked before a connection is made. The SSRF policy proper (private
//! ranges, DNS answers, operator allow-lists) lands with the admin API; this module holds
//! the seam and the loopback-only guard the tests and the demo use, explicitly.

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

impl AddressGuard for LoopbackOnly {
    fn check(&self, url: &Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme `{}` is not http or https", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed".to_owned());
        }
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
}
