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
}

impl ConnectorError {
    /// Whether trying the same thing again may succeed. A rejected document never will.
    pub fn is_retryable(&self) -> bool {
        match self {
            // Retrying a malformed spec or payload gives the same bytes back.
            Self::InvalidSpec { .. }
            | Self::Decode { .. }
            | Self::InvalidProgram { .. }
            | Self::MappingOverrun { .. }
            | Self::MalformedReply { .. } => false,
            // A 200 that carries an error may be transient, but the partner chose to answer:
            // retrying it would only amplify load on a partner that is already struggling.
            Self::PartnerReported { .. } => false,
            // Local and transient: a later call finds a free thread.
            Self::MappingBusy | Self::Sandbox { .. } => true,
        }
    }
}
