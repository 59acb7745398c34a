use std::path::PathBuf;

use mallgate_connectors::ConnectorError;

/// What can go wrong starting or reconfiguring the gateway. Request-time errors are
/// [`crate::problem::ApiError`]s, answered as problem+json.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connector {name}: {source}")]
    Connector {
        name: String,
        #[source]
        source: ConnectorError,
    },
    #[error("connectors rejected, the active set keeps serving:\n{}", problems.join("\n"))]
    Rejected { problems: Vec<String> },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("{0}")]
    Startup(String),
    /// A compare-and-put lost: another writer (another replica) changed `key` first.
    #[error("store key {key}: {reason}")]
    StoreConflict { key: String, reason: String },
    /// The store (etcd) did not answer: the last good configuration keeps serving.
    #[error("the store is unavailable: {reason}")]
    StoreUnavailable { reason: String },
}
