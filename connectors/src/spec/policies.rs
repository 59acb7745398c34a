//! A connector's policies: timeouts, retries, cache lifetimes, rate and concurrency.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "RetryPolicy::default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "RetryPolicy::default_backoff_ms")]
    pub backoff_ms: u32,
    /// Retries as a share of exchanges; `None`: the operator's `resilience` default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<u32>,
}

impl RetryPolicy {
    fn default_max_attempts() -> u32 {
        2
    }
    fn default_backoff_ms() -> u32 {
        25
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::default_max_attempts(),
            backoff_ms: Self::default_backoff_ms(),
            budget_percent: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    #[serde(default = "CachePolicy::default_ttl_s")]
    pub ttl_s: u32,
    #[serde(default = "CachePolicy::default_stale_while_revalidate_s")]
    pub stale_while_revalidate_s: u32,
    #[serde(default = "CachePolicy::default_stale_if_error_s")]
    pub stale_if_error_s: u32,
}

impl CachePolicy {
    fn default_ttl_s() -> u32 {
        60
    }
    fn default_stale_while_revalidate_s() -> u32 {
        30
    }
    fn default_stale_if_error_s() -> u32 {
        3600
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            ttl_s: Self::default_ttl_s(),
            stale_while_revalidate_s: Self::default_stale_while_revalidate_s(),
            stale_if_error_s: Self::default_stale_if_error_s(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Timeout of one HTTP exchange.
    #[serde(default = "Policies::default_timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Hedge idempotent reads after this delay; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_after_ms: Option<u32>,
    /// `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_rps: Option<f64>,
    /// Calls that may go at once before `rate_limit_rps` paces them (default: one
    /// second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<u32>,
    #[serde(default = "Policies::default_max_concurrency")]
    pub max_concurrency: u32,
    #[serde(default)]
    pub cache: CachePolicy,
}

impl Policies {
    fn default_timeout_ms() -> u32 {
        800
    }
    fn default_max_concurrency() -> u32 {
        64
    }
}

impl Default for Policies {
    fn default() -> Self {
        Self {
            timeout_ms: Self::default_timeout_ms(),
            retry: RetryPolicy::default(),
            hedge_after_ms: None,
            rate_limit_rps: None,
            rate_limit_burst: None,
            max_concurrency: Self::default_max_concurrency(),
            cache: CachePolicy::default(),
        }
    }
}
