//! The retry policy of the partner stack, for tower's `Retry` layer: idempotent requests
//! only, a retryable failure only (a timeout, a reset, a 5xx or 408; never a 429, whose
//! `Retry-After` blocks the connector instead), at most `max_attempts`, an exponential
//! back-off that ends well before the deadline, and the connector's [`TpsBudget`]
//! (retries add about `budget_percent` of the exchanges, plus a small reserve). A retry
//! is a partner request like the first: it needs a rate token and no 429 block.
//!
//! [`TpsBudget`]: tower::retry::budget::TpsBudget

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;
use tower::retry::Policy;

use super::{AdmissionState, Exchange, bump};
use crate::error::ConnectorError;
use crate::runtime::http::Reply;
use crate::runtime::resilience::retry_delay;
use crate::spec::RetryPolicy as RetrySpec;

/// One exchange's retry state; tower clones it per call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    shared: Arc<AdmissionState>,
    max_attempts: u32,
    backoff: Duration,
    /// Retries granted so far, and whether the first attempt was deposited.
    retries: u32,
    deposited: bool,
}

impl RetryPolicy {
    pub fn new(shared: Arc<AdmissionState>, spec: &RetrySpec) -> Self {
        Self {
            shared,
            max_attempts: spec.max_attempts,
            backoff: Duration::from_millis(u64::from(spec.backoff_ms)),
            retries: 0,
            deposited: false,
        }
    }
}

/// Whether an attempt's result is worth another attempt.
fn retryable(result: &Result<Reply, ConnectorError>) -> bool {
    match result {
        Ok(reply) if reply.status == StatusCode::TOO_MANY_REQUESTS => false,
        Ok(reply) => reply.status.is_server_error() || reply.status == StatusCode::REQUEST_TIMEOUT,
        Err(e) => e.is_retryable(),
    }
}

impl Policy<Exchange, Reply, ConnectorError> for RetryPolicy {
    type Future = Pin<Box<tokio::time::Sleep>>;

    fn retry(
        &mut self,
        exchange: &mut Exchange,
        result: &mut Result<Reply, ConnectorError>,
    ) -> Option<Self::Future> {
        if !retryable(result) {
            return None;
        }
        let remaining = exchange.deadline.saturating_duration_since(Instant::now());
        let wait = retry_delay(
            exchange.idempotent,
            true,
            self.retries + 1,
            self.max_attempts,
            self.backoff,
            remaining,
        )?;
        if !self.shared.may_send_more() || !self.shared.withdraw() {
            return None;
        }
        self.retries += 1;
        bump(&self.shared.counters.retries);
        Some(Box::pin(tokio::time::sleep(wait)))
    }

    fn clone_request(&mut self, exchange: &Exchange) -> Option<Exchange> {
        // Called before every attempt; the first one earns the budget its share. tower
        // calls it on the service's own policy before cloning that into the call, so this
        // counts once per exchange because every exchange goes through a fresh clone of
        // the stack (`Stack::clone().oneshot`, as the connector does).
        if !self.deposited {
            self.deposited = true;
            self.shared.deposit();
        }
        Some(exchange.clone())
    }
}
