//! One request of a capability through the partner's stack, its reply kept raw and not
//! mapped: what a live dry-run asks the partner, so
//! that a candidate and the active version can each map the very same reply.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::CallStats;
use super::auth::{Applied, static_auth};
use super::call::CallContext;
use super::call::first_page;
use super::connector::Connector;
use super::guard::redact;
use super::stack::Prepared;
use crate::error::ConnectorError;
use crate::spec::Capability;

/// The largest reply body a fetch keeps.
pub const MAX_FETCHED_BYTES: usize = 1024 * 1024;

/// One exchange of a fetch: the request as made (credentials never shown) and the raw
/// reply.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub method: String,
    /// Scheme, host, port and path: no query string, no credentials.
    pub url: String,
    /// The query parameters the template added (auth parameters are the stack's and are
    /// not among them).
    pub query: Vec<(String, String)>,
    /// The names of the headers the template added (values may carry secrets: not shown).
    pub headers: Vec<String>,
    pub status: u16,
    /// The reply's headers, lower-case name and value (`set-cookie` left out).
    pub reply_headers: Vec<(String, String)>,
    /// The reply body (at most [`MAX_FETCHED_BYTES`]).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Requests the stack made for it (retries and hedges included).
    pub requests: u32,
}

impl Connector {
    /// Renders the request of `capability` for `query` and sends its first page through
    /// the partner's stack (auth, breaker, retries, the address guard), keeping the reply
    /// raw: nothing is mapped and nothing is cached. A capability that writes (a quote not
    /// declared `idempotent`) is refused: a dry-run never makes a partner act.
    pub async fn fetch(
        &self,
        capability: Capability,
        query: &Value,
        request_id: &str,
        deadline: Instant,
    ) -> Result<Fetched, ConnectorError> {
        let (cap, compiled, templates) = self.parts(capability)?;
        // Every capability but a quote only reads; a quote may book or reserve.
        if capability == Capability::RatesQuote && !cap.is_idempotent() {
            return Err(ConnectorError::Request {
                reason: format!(
                    "{} is not declared idempotent: a live dry-run does not send it (declare `idempotent: true` if the partner's API allows repeating it)",
                    capability.name()
                ),
            });
        }
        let globals_cell = OnceLock::new();
        let globals = || Arc::clone(globals_cell.get_or_init(|| self.globals(query)));
        let context = CallContext {
            capability,
            cap,
            compiled,
            query,
            globals: &globals,
            deadline,
        };
        let rendered = self.render(&context, templates, request_id).await?;
        let mut params = rendered.params.clone();
        params.extend(first_page(cap.pagination.as_ref()));
        let page = Prepared {
            client: self.http_client()?,
            method: rendered.method.clone(),
            query: params.clone(),
            headers: rendered.headers.clone(),
            body: rendered.body.clone(),
            auth: static_auth(&self.credentials())?.unwrap_or(Applied::None),
            templated: true,
        };
        let mut stats = CallStats::default();
        let call = (capability, true, deadline);
        let reply = self
            .send(page, &rendered.first_url, call, &mut stats)
            .await?;
        if reply.body.len() > MAX_FETCHED_BYTES {
            return Err(ConnectorError::TooLarge {
                url: redact(&rendered.first_url),
                limit: MAX_FETCHED_BYTES,
            });
        }
        let reply_headers = reply
            .headers
            .iter()
            .filter(|(name, _)| *name != reqwest::header::SET_COOKIE)
            .filter_map(|(name, value)| {
                value
                    .to_str()
                    .ok()
                    .map(|v| (name.as_str().to_owned(), v.to_owned()))
            })
            .collect();
        Ok(Fetched {
            method: rendered.method.to_string(),
            url: redact(&rendered.first_url),
            query: params,
            headers: rendered.headers.iter().map(|(n, _)| n.clone()).collect(),
            status: reply.status.as_u16(),
            reply_headers,
            body: reply.body,
            requests: stats.requests,
        })
    }
}
