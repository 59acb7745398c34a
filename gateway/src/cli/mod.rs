//! The CLI's commands beside `serve` and `demo` (their arguments are `clap` types, parsed
//! in the binary):
//!
//! - `connector check FILE [--owner operator|partner:ID] [--sample FILE --capability C
//!   [--query JSON]]` validates offline (every problem as `FILE:LINE:COLUMN: POINTER:
//!   REASON`) and, with a sample reply, maps it in the sandbox child and prints the
//!   normalized records.
//! - `connector push FILE --admin URL --token T [--if-match REV | --force]` registers the
//!   document through the admin API. Replacing an existing connector takes the revision
//!   it replaces (`--if-match`, as the last push or `GET` printed it) or `--force`
//!   (whatever is active); a document identical to the active one makes no new version.
//!   `T` may be a reference (`env:VAR`, `file:PATH`) so the token stays out of the
//!   process list.
//! - `drill run ...` ([`drill`]): starts a failover drill, follows it, prints the report.
//! - `store migrate --from DIR --to etcd://...` ([`store`]): copies a state directory
//!   into etcd, for a fleet.

pub mod cases;
pub mod drill;
pub mod store;

use std::path::{Path, PathBuf};

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

/// `env:VAR` or `file:PATH` is read; anything else is the token itself.
fn token(text: &str) -> Result<String, GatewayError> {
    if text.starts_with("env:") || text.starts_with("file:") {
        crate::server::resolve_reference(text).map_err(fail)
    } else {
        Ok(text.to_owned())
    }
}

/// `mallgate connector check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The connector document (YAML or JSON).
    pub file: PathBuf,
    /// Who submits it: `operator` or `partner:ID` (what a partner may use is narrower).
    #[arg(long, default_value = "operator", value_parser = owner)]
    pub owner: Owner,
    /// A partner reply to map in the sandbox child.
    #[arg(long, requires = "capability")]
    pub sample: Option<PathBuf>,
    /// The capability the sample answers, e.g. `catalog.search`.
    #[arg(long, value_parser = capability)]
    pub capability: Option<Capability>,
    /// The normalized query, as JSON (`{"q": "speaker"}`).
    #[arg(long, default_value = "{}", value_parser = json_arg)]
    pub query: Value,
}

/// `mallgate connector push`.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// The connector document.
    pub file: PathBuf,
    /// The admin API's base URL, e.g. `http://127.0.0.1:9090`.
    #[arg(long)]
    pub admin: String,
    /// The bearer token, or `env:VAR` / `file:PATH` to keep it out of the process list.
    #[arg(long, allow_hyphen_values = true)]
    pub token: String,
    /// The revision replaced (`"voltmart-v3"`), as the last push or `GET` printed it.
    #[arg(long, allow_hyphen_values = true, conflicts_with = "force")]
    pub if_match: Option<String>,
    /// Replace whatever version is active (`If-Match: *`).
    #[arg(long)]
    pub force: bool,
}

pub(crate) fn capability(text: &str) -> Result<Capability, String> {
    serde_json::from_value(Value::from(text))
        .map_err(|_| format!("`{text}` is not a capability (e.g. catalog.search)"))
}

pub(crate) fn json_arg(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

pub(crate) fn owner(text: &str) -> Result<Owner, String> {
    match text {
        "operator" => Ok(Owner::Operator),
        other => match other.strip_prefix("partner:") {
            Some(id) if !id.is_empty() => Ok(Owner::Partner(id.to_owned())),
            _ => Err(format!("takes operator or partner:ID, not `{other}`")),
        },
    }
}

/// `mallgate connector check ...`.
pub fn check(args: &CheckArgs) -> Result<Outcome, GatewayError> {
    let file = args.file.display().to_string();
    let who = args.owner.clone();
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
    let Some(sample) = &args.sample else {
        return Ok(Outcome {
            ok: true,
            output: summary,
        });
    };
    let capability = args
        .capability
        .ok_or_else(|| fail("--sample needs --capability"))?;
    let payload = std::fs::read(sample).map_err(|source| GatewayError::Io {
        path: sample.clone(),
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
        query: args.query.clone(),
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
pub async fn push(args: &PushArgs) -> Result<Outcome, GatewayError> {
    let file = args.file.display().to_string();
    let token = token(&args.token)?;
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
    let base = args.admin.trim_end_matches('/');
    let url = format!("{base}/admin/v1/connectors/{id}");
    let client = reqwest::Client::new();
    let if_match = match (&args.if_match, args.force) {
        (Some(r), _) => Some(r.clone()),
        (None, true) => Some("*".to_owned()),
        (None, false) => None,
    };
    let mut put = client.put(&url).bearer_auth(&token).body(text);
    if let Some(r) = &if_match {
        put = put.header("if-match", r);
    }
    let reply = put
        .send()
        .await
        .map_err(|e| fail(format!("cannot reach {base}: {}", e.without_url())))?;
    let status = reply.status();
    let body = reply.text().await.unwrap_or_default();
    let mut output = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(body);
    if status == reqwest::StatusCode::PRECONDITION_REQUIRED {
        output.push_str(&format!(
            "\n{file}: connector `{id}` exists: pass --if-match with the revision you replace (GET {url} gives it as ETag), or --force"
        ));
    }
    Ok(Outcome {
        ok: status.is_success(),
        output,
    })
}
