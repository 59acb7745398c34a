//! [`Connector::call`]: fill the capability's request template from the query, walk the
//! pages through the partner stack, and map each reply, under one deadline.

use std::sync::{Arc, OnceLock};

use reqwest::{Method as HttpMethod, StatusCode};
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

use super::auth::{Applied, static_auth};
use super::connector::Connector;
use super::guard::redact;
use super::http::{Reply, link, retry_after};
use super::stack::Prepared;
use super::{
    CallOutput, CallStats, RequestTemplates, encode_path, lookup, redact_text, token_text, warning,
};
use crate::error::ConnectorError;
use crate::mapping::{CompiledCapability, Globals, MappedPage};
use crate::spec::{BodyFormat, Capability, CapabilitySpec, Method, Pagination, TokenLocation};

/// The next request of a walk.
enum Next {
    /// The templated request, with the walk's own query parameter (page, offset, cursor,
    /// token) if it has one.
    Templated(Option<(String, String)>),
    /// Exactly this URL (a Link header or a next URL).
    Url(Url),
    /// The templated request with a token header.
    Header(String, String),
}

/// The request of a call, rendered once from the template and the query.
pub(super) struct Rendered {
    pub(super) first_url: Url,
    pub(super) method: HttpMethod,
    pub(super) params: Vec<(String, String)>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Option<(Vec<u8>, &'static str)>,
}

/// Where a walk is: the page counter, the cursors seen (a partner repeating one ends the
/// walk) and the page size parameter.
struct Walk {
    page_number: u64,
    seen: Vec<String>,
    size_param: Option<(String, String)>,
}

impl Walk {
    /// The first request and the walk state for `pagination`.
    fn start(pagination: Option<&Pagination>) -> (Next, Self) {
        let first = Next::Templated(match pagination {
            Some(Pagination::Page { param, start, .. }) => Some((param.clone(), start.to_string())),
            Some(Pagination::Offset { param, .. }) => Some((param.clone(), "0".to_owned())),
            Some(Pagination::Cursor { param, first, .. }) => {
                first.as_ref().map(|f| (param.clone(), f.clone()))
            }
            _ => None,
        });
        let size_param = match pagination {
            Some(Pagination::Page {
                size_param: Some(p),
                size: Some(s),
                ..
            }) => Some((p.clone(), s.to_string())),
            Some(Pagination::Offset {
                size_param, size, ..
            }) => Some((size_param.clone(), size.to_string())),
            _ => None,
        };
        let page_number = match pagination {
            Some(Pagination::Page { start, .. }) => u64::from(*start),
            _ => 0,
        };
        let walk = Self {
            page_number,
            seen: Vec::new(),
            size_param,
        };
        (first, walk)
    }

    /// A cursor or token not seen before, remembered.
    fn fresh(&mut self, value: Option<&Value>) -> Option<String> {
        let cursor = value.and_then(token_text)?;
        if self.seen.contains(&cursor) {
            return None;
        }
        self.seen.push(cursor.clone());
        Some(cursor)
    }

    /// Where the walk goes after `page` (fetched from `url`, answered with `reply`).
    fn following(
        &mut self,
        pagination: Option<&Pagination>,
        page: &MappedPage,
        reply: &Reply,
        url: &Url,
    ) -> Option<Next> {
        let total = || page.paging.as_ref().and_then(Value::as_u64);
        match pagination? {
            Pagination::Page { param, size, .. } => {
                let short = size.is_some_and(|s| page.selected < s as usize);
                if page.selected == 0 || short || total().is_some_and(|t| self.page_number >= t) {
                    return None;
                }
                self.page_number += 1;
                Some(Next::Templated(Some((
                    param.clone(),
                    self.page_number.to_string(),
                ))))
            }
            Pagination::Offset { param, size, .. } => {
                self.page_number += u64::from(*size);
                if page.selected < *size as usize || total().is_some_and(|t| self.page_number >= t)
                {
                    return None;
                }
                Some(Next::Templated(Some((
                    param.clone(),
                    self.page_number.to_string(),
                ))))
            }
            Pagination::Cursor { param, .. } => self
                .fresh(page.paging.as_ref())
                .map(|c| Next::Templated(Some((param.clone(), c)))),
            Pagination::NextToken { location, name, .. } => {
                self.fresh(page.paging.as_ref()).map(|c| match location {
                    TokenLocation::Query => Next::Templated(Some((name.clone(), c))),
                    TokenLocation::Header => Next::Header(name.clone(), c),
                })
            }
            Pagination::LinkHeader { rel, .. } => link(&reply.headers, rel, url).map(Next::Url),
            Pagination::NextUrl { .. } => page
                .paging
                .as_ref()
                .and_then(Value::as_str)
                .and_then(|u| url.join(u).ok())
                .map(Next::Url),
        }
    }
}

/// A non-2xx reply as the call's error; `None` for a 404 that means "no such record".
fn status_error(
    reply: &Reply,
    url: &Url,
    capability: Capability,
    first_page: bool,
) -> Option<ConnectorError> {
    let status = reply.status;
    if status == StatusCode::NOT_FOUND
        && first_page
        && matches!(
            capability,
            Capability::CatalogGet | Capability::TrackingGet | Capability::InventoryGet
        )
    {
        return None;
    }
    Some(match status {
        StatusCode::TOO_MANY_REQUESTS => ConnectorError::RateLimited {
            url: redact(url),
            retry_after: retry_after(&reply.headers),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ConnectorError::Unauthorized {
            url: redact(url),
            status: status.as_u16(),
        },
        _ => ConnectorError::PartnerStatus {
            url: redact(url),
            status: status.as_u16(),
        },
    })
}

/// The request body as bytes and content type.
fn encode_body(
    format: BodyFormat,
    value: &Value,
) -> Result<(Vec<u8>, &'static str), ConnectorError> {
    Ok(match format {
        BodyFormat::Json => (
            serde_json::to_vec(value).map_err(|e| ConnectorError::Request {
                reason: e.to_string(),
            })?,
            "application/json",
        ),
        BodyFormat::Form => {
            let Value::Object(fields) = value else {
                return Err(ConnectorError::Request {
                    reason: "a form body must be an object".into(),
                });
            };
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                if let Some(text) = token_text(v) {
                    form.append_pair(k, &text);
                }
            }
            (
                form.finish().into_bytes(),
                "application/x-www-form-urlencoded",
            )
        }
        BodyFormat::Xml | BodyFormat::Text => {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let kind = if format == BodyFormat::Xml {
                "application/xml"
            } else {
                "text/plain"
            };
            (text.into_bytes(), kind)
        }
    })
}

/// The query pairs the first page of a walk adds (its page number or offset, its size).
pub(super) fn first_page(pagination: Option<&Pagination>) -> Vec<(String, String)> {
    let (next, walk) = Walk::start(pagination);
    let mut out: Vec<_> = walk.size_param.into_iter().collect();
    if let Next::Templated(Some(pair)) = next {
        out.push(pair);
    }
    out
}

/// What a call needs at hand for each page.
pub(super) struct CallContext<'a> {
    pub(super) capability: Capability,
    pub(super) cap: &'a CapabilitySpec,
    pub(super) compiled: &'a CompiledCapability,
    pub(super) query: &'a Value,
    pub(super) globals: &'a (dyn Fn() -> Arc<Globals> + Sync),
    pub(super) deadline: Instant,
}

impl Connector {
    /// What a call of `capability` needs: its spec, its compiled programs, its templates.
    pub(super) fn parts(
        &self,
        capability: Capability,
    ) -> Result<(&CapabilitySpec, &CompiledCapability, &RequestTemplates), ConnectorError> {
        match (
            self.spec.capabilities.get(&capability),
            self.programs.capabilities.get(&capability),
            self.templates.get(&capability),
        ) {
            (Some(cap), Some(compiled), Some(templates)) => Ok((cap, compiled, templates)),
            _ => Err(ConnectorError::Unsupported {
                capability: capability.name().to_owned(),
            }),
        }
    }

    /// Calls the partner for `capability` with the normalized `query` and maps every page,
    /// before `deadline`. `request_id` fills `{request_id}` (correlation headers).
    pub async fn call(
        &self,
        capability: Capability,
        query: &Value,
        request_id: &str,
        deadline: Instant,
    ) -> Result<CallOutput, ConnectorError> {
        let (cap, compiled, templates) = self.parts(capability)?;
        // Built once, and only when a program runs (a pass-through reads no globals).
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
        let output = self.walk(&context, rendered).await?;
        if output.records.is_empty() && output.stats.dropped > 0 {
            return Err(ConnectorError::MappingRejected {
                dropped: output.stats.dropped,
                first: output
                    .warnings
                    .iter()
                    .find(|w| w.code == "record_dropped")
                    .map(|w| w.message.chars().take(300).collect())
                    .unwrap_or_default(),
            });
        }
        if output.records.is_empty()
            && !output.not_found
            && output.stats.selected > 0
            && capability.is_lookup()
        {
            return Err(ConnectorError::MappingRejected {
                dropped: output.stats.selected,
                first: format!(
                    "the reply held {} record{} and the map produced none",
                    output.stats.selected,
                    if output.stats.selected == 1 { "" } else { "s" }
                ),
            });
        }
        Ok(output)
    }

    /// The call's request: the path, query and headers templates filled, jq query values
    /// and the body program run.
    pub(super) async fn render(
        &self,
        context: &CallContext<'_>,
        templates: &RequestTemplates,
        request_id: &str,
    ) -> Result<Rendered, ConnectorError> {
        let (cap, query) = (context.cap, context.query);
        let base = self.endpoint()?;
        let fill = |t: &crate::template::Template| {
            t.render(|p| lookup(query, request_id, p), str::to_owned)
        };
        let path = templates
            .path
            .render(|p| lookup(query, request_id, p), encode_path)
            .ok_or_else(|| ConnectorError::Request {
                reason: format!(
                    "the path `{}` needs a query field the call does not have",
                    cap.request.path
                ),
            })?;
        let url_text = format!("{}{}", base.as_str().trim_end_matches('/'), path);
        let first_url = Url::parse(&url_text).map_err(|e| ConnectorError::Request {
            reason: format!("`{}` is not a URL: {e}", redact_text(&url_text)),
        })?;
        self.check(&first_url)?;
        let mut params: Vec<(String, String)> = Vec::new();
        for (name, value) in &templates.query {
            let text = match value {
                Some(t) => fill(t),
                None => {
                    if !context.compiled.query.contains_key(name) {
                        continue;
                    }
                    self.request_program(
                        context.capability,
                        Some(name.clone()),
                        &(context.globals)(),
                        context.deadline,
                    )
                    .await?
                    .as_ref()
                    .and_then(|v| token_text(v).or_else(|| v.as_bool().map(|b| b.to_string())))
                }
            };
            if let Some(text) = text {
                params.push((name.clone(), text));
            }
        }
        let headers = templates
            .headers
            .iter()
            .filter_map(|(name, t)| fill(t).map(|text| (name.clone(), text)))
            .collect();
        let body = match &cap.request.body {
            None => None,
            Some(spec) => {
                let value = self
                    .request_program(
                        context.capability,
                        None,
                        &(context.globals)(),
                        context.deadline,
                    )
                    .await?
                    .ok_or_else(|| ConnectorError::Request {
                        reason: "the request body program gave nothing".into(),
                    })?;
                Some(encode_body(spec.format, &value)?)
            }
        };
        let method = match cap.request.method {
            Method::Get => HttpMethod::GET,
            Method::Post => HttpMethod::POST,
            Method::Put => HttpMethod::PUT,
        };
        Ok(Rendered {
            first_url,
            method,
            params,
            headers,
            body,
        })
    }

    /// Walks the pages of a rendered request, mapping each.
    async fn walk(
        &self,
        context: &CallContext<'_>,
        rendered: Rendered,
    ) -> Result<CallOutput, ConnectorError> {
        let cap = context.cap;
        let auth = static_auth(&self.credentials())?.unwrap_or(Applied::None);
        let client = self.http_client()?;
        let idempotent = cap.is_idempotent();
        let pagination = cap.pagination.as_ref();
        let max_pages = pagination.map_or(1, Pagination::max_pages);
        let mut output = CallOutput {
            stats: CallStats {
                endpoint: redact(&rendered.first_url),
                ..CallStats::default()
            },
            ..CallOutput::default()
        };
        let (mut next, mut walk) = Walk::start(pagination);
        loop {
            if Instant::now() >= context.deadline {
                return Err(ConnectorError::DeadlineExceeded {
                    pages: output.stats.pages,
                });
            }
            let (url, templated) = match &next {
                Next::Url(u) => (u.clone(), false),
                _ => (rendered.first_url.clone(), true),
            };
            let mut page = Prepared {
                client: client.clone(),
                method: rendered.method.clone(),
                query: rendered.params.clone(),
                headers: rendered.headers.clone(),
                body: rendered.body.clone(),
                auth: auth.clone(),
                templated,
            };
            page.query.extend(walk.size_param.clone());
            match &next {
                Next::Templated(Some(pair)) => page.query.push(pair.clone()),
                Next::Header(name, value) => page.headers.push((name.clone(), value.clone())),
                _ => {}
            }
            let pages = output.stats.pages;
            let reply = self
                .send(
                    page,
                    &url,
                    (context.capability, idempotent, context.deadline),
                    &mut output.stats,
                )
                .await
                .map_err(|e| match e {
                    // The stack does not know how far the walk got.
                    ConnectorError::DeadlineExceeded { .. } => {
                        ConnectorError::DeadlineExceeded { pages }
                    }
                    other => other,
                })?;
            output.stats.bytes += reply.body.len() as u64;
            if !reply.status.is_success() {
                let first = output.stats.pages == 0;
                return match status_error(&reply, &url, context.capability, first) {
                    None => {
                        output.not_found = true;
                        Ok(output)
                    }
                    Some(e) => Err(e),
                };
            }
            let (page, reply) = self
                .map_reply(context, reply, output.stats.pages == 0)
                .await?;
            output.stats.pages += 1;
            if page.not_found {
                output.not_found |= output.stats.pages == 1;
                break;
            }
            let following = walk.following(pagination, &page, &reply, &url);
            output.stats.selected += page.selected;
            output.stats.dropped += page.dropped.len();
            output.warnings.extend(page.dropped);
            output.records.extend(page.records);
            output.typed.extend(page.typed);
            let Some(following) = following else {
                break;
            };
            if let Next::Url(u) = &following {
                self.check(u)?;
                if walk.seen.contains(&u.to_string()) {
                    break;
                }
                walk.seen.push(u.to_string());
            }
            if output.stats.pages >= max_pages {
                output.warnings.push(warning(
                    "page_cap_reached",
                    format!(
                        "stopped after {max_pages} pages (the connector's max_pages); more results exist"
                    ),
                ));
                break;
            }
            next = following;
        }
        Ok(output)
    }

    /// Maps a reply; the first page of a call may become the partner's recorded sample
    /// (kept as the version maps it: a reply whose mapping fails is no sample). The reply
    /// comes back without its body, for the pagination headers.
    async fn map_reply(
        &self,
        context: &CallContext<'_>,
        mut reply: Reply,
        first: bool,
    ) -> Result<(MappedPage, Reply), ConnectorError> {
        let body = std::mem::take(&mut reply.body);
        let span = tracing::info_span!(
            target: "mallgate::mapping",
            "mapping",
            mallgate.reply_bytes = body.len(),
            mallgate.records = tracing::field::Empty,
            mallgate.records_dropped = tracing::field::Empty,
        );
        let mapped = async {
            let globals = (context.globals)();
            if first && self.resources.samples.wants(context.capability, body.len()) {
                let sample = body.clone();
                let page = self
                    .map_page(context.compiled, body, &globals, context.deadline)
                    .await?;
                self.resources
                    .samples
                    .record(context.capability, &sample, context.query);
                return Ok(page);
            }
            self.map_page(context.compiled, body, &globals, context.deadline)
                .await
        }
        .instrument(span.clone())
        .await;
        if let Ok(page) = &mapped {
            span.record("mallgate.records", page.records.len());
            span.record("mallgate.records_dropped", page.dropped.len());
        }
        Ok((mapped?, reply))
    }
}
