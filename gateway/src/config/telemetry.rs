//! What the operator sees (DESIGN §8): logs, traces and metrics.
//!
//! ```yaml
//! log:
//!   format: json              # json (the default of `serve`) | text (the default of `demo`)
//!   level: info               # a tracing filter; RUST_LOG overrides it
//!   access: true              # one line per request
//! traces:                     # off unless an endpoint is given here or in
//!   endpoint: http://127.0.0.1:4318   # OTEL_EXPORTER_OTLP_ENDPOINT (OTLP HTTP/protobuf)
//!   sampling_ratio: 0.05      # of traces started here; a sampled `traceparent` is followed
//!   service_name: mallgate    # OTEL_SERVICE_NAME overrides it
//! metrics:
//!   public: false             # true: /metrics on the admin listener needs no token
//!   listen: 127.0.0.1:9464    # a listener of its own for /metrics (no token)
//! ```

use std::net::SocketAddr;

use serde::Deserialize;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line (`serve`'s default).
    Json,
    /// For people at a terminal (`demo`'s default).
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Absent: JSON for `serve`, text for `demo`.
    #[serde(default)]
    pub format: Option<LogFormat>,
    /// A `tracing` filter (`info`, `warn,mallgate::access=info`); `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: Option<String>,
    /// One access line per request (target `mallgate::access`).
    #[serde(default = "yes")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: None,
            level: None,
            access: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The OTLP HTTP endpoint (`http://collector:4318`; `/v1/traces` is added unless the
    /// URL already has a path). Absent: `OTEL_EXPORTER_OTLP_ENDPOINT`, else no traces.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Of the traces that start here, the share recorded (0 to 1). A frontend's sampled
    /// `traceparent` is always followed, an unsampled one never.
    #[serde(default = "default_ratio")]
    pub sampling_ratio: f64,
    /// `service.name` of the spans; `OTEL_SERVICE_NAME` overrides it.
    #[serde(default = "default_service")]
    pub service_name: String,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            sampling_ratio: default_ratio(),
            service_name: default_service(),
        }
    }
}

fn default_ratio() -> f64 {
    1.0
}

fn default_service() -> String {
    "mallgate".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `/metrics` on the admin listener answers without a token (a scraper inside the
    /// trusted network); otherwise it takes an operator token.
    #[serde(default)]
    pub public: bool,
    /// A listener of its own serving `/metrics` only, without a token.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

impl TracesConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err("traces.sampling_ratio must be between 0 and 1".into());
        }
        if let Some(endpoint) = &self.endpoint {
            let url = url::Url::parse(endpoint)
                .map_err(|e| format!("traces.endpoint `{endpoint}` is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("traces.endpoint must be an http or https URL".into());
            }
        }
        Ok(())
    }
}
