//! Connector tests a partner keeps in its own CI (compare Apollo's `rover connector test`):
//! `mallgate connector test FILE --cases DIR` replays each case's recorded partner replies
//! through the real call path — the request template, auth, status rules, pagination,
//! the jq mapping with the prelude, schema validation — with the replies served from the
//! case instead of the network, and compares what comes out with what the case expects.
//! `mallgate connector record` writes such a case from the partner's live API.
//!
//! A case file (YAML or JSON):
//!
//! ```yaml
//! name: search for a tv            # optional; the file name otherwise
//! capability: catalog.search
//! query: {q: tv}
//! replies:                         # the partner's replies, one per page, in order
//!   - status: 200
//!     headers: {content-type: application/json}
//!     body: '{"products": [...]}'
//! expect:
//!   count: 3                       # any of: count, records, not_found, error, assert
//!   records: [...]                 # the unified records, provenance aside
//!   assert:
//!     - {pointer: /0/title, equals: Acme TV 55}
//!     - {pointer: /0/variants/0/offers/0/price, exists: true}
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mallgate_connectors::mapping::MappingPool;
use mallgate_connectors::runtime::guard::AddressGuard;
use mallgate_connectors::runtime::http::Reply;
use mallgate_connectors::runtime::secrets::{Secret, SecretStore};
use mallgate_connectors::runtime::{Connector, PartnerResources, RuntimeConfig, Transport};
use mallgate_connectors::{Capability, ConnectorError, ConnectorSpec, Format, Owner};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Outcome, fail, read};
use crate::GatewayError;

/// One recorded partner reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedReply {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

fn ok_status() -> u16 {
    200
}

/// One assertion at a JSON pointer into the records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointerAssertion {
    pub pointer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

/// What a case expects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// The records exactly, each without its `provenance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<bool>,
    /// The call fails with this error code (`partner_status`, `mapping`, `auth`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assert: Vec<PointerAssertion>,
}

/// One connector test case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub capability: Capability,
    #[serde(default = "empty_query")]
    pub query: Value,
    pub replies: Vec<RecordedReply>,
    #[serde(default)]
    pub expect: Expect,
}

fn empty_query() -> Value {
    json!({})
}

/// `mallgate connector test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// The connector document.
    pub file: PathBuf,
    /// The directory of case files (`*.yaml`, `*.yml`, `*.json`).
    #[arg(long)]
    pub cases: PathBuf,
    /// Who submits the connector: `operator` or `partner:ID`.
    #[arg(long, default_value = "operator", value_parser = super::owner)]
    pub owner: Owner,
}

/// Addresses are never resolved: every reply comes from the case.
#[derive(Debug)]
struct Replayed;

impl AddressGuard for Replayed {
    fn check(&self, _: &url::Url) -> Result<(), String> {
        Ok(())
    }
    fn allows_ip(&self, _: IpAddr) -> bool {
        false
    }
}

/// Every secret the connector names resolves to a placeholder: cases never hold secrets.
#[derive(Debug)]
struct Placeholders;

impl SecretStore for Placeholders {
    fn get(&self, _: &str, name: &str) -> Option<Secret> {
        Some(Secret::new(format!("case-secret-{name}")))
    }
}

/// Serves a case's replies in order; an OAuth2 token request gets a placeholder token.
#[derive(Debug)]
struct CaseTransport {
    replies: Vec<RecordedReply>,
    token_url: Option<String>,
    sent: Mutex<usize>,
}

impl Transport for CaseTransport {
    fn send(
        &self,
        request: reqwest::Request,
        _max_bytes: usize,
    ) -> futures_util::future::BoxFuture<'static, Result<Reply, ConnectorError>> {
        let url = request.url().to_string();
        let is_token = self
            .token_url
            .as_deref()
            .is_some_and(|t| url.split('?').next() == Some(t));
        let reply = if is_token {
            Ok(RecordedReply {
                status: 200,
                headers: [("content-type".into(), "application/json".into())].into(),
                body: r#"{"access_token":"case-token","token_type":"Bearer","expires_in":3600}"#
                    .into(),
            })
        } else {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            *sent += 1;
            self.replies
                .get(*sent - 1)
                .cloned()
                .ok_or_else(|| ConnectorError::Request {
                    reason: format!(
                        "the connector sent request {} and the case recorded {} repl{}",
                        *sent,
                        self.replies.len(),
                        if self.replies.len() == 1 { "y" } else { "ies" }
                    ),
                })
        };
        Box::pin(async move { to_reply(reply?) })
    }
}

fn to_reply(recorded: RecordedReply) -> Result<Reply, ConnectorError> {
    let bad = |reason: String| ConnectorError::Request { reason };
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &recorded.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| bad(format!("header `{k}`: {e}")))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|e| bad(format!("header `{k}`: {e}")))?;
        headers.insert(name, value);
    }
    Ok(Reply {
        status: reqwest::StatusCode::from_u16(recorded.status)
            .map_err(|e| bad(format!("status {}: {e}", recorded.status)))?,
        headers,
        body: recorded.body.into_bytes(),
    })
}

/// Runs one case's replies through the connector: its records, or its error.
pub(super) async fn replay(
    text: &str,
    owner: &Owner,
    case: &Case,
    pool: &Arc<MappingPool>,
) -> Result<Result<(Vec<Value>, bool), ConnectorError>, GatewayError> {
    let (mut spec, programs) = ConnectorSpec::load_compiled(text, Format::sniff(text), owner)
        .map_err(|e| fail(format!("the connector does not load: {e}")))?;
    if let Some(cap) = spec.capabilities.get_mut(&case.capability)
        && let Some(p) = cap.pagination.as_mut()
    {
        p.set_max_pages(u32::try_from(case.replies.len().max(1)).unwrap_or(u32::MAX));
    }
    let token_url = match &spec.auth {
        mallgate_connectors::spec::Auth::Oauth2ClientCredentials { token_url, .. } => {
            Some(token_url.clone())
        }
        _ => None,
    };
    let transport = Arc::new(CaseTransport {
        replies: case.replies.clone(),
        token_url,
        sent: Mutex::new(0),
    });
    let runtime = RuntimeConfig {
        transport: Some(transport),
        ..RuntimeConfig::default()
    };
    let resources = PartnerResources::new(&spec.partner, Arc::new(Replayed), runtime)
        .map_err(|e| fail(e.to_string()))?;
    let connector = Connector::new(
        Arc::new(spec),
        Arc::new(programs),
        1,
        owner.clone(),
        resources,
        Arc::new(Placeholders),
        Arc::clone(pool),
    )
    .map_err(|e| fail(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    Ok(connector
        .call(case.capability, &case.query, "case", deadline)
        .await
        .map(|out| {
            let records = out
                .records
                .iter()
                .map(crate::admin::without_provenance)
                .collect();
            (records, out.not_found)
        }))
}

/// What failed of `expect` for the records (or error) a case produced.
fn judge(expect: &Expect, got: &Result<(Vec<Value>, bool), ConnectorError>) -> Vec<String> {
    let mut failed = Vec::new();
    let (records, not_found) = match (got, &expect.error) {
        (Err(e), Some(code)) if e.code() == code => return failed,
        (Err(e), _) => return vec![format!("the call failed: {} ({e})", e.code())],
        (Ok(_), Some(code)) => {
            return vec![format!("expected the error `{code}`, the call succeeded")];
        }
        (Ok((r, n)), None) => (r, *n),
    };
    if let Some(n) = expect.count
        && records.len() != n
    {
        failed.push(format!("expected {n} records, got {}", records.len()));
    }
    if let Some(want) = expect.not_found
        && want != not_found
    {
        failed.push(format!("expected not_found {want}, got {not_found}"));
    }
    if let Some(want) = &expect.records {
        let got = Value::Array(records.clone());
        let want = Value::Array(want.iter().map(crate::admin::without_provenance).collect());
        let mut at = Vec::new();
        crate::admin::diff_pointers(&want, &got, String::new(), &mut at);
        if !at.is_empty() {
            failed.push(format!("records differ at {}", at.join(", ")));
        }
    }
    let all = Value::Array(records.clone());
    for a in &expect.assert {
        let found = all.pointer(&a.pointer);
        if let Some(want) = &a.equals
            && found != Some(want)
        {
            failed.push(format!(
                "{}: expected {want}, got {}",
                a.pointer,
                found.map_or_else(|| "nothing".to_owned(), Value::to_string)
            ));
        }
        if let Some(want) = a.exists
            && found.is_some() != want
        {
            failed.push(format!(
                "{}: expected {}",
                a.pointer,
                if want { "a value" } else { "nothing" }
            ));
        }
    }
    failed
}

/// The case files of `dir`, in name order.
fn case_files(dir: &Path) -> Result<Vec<PathBuf>, GatewayError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| GatewayError::Io {
            path: dir.to_owned(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses a case file (YAML or JSON), refusing unknown fields.
pub(super) fn load_case(path: &Path) -> Result<Case, String> {
    let text = read(path).map_err(|e| e.to_string())?;
    let value = mallgate_connectors::source::parse(&text, Format::sniff(&text))
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|e| format!("at `{}`: {}", e.path(), e.inner()))
}

/// `mallgate connector test FILE --cases DIR`: a table of cases, ok when all pass.
pub async fn test(args: &TestArgs) -> Result<Outcome, GatewayError> {
    let text = read(&args.file)?;
    let files = case_files(&args.cases)?;
    if files.is_empty() {
        return Err(fail(format!(
            "{} holds no case files",
            args.cases.display()
        )));
    }
    let pool = Arc::new(MappingPool::new(1, 64).map_err(|e| fail(format!("mapping pool: {e}")))?);
    let mut rows = Vec::new();
    let mut passed = 0;
    for path in &files {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (name, capability, failures) = match load_case(path) {
            Err(reason) => (
                file,
                "-".to_owned(),
                vec![format!("the case does not read: {reason}")],
            ),
            Ok(case) => {
                let got = replay(&text, &args.owner, &case, &pool).await?;
                let name = case.name.clone().unwrap_or(file);
                (
                    name,
                    case.capability.name().to_owned(),
                    judge(&case.expect, &got),
                )
            }
        };
        if failures.is_empty() {
            passed += 1;
            rows.push(format!("PASS  {capability:<15} {name}"));
        } else {
            rows.push(format!("FAIL  {capability:<15} {name}"));
            rows.extend(failures.iter().map(|f| format!("        {f}")));
        }
    }
    let total = files.len();
    rows.push(format!(
        "{passed} of {total} case{} passed: {}",
        if total == 1 { "" } else { "s" },
        args.file.display()
    ));
    Ok(Outcome {
        ok: passed == total,
        output: rows.join("\n"),
    })
}

/// `mallgate connector record`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// The connector document.
    pub file: PathBuf,
    /// The capability to ask, e.g. `catalog.search`.
    #[arg(long, value_parser = super::capability)]
    pub capability: Capability,
    /// The normalized query, as JSON (`{"q": "tv"}`).
    #[arg(long, default_value = "{}", value_parser = super::json_arg)]
    pub query: Value,
    /// Where to write the case (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// The case's name (default: the capability and query).
    #[arg(long)]
    pub name: Option<String>,
    /// A secret the connector names, `NAME=env:VAR` or `NAME=file:PATH` (repeatable).
    #[arg(long = "secret", value_parser = secret_arg)]
    pub secrets: Vec<(String, String)>,
    /// Lets the connector call loopback addresses (a local simulator); off: public only.
    #[arg(long)]
    pub allow_loopback: bool,
    /// Who submits the connector: `operator` or `partner:ID`.
    #[arg(long, default_value = "operator", value_parser = super::owner)]
    pub owner: Owner,
}

fn secret_arg(text: &str) -> Result<(String, String), String> {
    let (name, reference) = text
        .split_once('=')
        .ok_or("takes NAME=env:VAR or NAME=file:PATH")?;
    let value = crate::server::resolve_reference(reference)?;
    Ok((name.to_owned(), value))
}

/// `mallgate connector record ...`: asks the partner's live API once (the first page,
/// through the partner stack: auth, guard, retries) and writes a case whose expectations
/// are what the connector maps from that reply now.
pub async fn record(args: &RecordArgs) -> Result<Outcome, GatewayError> {
    use mallgate_connectors::runtime::guard::{LoopbackOnly, PublicOnly};
    use mallgate_connectors::runtime::secrets::MemorySecretStore;
    let text = read(&args.file)?;
    let (spec, programs) = ConnectorSpec::load_compiled(&text, Format::sniff(&text), &args.owner)
        .map_err(|e| fail(format!("{}: {e}", args.file.display())))?;
    let guard: Arc<dyn AddressGuard> = if args.allow_loopback {
        Arc::new(LoopbackOnly)
    } else {
        Arc::new(PublicOnly::default())
    };
    let secrets = Arc::new(MemorySecretStore::new());
    for (name, value) in &args.secrets {
        secrets.set(&spec.partner, name, value.clone());
    }
    let pool = Arc::new(MappingPool::new(1, 64).map_err(|e| fail(format!("mapping pool: {e}")))?);
    let resources = PartnerResources::new(&spec.partner, guard, RuntimeConfig::default())
        .map_err(|e| fail(e.to_string()))?;
    let connector = Connector::new(
        Arc::new(spec),
        Arc::new(programs),
        1,
        args.owner.clone(),
        resources,
        secrets,
        Arc::clone(&pool),
    )
    .map_err(|e| fail(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let fetched = connector
        .fetch(args.capability, &args.query, "record", deadline)
        .await
        .map_err(|e| fail(format!("the partner could not be asked: {e}")))?;
    let headers = fetched
        .reply_headers
        .iter()
        .filter(|(k, _)| k == "content-type")
        .cloned()
        .collect();
    let mut body = String::from_utf8(fetched.body.clone())
        .map_err(|_| fail("the reply is not UTF-8 text; a case holds text replies only"))?;
    // A case goes into a repository: a secret the partner echoes (a key in a next-page
    // link, say) is replaced by the placeholder the replay resolves it to.
    for (name, value) in &args.secrets {
        if !value.is_empty() {
            body = body.replace(value.as_str(), &format!("case-secret-{name}"));
        }
    }
    let mut case = Case {
        name: Some(
            args.name
                .clone()
                .unwrap_or_else(|| format!("{} {}", args.capability.name(), args.query)),
        ),
        capability: args.capability,
        query: args.query.clone(),
        replies: vec![RecordedReply {
            status: fetched.status,
            headers,
            body,
        }],
        expect: Expect::default(),
    };
    match replay(&text, &args.owner, &case, &pool).await? {
        Ok((records, not_found)) => {
            case.expect.count = Some(records.len());
            case.expect.not_found = Some(not_found);
            case.expect.records = Some(records);
        }
        Err(e) => case.expect.error = Some(e.code().to_owned()),
    }
    let json = serde_json::to_vec_pretty(&case).map_err(|e| fail(e.to_string()))?;
    crate::store::write_atomic(&args.out, &json)?;
    Ok(Outcome {
        ok: true,
        output: format!(
            "recorded {}: HTTP {}, {} records expected",
            args.out.display(),
            fetched.status,
            case.expect.count.unwrap_or(0)
        ),
    })
}
