//! Errors of the unified API as RFC 9457 problem details (`application/problem+json`), in
//! one place: every handler returns an [`ApiError`] and this module decides the status,
//! the type URI, and the extension members that name the faulty parameter.

use serde_json::{Value, json};

use crate::fanout::SourceStatus;

/// The base of problem type URIs; each type is documented in the OpenAPI document.
pub const PROBLEM_BASE: &str = "https://mallgate.dev/problems/";

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// A query or path parameter with a bad value (400), named.
    BadParam { param: String, detail: String },
    /// A request body that is not the documented JSON (400), with the JSON pointer of the
    /// fault when it is known.
    BadBody { pointer: String, detail: String },
    /// No such product, carrier, tracking number or route (404).
    NotFound { kind: &'static str, detail: String },
    /// The route exists but not with this method (405).
    MethodNotAllowed { allow: &'static str },
    /// The body is bigger than the limit (413).
    PayloadTooLarge { limit: usize },
    /// The body is not JSON (415).
    UnsupportedMediaType { detail: String },
    /// Request line and headers over the limit (431).
    HeadersTooLarge { limit: usize },
    /// No or an unknown bearer token (401).
    Unauthorized,
    /// The token's role may not do this (403).
    Forbidden { detail: String },
    /// The change lost a race or names a state that is not there (409).
    Conflict { detail: String },
    /// A replacement without `If-Match` (428).
    PreconditionRequired { detail: String },
    /// A connector (or a set of them) that does not build; the active version keeps
    /// serving (422), with each problem's pointer, line and reason.
    Rejected {
        detail: String,
        problems: Vec<Value>,
    },
    /// Too many requests in flight: shed at once (503).
    Overloaded { retry_after_s: u64 },
    /// This instance is draining (503, `Retry-After: 1`): `/readyz` says so, and admin
    /// writes go to the instance that stays.
    Draining { detail: String },
    /// The store (etcd) is unreachable: the last good configuration keeps serving and
    /// admin writes wait for it (503, `Retry-After`).
    StoreUnavailable { detail: String },
    /// This client is over its rate (429).
    TooManyRequests { retry_after_s: u64 },
    /// No partner answered and nothing was cached (503), with each source's outcome.
    Unavailable {
        detail: String,
        retry_after_s: u64,
        sources: Vec<SourceStatus>,
    },
    /// The gateway failed at something that is not the caller's fault (500): a store or
    /// audit write, an answer that could not be serialized. The detail names the part.
    Internal { detail: String },
}

impl ApiError {
    pub fn param(param: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::BadParam {
            param: param.into(),
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadParam { .. } | Self::BadBody { .. } => 400,
            Self::NotFound { .. } => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType { .. } => 415,
            Self::HeadersTooLarge { .. } => 431,
            Self::Unavailable { .. }
            | Self::Overloaded { .. }
            | Self::Draining { .. }
            | Self::StoreUnavailable { .. } => 503,
            Self::TooManyRequests { .. } => 429,
            Self::Unauthorized => 401,
            Self::Forbidden { .. } => 403,
            Self::Conflict { .. } => 409,
            Self::PreconditionRequired { .. } => 428,
            Self::Rejected { .. } => 422,
            Self::Internal { .. } => 500,
        }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::BadParam { .. } => ("invalid-parameter", "Invalid parameter"),
            Self::BadBody { .. } => ("invalid-body", "Invalid request body"),
            Self::NotFound { kind, .. } => match *kind {
                "product" => ("product-not-found", "No such product"),
                "carrier" => ("carrier-not-found", "No such carrier"),
                "tracking" => ("tracking-not-found", "No such tracking number"),
                "connector" => ("connector-not-found", "No such connector"),
                "version" => ("version-not-found", "No such connector version"),
                _ => ("not-found", "Not found"),
            },
            Self::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            Self::PayloadTooLarge { .. } => ("payload-too-large", "Request body too large"),
            Self::UnsupportedMediaType { .. } => {
                ("unsupported-media-type", "Unsupported media type")
            }
            Self::HeadersTooLarge { .. } => {
                ("headers-too-large", "Request header fields too large")
            }
            Self::Unavailable { .. } => ("partners-unavailable", "No partner could answer"),
            Self::Overloaded { .. } => ("overloaded", "The gateway is at capacity"),
            Self::Draining { .. } => ("draining", "This instance is draining"),
            Self::StoreUnavailable { .. } => ("store-unavailable", "The store is unavailable"),
            Self::TooManyRequests { .. } => ("rate-limited", "Too many requests"),
            Self::Unauthorized => ("unauthorized", "A valid bearer token is required"),
            Self::Forbidden { .. } => ("forbidden", "Not allowed for this token"),
            Self::Conflict { .. } => ("conflict", "Conflict"),
            Self::PreconditionRequired { .. } => ("if-match-required", "If-Match required"),
            Self::Rejected { .. } => ("connector-rejected", "Connector rejected"),
            Self::Internal { .. } => ("internal-error", "Internal error"),
        }
    }

    /// Extra response headers: `Allow` for 405, `Retry-After` for 503.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::MethodNotAllowed { allow } => vec![("allow", (*allow).to_owned())],
            Self::Unauthorized => vec![("www-authenticate", "Bearer".to_owned())],
            Self::Unavailable { retry_after_s, .. }
            | Self::Overloaded { retry_after_s }
            | Self::TooManyRequests { retry_after_s } => {
                vec![("retry-after", retry_after_s.to_string())]
            }
            Self::Draining { .. } => vec![("retry-after", "1".to_owned())],
            Self::StoreUnavailable { .. } => vec![("retry-after", "5".to_owned())],
            _ => Vec::new(),
        }
    }

    /// The problem document. `instance` is the request path, `request_id` the id the
    /// answer carries in `x-request-id`.
    pub fn to_problem(&self, instance: &str, request_id: &str) -> Value {
        let (slug, title) = self.slug_and_title();
        let detail = match self {
            Self::BadParam { param, detail } => format!("`{param}`: {detail}"),
            Self::BadBody { pointer, detail } if pointer.is_empty() => detail.clone(),
            Self::BadBody { pointer, detail } => format!("at `{pointer}`: {detail}"),
            Self::NotFound { detail, .. } | Self::UnsupportedMediaType { detail } => detail.clone(),
            Self::MethodNotAllowed { allow } => format!("this resource allows {allow}"),
            Self::PayloadTooLarge { limit } => {
                format!("the body is larger than the limit of {limit} bytes")
            }
            Self::HeadersTooLarge { limit } => format!(
                "the request line and header fields are larger than the limit of {limit} bytes"
            ),
            Self::Unavailable { detail, .. } => detail.clone(),
            Self::Overloaded { retry_after_s } => format!(
                "too many requests are being answered at once; try again in {retry_after_s} s"
            ),
            Self::Unauthorized => {
                "send Authorization: Bearer <token> with an admin token".to_owned()
            }
            Self::Forbidden { detail }
            | Self::Conflict { detail }
            | Self::PreconditionRequired { detail }
            | Self::Rejected { detail, .. }
            | Self::Draining { detail }
            | Self::StoreUnavailable { detail }
            | Self::Internal { detail } => detail.clone(),
            Self::TooManyRequests { retry_after_s } => format!(
                "this client (its x-api-key, else its address) is over its request rate; try again in {retry_after_s} s"
            ),
        };
        let mut doc = json!({
            "type": format!("{PROBLEM_BASE}{slug}"),
            "title": title,
            "status": self.status(),
            "detail": detail,
            "instance": instance,
            "request_id": request_id,
        });
        match self {
            Self::BadParam { param, .. } => doc["param"] = json!(param),
            Self::BadBody { pointer, .. } => doc["pointer"] = json!(pointer),
            Self::Unavailable {
                sources,
                retry_after_s,
                ..
            } => {
                doc["sources"] = json!(sources);
                doc["retry_after_s"] = json!(retry_after_s);
            }
            Self::Overloaded { retry_after_s } | Self::TooManyRequests { retry_after_s } => {
                doc["retry_after_s"] = json!(retry_after_s);
            }
            Self::Rejected { problems, .. } if !problems.is_empty() => {
                doc["problems"] = json!(problems);
            }
            _ => {}
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_parameter_and_keep_rfc9457_members() {
        let err = ApiError::param("min_price", "needs `currency`");
        let doc = err.to_problem("/v1/products", "r-1");
        assert_eq!(doc["status"], 400);
        assert_eq!(doc["param"], "min_price");
        assert_eq!(
            doc["type"],
            "https://mallgate.dev/problems/invalid-parameter"
        );
        assert!(
            doc["detail"]
                .as_str()
                .is_some_and(|d| d.contains("min_price"))
        );
        assert_eq!(doc["instance"], "/v1/products");
        let unavailable = ApiError::Unavailable {
            detail: "x".into(),
            retry_after_s: 5,
            sources: Vec::new(),
        };
        assert_eq!(unavailable.headers(), vec![("retry-after", "5".to_owned())]);
    }
}
