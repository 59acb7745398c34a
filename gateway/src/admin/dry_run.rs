//! Dry-runs: a candidate and the active version map the same sample reply in the sandbox
//! child, and the answer says how their records differ.

use std::collections::BTreeMap;

use bytes::Bytes;
use mallgate_connectors::mapping::{DryRunOutput, DryRunRequest};
use mallgate_connectors::{Capability, ConnectorSpec, Format, Owner};
use serde_json::{Value, json};

use super::auth::Role;
use super::change::Event;
use super::{Admin, rejected};
use crate::api::Response;
use crate::problem::ApiError;

impl Admin {
    /// `POST .../dry-run` `{connector, capability, sample, query?}`: compiles the candidate
    /// and maps the sample reply in the sandbox child (a hostile program kills only the
    /// child), and does the same with the active version for the difference.
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
        let input: Value =
            serde_json::from_slice(body).map_err(|e| bad("", format!("not JSON: {e}")))?;
        let text = input["connector"]
            .as_str()
            .ok_or_else(|| bad("/connector", "the candidate document, as text".into()))?
            .to_owned();
        let capability: Capability = serde_json::from_value(input["capability"].clone())
            .map_err(|_| bad("/capability", "a capability such as catalog.search".into()))?;
        let sample = input["sample"]
            .as_str()
            .ok_or_else(|| bad("/sample", "a sample reply of the partner, as text".into()))?
            .to_owned();
        let query = input.get("query").cloned().unwrap_or_else(|| json!({}));
        // Rights first: the candidate's partner must be the token's.
        let owner = role.owner();
        let mut partner = match role {
            Role::Partner(p) => p.clone(),
            Role::Operator => self.owner_of(id).unwrap_or_default(),
        };
        if let Ok(spec) = ConnectorSpec::load(&text, Format::sniff(&text), &Owner::Operator) {
            partner.clone_from(&spec.partner);
            if spec.id != id {
                return Err(bad(
                    "/connector",
                    format!("the document's id `{}` is not `{id}`", spec.id),
                ));
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
        self.check_owner(role, id)?;
        // Provenance as the records would carry it: the candidate as the next version.
        let serving = self.served_version(id);
        // One fetch time for both runs: mappings copy it into records (`as_of` fields).
        let fetched_at = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default();
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
        let candidate = request(text, owner, serving.unwrap_or(0) + 1);
        let active = self
            .active_document(id)
            .map(|(t, o)| request(t, o, serving.unwrap_or(1)));
        let sandbox = self.sandbox.clone();
        let sample_bytes = sample.into_bytes();
        let (new, old) = tokio::task::spawn_blocking(move || {
            let new = sandbox.dry_run(&candidate, &sample_bytes);
            let old = active.map(|a| sandbox.dry_run(&a, &sample_bytes));
            (new, old)
        })
        .await
        .map_err(|e| ApiError::Rejected {
            detail: format!("the dry-run task failed: {e}"),
            problems: Vec::new(),
        })?;
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
        self.note(&Event::new(role, "connector.dry_run", id), "ok");
        Ok(Response::json_value(
            200,
            &json!({"id": id, "capability": capability, "not_found": new.not_found,
                    "selected": new.selected, "records": new.records,
                    "warnings": new.dropped, "difference": diff}),
        ))
    }
}

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
fn without_provenance(value: &Value) -> Value {
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
fn diff_pointers(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
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
