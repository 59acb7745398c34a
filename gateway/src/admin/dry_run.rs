//! Dry-runs: a candidate and the active version map the same partner reply in the sandbox
//! child, and the answer says how their records differ. The reply is a `sample` the
//! caller sends, or (`live: true`) the partner's live answer to `query`, fetched once
//! through the partner's own stack with the candidate's request and mapped by both.

use std::collections::BTreeMap;

use bytes::Bytes;
use mallgate_connectors::mapping::{DryRunOutput, DryRunRequest};
use mallgate_connectors::runtime::Fetched;
use mallgate_connectors::{Capability, ConnectorSpec, Format, Owner};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Role;
use super::change::Event;
use super::partners::parse_body;
use super::{Admin, rejected};
use crate::api::Response;
use crate::problem::ApiError;

/// How long a live dry-run waits for the partner.
const LIVE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The body of `POST /admin/v1/connectors/{id}/dry-run`; an unknown field is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunBody {
    /// The candidate document, as text.
    connector: String,
    capability: Capability,
    /// A partner reply to map (not with `live`).
    #[serde(default)]
    sample: Option<String>,
    /// The normalized query, as the unified API would pass it (`{"q": "tv"}`).
    #[serde(default)]
    query: Option<Value>,
    /// Ask the partner's live API instead of mapping a sample.
    #[serde(default)]
    live: bool,
}

impl Admin {
    /// `POST .../dry-run` `{connector, capability, sample | live, query?}`: compiles the
    /// candidate and maps the reply in the sandbox child (a hostile program kills only
    /// the child), and does the same with the active version for the difference.
    pub(super) async fn dry_run(
        &self,
        role: &Role,
        id: &str,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let bad = |pointer: &str, detail: String| ApiError::BadBody {
            pointer: pointer.into(),
            detail,
        };
        let input: DryRunBody = parse_body(body)?;
        let query = input.query.clone().unwrap_or_else(|| json!({}));
        if !query.is_object() {
            return Err(bad("/query", "the normalized query, a JSON object".into()));
        }
        let text = input.connector.clone();
        let partner = self.dry_run_partner(role, id, &text)?;
        let owner = role.owner();
        self.check_owner(role, id)?;
        // Provenance as the records would carry it: the candidate as the next version.
        let serving = self.served_version(id);
        let next = serving.unwrap_or(0) + 1;
        let (sample, live) = self
            .dry_run_reply(role, id, &input, &owner, next, &query)
            .await?;
        // One fetch time for both runs: mappings copy it into records (`as_of` fields).
        let fetched_at = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let capability = input.capability;
        let request = |connector: String, owner: Owner, version: u32| DryRunRequest {
            format: Format::sniff(&connector),
            connector,
            owner,
            capability,
            provenance: json!({"partner_id": partner, "connector_id": id, "connector_version": version,
                               "fetched_at": fetched_at}),
            query: query.clone(),
            locations: json!({}),
        };
        let candidate = request(text, owner, next);
        let active = self
            .active_document(id)
            .map(|(t, o)| request(t, o, serving.unwrap_or(1)));
        let mut answer = json!({"id": id, "capability": capability});
        if let Some(fetched) = &live {
            answer["live"] = json!({"requests": [fetched], "statuses": [fetched.status]});
            if !(200..300).contains(&fetched.status) {
                // Nothing to map: the partner's answer is the result.
                answer["records"] = json!([]);
                answer["warnings"] =
                    json!([format!("the partner answered HTTP {}", fetched.status)]);
                self.note(
                    &Event::new(role, "connector.dry_run", id).detail("live"),
                    "ok",
                );
                return Ok(Response::json_value(200, &answer));
            }
        }
        let (new, old) = self.map_both(candidate, active, sample).await?;
        let new = match new {
            Ok(out) => out,
            Err(e) => {
                let event = Event::new(role, "connector.dry_run", id).detail(e.to_string());
                self.note(&event, "rejected");
                return Err(rejected(&e));
            }
        };
        let diff = match old {
            Some(Ok(old)) => difference(&new, &old),
            Some(Err(e)) => json!({"active_failed": e.to_string()}),
            None => json!({"active": null}),
        };
        // A dry-run changes nothing: its audit line is a record, not a condition.
        let event = Event::new(role, "connector.dry_run", id);
        self.note(
            &if live.is_some() {
                event.detail("live")
            } else {
                event
            },
            "ok",
        );
        for (k, v) in [
            ("not_found", json!(new.not_found)),
            ("selected", json!(new.selected)),
            ("records", json!(new.records)),
            ("warnings", json!(new.dropped)),
            ("difference", diff),
        ] {
            answer[k] = v;
        }
        Ok(Response::json_value(200, &answer))
    }

    /// The reply the dry-run maps: the sample given, or the partner's live one.
    async fn dry_run_reply(
        &self,
        role: &Role,
        id: &str,
        input: &DryRunBody,
        owner: &Owner,
        next: u32,
        query: &Value,
    ) -> Result<(Vec<u8>, Option<Fetched>), ApiError> {
        let bad = |pointer: &str, detail: String| ApiError::BadBody {
            pointer: pointer.into(),
            detail,
        };
        Ok(match (input.live, &input.sample) {
            (true, Some(_)) => {
                return Err(bad(
                    "/sample",
                    "a live dry-run asks the partner: give `sample` or `live`, not both".into(),
                ));
            }
            (false, None) => {
                return Err(bad(
                    "/sample",
                    "a sample reply of the partner, as text (or `live: true` and a `query`)".into(),
                ));
            }
            (false, Some(sample)) => (sample.clone().into_bytes(), None),
            (true, None) => {
                if input.query.is_none() {
                    return Err(bad(
                        "/query",
                        "a live dry-run needs the query to ask the partner".into(),
                    ));
                }
                let fetched = self
                    .fetch_live(&input.connector, owner, next, input.capability, query)
                    .await
                    .map_err(|e| {
                        let event =
                            Event::new(role, "connector.dry_run", id).detail(format!("live: {e}"));
                        self.note(&event, "rejected");
                        rejected(&e)
                    })?;
                (fetched.body.clone(), Some(fetched))
            }
        })
    }

    /// The partner the candidate belongs to, checked against the token: the document's own
    /// (when it loads), else the connector's.
    fn dry_run_partner(&self, role: &Role, id: &str, text: &str) -> Result<String, ApiError> {
        let mut partner = match role {
            Role::Partner(p) => p.clone(),
            Role::Operator => self.owner_of(id).unwrap_or_default(),
        };
        if let Ok(spec) = ConnectorSpec::load(text, Format::sniff(text), &Owner::Operator) {
            partner.clone_from(&spec.partner);
            if spec.id != id {
                return Err(ApiError::BadBody {
                    pointer: "/connector".into(),
                    detail: format!("the document's id `{}` is not `{id}`", spec.id),
                });
            }
            if !role.may_act_for(&spec.partner) {
                return Err(ApiError::Forbidden {
                    detail: format!(
                        "connector `{id}` would belong to partner `{}`",
                        spec.partner
                    ),
                });
            }
        }
        Ok(partner)
    }

    /// The candidate's and the active version's mapping of `sample`, in the sandbox child.
    async fn map_both(
        &self,
        candidate: DryRunRequest,
        active: Option<DryRunRequest>,
        sample: Vec<u8>,
    ) -> Result<MappedBoth, ApiError> {
        let sandbox = self.sandbox.clone();
        tokio::task::spawn_blocking(move || {
            let new = sandbox.dry_run(&candidate, &sample);
            let old = active.map(|a| sandbox.dry_run(&a, &sample));
            (new, old)
        })
        .await
        .map_err(|e| ApiError::Rejected {
            detail: format!("the dry-run task failed: {e}"),
            problems: Vec::new(),
        })
    }

    /// The partner's live reply to the candidate's request for `query`, through the
    /// partner's own stack. A candidate that does not build, or a call that fails, is the
    /// dry-run's answer, never a change to what serves.
    async fn fetch_live(
        &self,
        text: &str,
        owner: &Owner,
        version: u32,
        capability: Capability,
        query: &Value,
    ) -> Result<Fetched, mallgate_connectors::ConnectorError> {
        let connector = self.api.registry.candidate(text, owner, version)?;
        let request_id = format!("dry-run-{:x}", crate::cursor::random_u64() & 0xffff_ffff);
        let deadline = tokio::time::Instant::now() + LIVE_DEADLINE;
        connector
            .fetch(capability, query, &request_id, deadline)
            .await
    }
}

type Mapped = Result<DryRunOutput, mallgate_connectors::ConnectorError>;
type MappedBoth = (Mapped, Option<Mapped>);

/// A record's identity for the dry-run difference: its first id-like field, else itself.
fn record_key(record: &Value) -> String {
    for field in [
        "product_id",
        "location_id",
        "tracking_number",
        "service_code",
        "sku",
        "id",
    ] {
        if let Some(v) = record.get(field).and_then(Value::as_str) {
            return format!("{field}:{v}");
        }
    }
    record.to_string()
}

/// A record without its provenance (which names the version and the fetch time, and so
/// always differs between two versions).
pub fn without_provenance(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "provenance")
                .map(|(k, v)| (k.clone(), without_provenance(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_provenance).collect()),
        other => other.clone(),
    }
}

/// JSON pointers where `a` and `b` differ (at most 8).
pub fn diff_pointers(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
    if out.len() >= 8 || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let next = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff_pointers(p, q, next, out),
                    _ => out.push(next),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_pointers(p, q, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(if at.is_empty() { "/".into() } else { at }),
    }
}

/// What the candidate returns for the sample against what the active version returns:
/// records by key that only one has, and those both have but differently.
fn difference(candidate: &DryRunOutput, active: &DryRunOutput) -> Value {
    let index = |out: &DryRunOutput| -> BTreeMap<String, Value> {
        out.records
            .iter()
            .map(|r| (record_key(r), without_provenance(r)))
            .collect()
    };
    let (new, old) = (index(candidate), index(active));
    let only_candidate: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
    let only_active: Vec<&String> = old.keys().filter(|k| !new.contains_key(*k)).collect();
    let changed: Vec<Value> = new
        .iter()
        .filter_map(|(k, v)| {
            let o = old.get(k)?;
            let mut fields = Vec::new();
            diff_pointers(v, o, String::new(), &mut fields);
            (!fields.is_empty()).then(|| json!({"record": k, "fields": fields}))
        })
        .collect();
    let same = new.len() - only_candidate.len() - changed.len();
    json!({
        "same": same,
        "changed": changed,
        "only_candidate": only_candidate,
        "only_active": only_active,
        "dropped": {"candidate": candidate.dropped.len(), "active": active.dropped.len()},
    })
}
