//! One HTTP exchange: send with an attempt timeout, read the body under a size cap, and
//! turn every failure into a [`ConnectorError`] that says whether it is worth retrying —
//! with URLs redacted (no query, no user info) so keys sent in the query never leak.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use url::Url;

use super::guard::redact;
use crate::error::ConnectorError;

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The chain of an error's causes, without the URL reqwest would print.
fn reason(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn transport(url: &Url, e: reqwest::Error) -> ConnectorError {
    // A certificate problem is its own failure, whatever layer reported it.
    if let Some(reason) = super::tls::failure(&e) {
        return ConnectorError::Tls {
            url: redact(url),
            reason,
        };
    }
    // The redirect policy refused (the address guard, or more than 5 hops): never worth
    // a retry.
    if e.is_redirect() {
        return ConnectorError::AddressDenied {
            url: redact(url),
            reason: reason(e),
        };
    }
    let connect = e.is_connect();
    ConnectorError::Transport {
        url: redact(url),
        reason: reason(e),
        connect,
    }
}

/// Sends `request` (built for `url`) and reads the whole reply, refusing bodies over
/// `max_bytes` (by `Content-Length` first, then as they stream). No timeout of its own:
/// the partner stack's attempt timeout bounds it.
pub async fn send(
    request: RequestBuilder,
    url: &Url,
    max_bytes: usize,
) -> Result<Reply, ConnectorError> {
    // reqwest has only a connect timeout (a connect failure); the stack's attempt timeout
    // is the one that reports a timeout.
    let failed = |e| transport(url, e);
    let mut response = request.send().await.map_err(failed)?;
    if response
        .content_length()
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(ConnectorError::TooLarge {
            url: redact(url),
            limit: max_bytes,
        });
    }
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(ConnectorError::TooLarge {
                url: redact(url),
                limit: max_bytes,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// `Retry-After` as a delay: whole or decimal seconds (`2`, `2.0`), or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let at = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
    let wait = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// The URL of the `Link` header entry with `rel`, resolved against `base`.
pub fn link(headers: &HeaderMap, rel: &str, base: &Url) -> Option<Url> {
    for value in headers.get_all("link") {
        let Ok(text) = value.to_str() else {
            continue;
        };
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let close = after.find('>')?;
            let target = &after[..close];
            let params_end = after[close..].find('<').map_or(after.len(), |i| close + i);
            let params = &after[close + 1..params_end];
            let matches = params.split(';').any(|p| {
                let p = p.trim().trim_end_matches(',').trim();
                p.strip_prefix("rel=").is_some_and(|v| {
                    v.trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case(rel))
                })
            });
            if matches {
                return base.join(target).ok();
            }
            rest = &after[params_end..];
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2.0"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn link_headers() {
        let base = Url::parse("http://127.0.0.1:9/a/products.json?limit=5").expect("url");
        let mut h = HeaderMap::new();
        h.insert(
            "link",
            HeaderValue::from_static(
                "<http://127.0.0.1:9/a/products.json?page_info=p1>; rel=\"previous\", </a/products.json?page_info=n2&limit=5>; rel=\"next\"",
            ),
        );
        assert_eq!(
            link(&h, "next", &base).map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:9/a/products.json?page_info=n2&limit=5")
        );
        assert_eq!(
            link(&h, "previous", &base)
                .map(|u| u.to_string())
                .as_deref(),
            Some("http://127.0.0.1:9/a/products.json?page_info=p1")
        );
        assert_eq!(link(&h, "last", &base), None);
    }
}
