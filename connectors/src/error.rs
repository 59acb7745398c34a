//! The crate's one error type, and `Problem`: one precise thing wrong with a connector
//! document.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing wrong with a connector document: where (JSON pointer, and line and column
/// when the source has them) and why, in words a partner can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// JSON pointer (RFC 6901) of the offending value; `""` is the whole document.
    pub pointer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub reason: String,
}

impl Problem {
    /// A problem of the whole document, with no position.
    pub fn document(reason: impl Into<String>) -> Self {
        Self {
            pointer: String::new(),
            line: None,
            column: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        if !self.pointer.is_empty() {
            write!(f, "{}: ", self.pointer)?;
        }
        f.write_str(&self.reason)
    }
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("\n  - {p}"))
        .collect::<String>()
}

/// The error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The connector document is rejected; nothing changes.
    #[error("invalid connector ({} problem{}):{}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, lines(.problems))]
    InvalidSpec { problems: Vec<Problem> },
    /// A partner payload that cannot be read in its declared format. It is quarantined and
    /// counted by the caller, never cached.
    #[error("cannot decode {format} payload: {reason}")]
    Decode {
        format: &'static str,
        reason: String,
    },
    /// A jq program the sandbox refuses: it does not compile, or breaks a static rule.
    #[error("invalid jq program: {reason}")]
    InvalidProgram { reason: String },
    /// A mapping broke its run budget (deadline, outputs). The connector version that owns
    /// it is to be quarantined.
    #[error("mapping overran the sandbox: {reason}")]
    MappingOverrun { reason: String },
    /// Every record the reply gave was dropped by the schema or identity checks: the
    /// version's mapping does not fit the partner's answers, which is a failure of the
    /// call, never a `live` answer with nothing in it.
    #[error("every one of the {dropped} mapped records was dropped; the first: {first}")]
    MappingRejected { dropped: usize, first: String },
    /// The reply decoded but is not shaped as the connector expects (its `records` selector
    /// failed): schema drift on the partner's side. Quarantined and counted, never cached.
    #[error("malformed reply: {reason}")]
    MalformedReply { reason: String },
    /// The dry-run sandbox could not be started or answered nonsense.
    #[error("dry-run sandbox failed: {reason}")]
    Sandbox { reason: String },
    /// Every mapping thread is busy and the queue is full: the gateway sheds this call.
    #[error("the mapping pool is saturated")]
    MappingBusy,
    /// The partner said, inside a successful reply, that it failed (the `error` rule).
    #[error("partner reported an error: {message}")]
    PartnerReported { message: String },
    /// The partner could not be reached, or the connection broke. `connect` is true when
    /// nothing was sent (refused or unreachable): another endpoint can take the call at no
    /// risk. URLs in errors never carry a query or user info.
    #[error("cannot reach {url}: {reason}")]
    Transport {
        url: String,
        reason: String,
        connect: bool,
    },
    /// TLS with the partner failed: its certificate is not trusted, expired or for another
    /// name, or it refused ours. Nothing was sent, and the same certificates give the same
    /// answer, so it is no retry; another endpoint may take the call.
    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },
    /// No (complete) answer within the attempt's time.
    #[error("no answer from {url} within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    /// 429: the partner asks to slow down, for `retry_after` when it says.
    #[error("{url} answered 429 Too Many Requests{}", retry_after_text(.retry_after))]
    RateLimited {
        url: String,
        retry_after: Option<std::time::Duration>,
    },
    /// Any other unsuccessful HTTP status.
    #[error("{url} answered HTTP {status}")]
    PartnerStatus { url: String, status: u16 },
    /// The partner refused the credentials (after one token refresh, for OAuth2).
    #[error("{url} refused the credentials (HTTP {status})")]
    Unauthorized { url: String, status: u16 },
    /// Getting an OAuth2 token failed.
    #[error("token request to {url} failed: {reason}")]
    Token {
        url: String,
        reason: String,
        retryable: bool,
    },
    /// The reply is bigger than the response cap.
    #[error("the reply from {url} exceeds {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// A secret reference could not be resolved (the reference is named, never the value).
    #[error("cannot resolve secret `{reference}`: {reason}")]
    Secret { reference: String, reason: String },
    /// The address guard refused a URL the connector would call.
    #[error("refused to call {url}: {reason}")]
    AddressDenied { url: String, reason: String },
    /// The request could not be built from the template and the query.
    #[error("cannot build the request: {reason}")]
    Request { reason: String },
    /// The connector has no such capability.
    #[error("the connector does not serve {capability}")]
    Unsupported { capability: String },
    /// The call's deadline passed before it finished.
    #[error("shed: every one of the partner's {limit} concurrency slots is taken")]
    Shed { limit: u32 },

    #[error("no endpoint of the partner is available (ejected or breaker open)")]
    NoEndpoint,

    #[error("the call's deadline passed after {pages} page(s)")]
    DeadlineExceeded { pages: u32 },
}

fn retry_after_text(retry_after: &Option<std::time::Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {:.1} s)", d.as_secs_f64()),
        None => String::new(),
    }
}

impl ConnectorError {
    /// The stable, low-cardinality code of the error: a source's `error.code` in answers
    /// and logs, and an exchange span's `error.type`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Transport { connect: true, .. } => "connect_failed",
            Self::Transport { .. } => "transport",
            Self::Tls { .. } => "tls",
            Self::Timeout { .. } | Self::DeadlineExceeded { .. } => "timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::PartnerStatus { .. } => "partner_error",
            Self::Unauthorized { .. } | Self::Token { .. } | Self::Secret { .. } => "auth",
            Self::MalformedReply { .. } | Self::Decode { .. } => "malformed_reply",
            Self::MappingOverrun { .. }
            | Self::MappingRejected { .. }
            | Self::InvalidSpec { .. }
            | Self::MappingBusy
            | Self::Sandbox { .. }
            | Self::InvalidProgram { .. } => "mapping",
            Self::PartnerReported { .. } => "partner_reported",
            Self::TooLarge { .. } => "too_large",
            Self::AddressDenied { .. } => "address_denied",
            Self::Shed { .. } => "shed",
            Self::NoEndpoint => "unavailable",
            _ => "internal",
        }
    }

    /// Whether trying the same thing again may succeed. A rejected document never will.
    pub fn is_retryable(&self) -> bool {
        match self {
            // Retrying a malformed spec or payload gives the same bytes back.
            Self::InvalidSpec { .. }
            | Self::Decode { .. }
            | Self::InvalidProgram { .. }
            | Self::MappingOverrun { .. }
            | Self::MappingRejected { .. }
            | Self::MalformedReply { .. } => false,
            // A 200 that carries an error may be transient, but the partner chose to answer:
            // retrying it would only amplify load on a partner that is already struggling.
            Self::PartnerReported { .. } => false,
            // Local and transient: a later call finds a free thread.
            Self::MappingBusy | Self::Sandbox { .. } => true,
            // The network and the partner's load change from one attempt to the next.
            Self::Transport { .. } | Self::Timeout { .. } | Self::RateLimited { .. } => true,
            Self::PartnerStatus { status, .. } => *status >= 500 || *status == 408,
            Self::Token { retryable, .. } => *retryable,
            // The same credentials, URL, template or size give the same answer; with no
            // time left there is nothing to retry in.
            Self::Unauthorized { .. }
            | Self::TooLarge { .. }
            | Self::Secret { .. }
            | Self::AddressDenied { .. }
            | Self::Request { .. }
            | Self::Unsupported { .. }
            | Self::Tls { .. }
            | Self::DeadlineExceeded { .. } => false,
            // The gateway's own guardrails refused: retrying now would defeat them.
            Self::Shed { .. } | Self::NoEndpoint => false,
        }
    }

    /// How long the partner asked to wait before trying again (429 `Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the call never reached the partner (safe to send elsewhere at no cost).
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            Self::Transport { connect: true, .. } | Self::Tls { .. }
        )
    }
}
