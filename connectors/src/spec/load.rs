//! Loading a connector document: parse (syntax) -> JSON Schema (shape) -> serde (types) ->
//! the rules the schema cannot say, every problem by JSON pointer, line and column.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::{ConnectorError, Problem};
use crate::mapping::ConnectorPrograms;
use crate::source::{self, Format, SourceMap, escape_token};
use crate::template::Template;

use super::{
    Auth, Capability, CapabilitySpec, ConnectorSpec, Method, Owner, Pagination, QueryValue,
    SecretRef, SecretSource, Tls,
};

impl ConnectorSpec {
    /// The merge rank of this partner's descriptive fields: lower wins.
    pub fn effective_priority(&self) -> u32 {
        self.priority.unwrap_or(self.kind.default_priority())
    }

    /// The partner secrets (`secret:NAME`) this connector names: (pointer, name), in
    /// document order, each name once.
    pub fn partner_secrets(&self) -> Vec<(String, String)> {
        let auth = self
            .auth
            .secret_fields()
            .into_iter()
            .map(|(f, t)| (format!("/auth/{f}"), t));
        let tls = self
            .tls
            .iter()
            .flat_map(Tls::secret_fields)
            .map(|(f, t)| (format!("/tls/{f}"), t));
        let mut out: Vec<(String, String)> = Vec::new();
        for (pointer, text) in auth.chain(tls) {
            if let Some((SecretSource::Partner, name)) = SecretRef::parse(text)
                && !out.iter().any(|(_, n)| n == name)
            {
                out.push((pointer, name.to_owned()));
            }
        }
        out
    }

    /// Loads a connector document submitted by `owner`, or returns every problem found at
    /// the first failing stage, sorted by position.
    pub fn load(text: &str, format: Format, owner: &Owner) -> Result<Self, ConnectorError> {
        Self::load_compiled(text, format, owner).map(|(spec, _)| spec)
    }

    /// Like [`load`](Self::load), keeping the compiled jq programs the last stage built,
    /// for callers that run the connector (no second compile).
    pub fn load_compiled(
        text: &str,
        format: Format,
        owner: &Owner,
    ) -> Result<(Self, ConnectorPrograms), ConnectorError> {
        let (value, map) =
            source::parse(text, format).map_err(|problem| ConnectorError::InvalidSpec {
                problems: vec![problem],
            })?;
        Self::load_value_compiled(value, &map, owner)
    }

    /// Loads an already parsed document; `map` gives positions (empty: none).
    pub fn load_value(
        value: Value,
        map: &SourceMap,
        owner: &Owner,
    ) -> Result<Self, ConnectorError> {
        Self::load_value_compiled(value, map, owner).map(|(spec, _)| spec)
    }

    /// [`load_value`](Self::load_value), keeping the compiled programs.
    pub fn load_value_compiled(
        value: Value,
        map: &SourceMap,
        owner: &Owner,
    ) -> Result<(Self, ConnectorPrograms), ConnectorError> {
        let located = |pointer: String, reason: String| {
            let pos = map.locate(&pointer);
            Problem {
                pointer,
                line: pos.map(|p| p.line),
                column: pos.map(|p| p.column),
                reason,
            }
        };
        let finish = |mut problems: Vec<Problem>| {
            problems.sort_by(|a, b| {
                (a.line, a.column, &a.pointer, &a.reason)
                    .cmp(&(b.line, b.column, &b.pointer, &b.reason))
            });
            problems.dedup();
            ConnectorError::InvalidSpec { problems }
        };

        let violations = mallgate_schemas::connector_violations(&value);
        if !violations.is_empty() {
            return Err(finish(
                violations
                    .into_iter()
                    .map(|v| located(v.pointer, v.reason))
                    .collect(),
            ));
        }
        // The schema and these types agree (tested); should they ever drift, the problem
        // still names its place.
        let spec: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let pointer = serde_path_pointer(e.path());
            finish(vec![located(pointer, e.inner().to_string())])
        })?;
        let problems = spec.rule_violations(owner);
        if !problems.is_empty() {
            return Err(finish(
                problems
                    .into_iter()
                    .map(|(pointer, reason)| located(pointer, reason))
                    .collect(),
            ));
        }
        // Last, every jq program must compile under the sandbox's rules.
        let programs = ConnectorPrograms::compile(&spec).map_err(|problems| {
            finish(
                problems
                    .into_iter()
                    .map(|(pointer, reason)| located(pointer, reason))
                    .collect(),
            )
        })?;
        Ok((spec, programs))
    }

    /// The rules a JSON Schema cannot state, as (pointer, reason).
    fn rule_violations(&self, owner: &Owner) -> Vec<(String, String)> {
        let mut out = Vec::new();

        if let Owner::Partner(partner) = owner
            && &self.partner != partner
        {
            out.push((
                "/partner".to_owned(),
                format!(
                    "this connector belongs to partner `{}`; partner `{partner}` may only submit its own connectors",
                    self.partner
                ),
            ));
        }

        let auth_fields = self
            .auth
            .secret_fields()
            .into_iter()
            .map(|(f, t)| ("auth", f, t));
        let tls_fields = self
            .tls
            .iter()
            .flat_map(Tls::secret_fields)
            .map(|(f, t)| ("tls", f, t));
        for (block, field, text) in auth_fields.chain(tls_fields) {
            let Some((source, _)) = SecretRef::parse(text) else {
                continue;
            };
            if matches!(owner, Owner::Partner(_)) && source != SecretSource::Partner {
                let scheme = if source == SecretSource::Env {
                    "env:"
                } else {
                    "file:"
                };
                out.push((
                    format!("/{block}/{field}"),
                    format!(
                        "`{scheme}` references are allowed only in operator-owned connectors; store the value with PUT /admin/v1/partners/{}/secrets/NAME and write `secret:NAME`",
                        self.partner
                    ),
                ));
            }
        }

        let mut seen_urls = HashSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let pointer = format!("/endpoints/{i}/url");
            if let Err(reason) = check_url(&endpoint.url) {
                out.push((pointer.clone(), reason));
            }
            if !seen_urls.insert(endpoint.url.trim_end_matches('/')) {
                out.push((
                    pointer,
                    format!("endpoint `{}` is listed twice", endpoint.url),
                ));
            }
        }
        if let Auth::Oauth2ClientCredentials { token_url, .. } = &self.auth
            && let Err(reason) = check_url(token_url)
        {
            out.push(("/auth/token_url".to_owned(), reason));
        }

        let allowed = self.kind.allowed_capabilities();
        let reserved = self.auth.reserved_headers();
        for (capability, spec) in &self.capabilities {
            let at = format!("/capabilities/{}", escape_token(capability.name()));
            if !allowed.contains(capability) {
                out.push((
                    at.clone(),
                    format!(
                        "a {} connector cannot serve {capability}; a {} serves {}",
                        self.kind.name(),
                        self.kind.name(),
                        allowed
                            .iter()
                            .map(|c| c.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            capability_violations(*capability, spec, &at, &reserved, &mut out);
        }
        out
    }
}

fn serde_path_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(format!("/{index}")),
            Segment::Map { key } => Some(format!("/{}", escape_token(key))),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// Checks a partner base or token URL beyond the schema's pattern: it parses, it is http(s)
/// with a host, and it carries no credentials (they would end up in logs). The SSRF policy
/// on the address itself is applied where the URL is used.
fn check_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "`{text}` must be an http:// or https:// URL with a host"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "a URL must not carry credentials; use `auth` with a secret reference".to_owned(),
        );
    }
    Ok(())
}

fn check_template(
    capability: Capability,
    text: &str,
    pointer: String,
    out: &mut Vec<(String, String)>,
) {
    match Template::parse(text) {
        Err(reason) => out.push((pointer, reason)),
        Ok(template) => {
            for field in template.fields() {
                let root = field.split('.').next().unwrap_or(field);
                if root != "request_id" && !capability.query_fields().contains(&root) {
                    out.push((
                        pointer.clone(),
                        format!(
                            "unknown field `{{{field}}}`; {capability} offers {}, request_id",
                            capability.query_fields().join(", ")
                        ),
                    ));
                }
            }
        }
    }
}

/// Why a capability may not set header `name` itself, if it may not: the client frames
/// the request (`host`, `content-length`, ...), the body's format sets `content-type`, and
/// the auth sets its own headers (`reserved`, lower case).
fn header_conflict(name: &str, has_body: bool, reserved: &[String]) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ]
    .contains(&lower.as_str())
    {
        return Some(format!(
            "`{name}` is set by the HTTP client for every request; remove it"
        ));
    }
    if has_body && lower == "content-type" {
        return Some(format!(
            "`{name}` is set by the body's format; remove it or change `body`"
        ));
    }
    let taken = reserved.contains(&lower);
    taken.then(|| {
        format!("`{name}` is set by the connector's `auth`; a request may not carry it twice")
    })
}

fn capability_violations(
    capability: Capability,
    spec: &CapabilitySpec,
    at: &str,
    reserved: &[String],
    out: &mut Vec<(String, String)>,
) {
    let request = &spec.request;
    check_template(capability, &request.path, format!("{at}/request/path"), out);
    for (name, value) in &request.query {
        if let QueryValue::Template(text) = value {
            let pointer = format!("{at}/request/query/{}", escape_token(name));
            check_template(capability, text, pointer, out);
        }
    }
    for (name, text) in &request.headers {
        let pointer = format!("{at}/request/headers/{}", escape_token(name));
        if let Some(reason) = header_conflict(name, request.body.is_some(), reserved) {
            out.push((pointer.clone(), reason));
        }
        check_template(capability, text, pointer, out);
    }
    if request.method == Method::Get && request.body.is_some() {
        out.push((
            format!("{at}/request/body"),
            "a GET request has no body; use method POST or move the fields to `query`".to_owned(),
        ));
    }
    if let Some(name) = spec.pagination.as_ref().and_then(Pagination::header_name)
        && let Some(reason) = header_conflict(name, false, reserved)
    {
        out.push((format!("{at}/pagination/name"), reason));
    }
    if let Some(param) = spec.pagination.as_ref().and_then(Pagination::query_param)
        && request.query.contains_key(param)
    {
        out.push((
            format!("{at}/request/query/{}", escape_token(param)),
            format!("`{param}` is set by the pagination; remove it from the request query"),
        ));
    }
    for (i, field) in spec.supports.iter().enumerate() {
        if !capability.query_fields().contains(&field.as_str()) {
            out.push((
                format!("{at}/supports/{i}"),
                format!(
                    "unknown field `{field}`; {capability} offers {}",
                    capability.query_fields().join(", ")
                ),
            ));
        }
    }
}
