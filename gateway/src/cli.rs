//! `mallgate connector check|push`: the partner's side of onboarding, from a shell.
//!
//! - `check FILE [--owner operator|partner:ID] [--sample FILE --capability C [--query JSON]]`
//!   validates offline (every problem as `FILE:LINE:COLUMN: POINTER: REASON`) and, with a
//!   sample reply, maps it in the sandbox child and prints the normalized records.
//! - `push FILE --admin URL --token T [--if-match REV]` registers the document through the
//!   admin API (the current revision is looked up when not given). `T` may be a reference
//!   (`env:VAR`, `file:PATH`) so the token stays out of the process list.

use std::path::Path;

use mallgate_connectors::mapping::{DryRunRequest, Sandbox, SandboxLimits};
use mallgate_connectors::{Capability, ConnectorError, ConnectorSpec, Format, Owner};
use serde_json::{Value, json};

use crate::GatewayError;

/// What a CLI command ends with: its output, and whether it succeeded.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub output: String,
}

fn fail(reason: impl Into<String>) -> GatewayError {
    GatewayError::Startup(reason.into())
}

fn read(path: &Path) -> Result<String, GatewayError> {
    std::fs::read_to_string(path).map_err(|source| GatewayError::Io {
        path: path.to_owned(),
        source,
    })
}

fn owner(text: &str) -> Result<Owner, GatewayError> {
    match text {
        "operator" => Ok(Owner::Operator),
        other => match other.strip_prefix("partner:") {
            Some(id) if !id.is_empty() => Ok(Owner::Partner(id.to_owned())),
            _ => Err(fail(format!(
                "--owner takes operator or partner:ID, not `{other}`"
            ))),
        },
    }
}

/// `mallgate connector check ...`.
pub fn check(args: &[String]) -> Result<Outcome, GatewayError> {
    let mut file = None;
    let mut who = Owner::Operator;
    let (mut sample, mut capability, mut query) = (None, None, json!({}));
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| fail(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--owner" => who = owner(&value()?)?,
            "--sample" => sample = Some(value()?),
            "--capability" => capability = Some(value()?),
            "--query" => {
                query = serde_json::from_str(&value()?)
                    .map_err(|e| fail(format!("--query is not JSON: {e}")))?;
            }
            other if file.is_none() && !other.starts_with("--") => file = Some(other.to_owned()),
            other => return Err(fail(format!("unknown argument `{other}`"))),
        }
    }
    let file = file.ok_or_else(|| fail("check needs a connector FILE"))?;
    let text = read(Path::new(&file))?;
    let format = Format::sniff(&text);
    let spec = match ConnectorSpec::load(&text, format, &who) {
        Ok(spec) => spec,
        Err(ConnectorError::InvalidSpec { problems }) => {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| {
                    let at = match (p.line, p.column) {
                        (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
                        _ => file.clone(),
                    };
                    let pointer = if p.pointer.is_empty() {
                        "(document)"
                    } else {
                        &p.pointer
                    };
                    format!("{at}: {pointer}: {}", p.reason)
                })
                .collect();
            return Ok(Outcome {
                ok: false,
                output: lines.join("\n"),
            });
        }
        Err(other) => return Err(fail(other.to_string())),
    };
    let summary = format!(
        "ok {file}: connector `{}` of partner `{}`, {} endpoint(s), {}",
        spec.id,
        spec.partner,
        spec.endpoints.len(),
        spec.capabilities
            .keys()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let Some(sample) = sample else {
        return Ok(Outcome {
            ok: true,
            output: summary,
        });
    };
    let capability: Capability = serde_json::from_value(Value::from(
        capability.ok_or_else(|| fail("--sample needs --capability"))?,
    ))
    .map_err(|_| fail("--capability takes a capability such as catalog.search"))?;
    let payload = std::fs::read(&sample).map_err(|source| GatewayError::Io {
        path: sample.clone().into(),
        source,
    })?;
    let program = std::env::current_exe().map_err(|e| fail(e.to_string()))?;
    let sandbox = Sandbox::new(
        program,
        vec!["sandbox-child".into()],
        SandboxLimits::default(),
    );
    let request = DryRunRequest {
        connector: text,
        format,
        owner: who,
        capability,
        provenance: json!({"partner_id": spec.partner, "connector_id": spec.id,
                           "connector_version": 1, "fetched_at": jiff::Timestamp::now().to_string()}),
        query,
        locations: json!({}),
    };
    match sandbox.dry_run(&request, &payload) {
        Ok(out) => Ok(Outcome {
            ok: true,
            output: serde_json::to_string_pretty(&json!({
                "records": out.records, "selected": out.selected,
                "dropped": out.dropped, "not_found": out.not_found,
            }))
            .unwrap_or_default(),
        }),
        Err(e) => Ok(Outcome {
            ok: false,
            output: format!("{file}: the sample did not map: {e}"),
        }),
    }
}

/// `mallgate connector push ...`.
pub async fn push(args: &[String]) -> Result<Outcome, GatewayError> {
    let (mut file, mut admin, mut token, mut if_match) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| fail(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--admin" => admin = Some(value()?),
            "--token" => token = Some(value()?),
            "--if-match" => if_match = Some(value()?),
            other if file.is_none() && !other.starts_with("--") => file = Some(other.to_owned()),
            other => return Err(fail(format!("unknown argument `{other}`"))),
        }
    }
    let file = file.ok_or_else(|| fail("push needs a connector FILE"))?;
    let admin = admin.ok_or_else(|| fail("push needs --admin URL"))?;
    let token = token.ok_or_else(|| fail("push needs --token T (or env:VAR, file:PATH)"))?;
    let token = if token.starts_with("env:") || token.starts_with("file:") {
        crate::server::resolve_reference(&token).map_err(fail)?
    } else {
        token
    };
    let text = read(Path::new(&file))?;
    let id = ConnectorSpec::load(&text, Format::sniff(&text), &Owner::Operator)
        .map(|s| s.id)
        .or_else(|_| {
            // An invalid document still goes to the server, which names its problems.
            mallgate_connectors::source::parse(&text, Format::sniff(&text))
                .ok()
                .and_then(|(v, _)| v.get("id").and_then(Value::as_str).map(str::to_owned))
                .ok_or_else(|| fail(format!("{file} has no `id`")))
        })?;
    let base = admin.trim_end_matches('/');
    let url = format!("{base}/admin/v1/connectors/{id}");
    let client = reqwest::Client::new();
    let if_match = match if_match {
        Some(r) => Some(r),
        None => {
            let current = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| fail(format!("cannot reach {base}: {}", e.without_url())))?;
            current
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        }
    };
    let mut put = client.put(&url).bearer_auth(&token).body(text);
    if let Some(r) = &if_match {
        put = put.header("if-match", r);
    }
    let reply = put
        .send()
        .await
        .map_err(|e| fail(format!("cannot reach {base}: {}", e.without_url())))?;
    let ok = reply.status().is_success();
    let body = reply.text().await.unwrap_or_default();
    let pretty = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(body);
    Ok(Outcome { ok, output: pretty })
}
