//! One partner reply -> unified records: decode the bytes, apply the `error` and
//! `not_found` rules, select the records, map each record in the sandbox, validate it.
//!
//! A record whose mapping errors or whose result fails its unified schema is dropped alone,
//! with a page warning naming it (its position, and the partner's own reference when the
//! mapping got that far) and the reason. A reply the selector cannot read is
//! [`ConnectorError::MalformedReply`]; a program that breaks its budget is
//! [`ConnectorError::MappingOverrun`]. Nothing here can panic on partner data.

use std::time::Instant;

use jaq_json::Val;
use mallgate_schemas::{UnifiedSchema, Warning, validate_record};
use serde_json::Value;

use super::{Budget, Program, RunError, to_json, to_val};
use crate::decode::{Limits, decode};
use crate::error::ConnectorError;
use crate::spec::{Capability, CapabilitySpec, ConnectorSpec, Decode, Pagination, QueryValue};
use std::collections::BTreeMap;

/// Records the selector may yield from one reply.
pub const MAX_RECORDS_PER_REPLY: usize = 100_000;
/// Bytes one mapped record may take once converted to JSON.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The values every program of a capability reads as `$provenance`, `$query`, `$locations`.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    /// `partner_id`, `connector_id`, `connector_version`, `fetched_at`.
    pub provenance: Value,
    /// The capability's query fields, as the gateway normalized them.
    pub query: Value,
    /// The partner's locations by id (from `locations.list`), or `{}`.
    pub locations: Value,
}

impl Globals {
    fn to_vals(&self) -> [Val; 3] {
        [
            to_val(&self.provenance),
            to_val(&self.query),
            to_val(&self.locations),
        ]
    }
}

/// What one reply gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappedPage {
    /// The partner said, in a successful reply, that there is no such record.
    pub not_found: bool,
    /// Valid unified records; each carries its own warnings in `provenance.warnings`.
    pub records: Vec<Value>,
    /// Records the selector yielded.
    pub selected: usize,
    /// One `record_dropped` warning per record (or mapped output) that was dropped.
    pub dropped: Vec<Warning>,
    /// What the pagination's jq found in this reply (the next cursor, URL or token, the
    /// total pages or records), or `None` when it found nothing (null, false, no output).
    pub paging: Option<Value>,
}

/// The compiled programs of one capability: shareable across threads, compiled once per
/// connector version.
#[derive(Debug)]
pub struct CapabilityMapping {
    capability: Capability,
    decode: Decode,
    records: Program,
    map: Program,
    not_found: Option<Program>,
    error: Option<Program>,
    paging: Option<Program>,
}

/// Which program of a capability a compile error is about, as a pointer suffix.
fn compile_at(field: &'static str, code: &str) -> Result<Program, (&'static str, String)> {
    Program::compile(code).map_err(|e| (field, program_reason(e)))
}

impl CapabilityMapping {
    /// Compiles a capability's programs; on failure every problem, each naming its field
    /// (`records`, `map`, `not_found`, `error`) and why.
    pub fn compile(
        capability: Capability,
        spec: &CapabilitySpec,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let mut compile = |field: &'static str, code: Option<&str>| match code {
            None => None,
            Some(code) => compile_at(field, code)
                .map_err(|problem| problems.push(problem))
                .ok(),
        };
        let records = compile("records", Some(&spec.records));
        let map = compile("map", Some(&spec.map));
        let not_found = compile("not_found", spec.not_found.as_deref());
        let error = compile("error", spec.error.as_deref());
        let paging = spec
            .pagination
            .as_ref()
            .and_then(Pagination::program)
            .and_then(|(field, code)| compile(field, Some(code)));
        match (records, map) {
            (Some(records), Some(map)) if problems.is_empty() => Ok(Self {
                capability,
                decode: spec.decode,
                records,
                map,
                not_found,
                error,
                paging,
            }),
            _ => Err(problems),
        }
    }

    pub fn capability(&self) -> Capability {
        self.capability
    }

    /// Decodes a reply body in the capability's format, then maps it.
    pub fn map_reply(
        &self,
        body: &[u8],
        limits: &Limits,
        globals: &Globals,
        deadline: Instant,
    ) -> Result<MappedPage, ConnectorError> {
        let reply = decode(self.decode, body, limits)?;
        self.map_value(reply, globals, deadline)
    }

    /// Maps an already decoded reply.
    pub fn map_value(
        &self,
        reply: Val,
        globals: &Globals,
        deadline: Instant,
    ) -> Result<MappedPage, ConnectorError> {
        let vals = globals.to_vals();
        let budget = Budget::until(deadline);
        let overrun = |reason: String| ConnectorError::MappingOverrun { reason };

        if let Some(rule) = &self.error {
            let verdict = run_rule(rule, &reply, &vals, &budget, "error")?;
            match verdict {
                Val::Null | Val::Bool(false) => {}
                Val::Bool(true) => {
                    return Err(ConnectorError::PartnerReported {
                        message: "the reply matched the connector's error rule".into(),
                    });
                }
                Val::TStr(message) => {
                    return Err(ConnectorError::PartnerReported {
                        message: String::from_utf8_lossy(&message)
                            .chars()
                            .take(500)
                            .collect(),
                    });
                }
                other => {
                    return Err(ConnectorError::PartnerReported {
                        message: other.to_string().chars().take(500).collect(),
                    });
                }
            }
        }
        if let Some(rule) = &self.not_found
            && matches!(
                run_rule(rule, &reply, &vals, &budget, "not_found")?,
                Val::Bool(true)
            )
        {
            return Ok(MappedPage {
                not_found: true,
                ..MappedPage::default()
            });
        }

        let paging = match &self.paging {
            None => None,
            Some(program) => match run_rule(program, &reply, &vals, &budget, "pagination")? {
                Val::Null | Val::Bool(false) => None,
                found => {
                    let mut cap = 64 * 1024;
                    Some(
                        to_json(&found, &mut cap)
                            .map_err(|reason| ConnectorError::MalformedReply { reason })?,
                    )
                }
            },
        };
        let selector_budget = Budget {
            max_outputs: MAX_RECORDS_PER_REPLY,
            ..budget
        };
        let (selected, _) = self
            .records
            .run(reply, vals.clone(), &selector_budget)
            .map_err(|e| match e {
                RunError::Failed(reason) => ConnectorError::MalformedReply {
                    reason: format!("the records selector failed: {reason}"),
                },
                RunError::Overrun(reason) => overrun(reason),
            })?;

        let schema = self.capability.record_schema();
        let mut page = MappedPage {
            selected: selected.len(),
            paging,
            ..MappedPage::default()
        };
        for (index, record) in selected.into_iter().enumerate() {
            let source_ref = native_ref(&record);
            let name = |source_ref: Option<&str>| match source_ref {
                Some(r) => format!("record {index} (`{r}`)"),
                None => format!("record {index}"),
            };
            let (outputs, warnings) = match self.map.run(record, vals.clone(), &budget) {
                Ok(done) => done,
                Err(RunError::Overrun(reason)) => return Err(overrun(reason)),
                Err(RunError::Failed(reason)) => {
                    page.dropped.push(dropped(
                        &name(source_ref.as_deref()),
                        &format!("the map failed: {reason}"),
                    ));
                    continue;
                }
            };
            for output in outputs {
                match finish(&output, &warnings, schema) {
                    Ok(value) => page.records.push(value),
                    Err((reason, mapped_ref)) => page.dropped.push(dropped(
                        &name(mapped_ref.as_deref().or(source_ref.as_deref())),
                        &reason,
                    )),
                }
            }
        }
        Ok(page)
    }
}

fn run_rule(
    rule: &Program,
    reply: &Val,
    vals: &[Val; 3],
    budget: &Budget,
    which: &str,
) -> Result<Val, ConnectorError> {
    match rule.run(reply.clone(), vals.clone(), budget) {
        Ok((outputs, _)) => Ok(outputs.into_iter().next().unwrap_or(Val::Null)),
        Err(RunError::Overrun(reason)) => Err(ConnectorError::MappingOverrun { reason }),
        Err(RunError::Failed(reason)) => Err(ConnectorError::MalformedReply {
            reason: format!("the `{which}` rule failed: {reason}"),
        }),
    }
}

fn dropped(record: &str, reason: &str) -> Warning {
    Warning {
        code: "record_dropped".to_owned(),
        message: format!("{record} dropped: {reason}"),
        field: None,
    }
}

/// A partner's own id for a record, to name it in warnings: the first of a few usual keys.
fn native_ref(record: &Val) -> Option<String> {
    let Val::Obj(map) = record else {
        return None;
    };
    ["id", "sku", "itemId", "productId", "trackingNumber", "code"]
        .iter()
        .find_map(|key| match map.get(&crate::decode::text(*key))? {
            Val::TStr(b) | Val::BStr(b) => {
                Some(String::from_utf8_lossy(b).chars().take(80).collect())
            }
            Val::Num(n) => Some(n.to_string()),
            _ => None,
        })
}

/// A mapped output -> a valid record: JSON, nulls dropped, warnings attached, validated.
/// Errors give the reason and the record's `source_ref` when it has one.
fn finish(
    output: &Val,
    warnings: &[Warning],
    schema: UnifiedSchema,
) -> Result<Value, (String, Option<String>)> {
    let mut cap = MAX_RECORD_BYTES;
    let mut value = to_json(output, &mut cap).map_err(|e| (e, None))?;
    strip_nulls(&mut value);
    let source_ref = value
        .pointer("/provenance/source_ref")
        .and_then(Value::as_str)
        .map(|s| s.chars().take(80).collect::<String>());
    let Value::Object(record) = &mut value else {
        return Err((
            format!("the map produced {}, not an object", kind(&value)),
            None,
        ));
    };
    if !warnings.is_empty()
        && let Some(Value::Object(provenance)) = record.get_mut("provenance")
    {
        let list = provenance
            .entry("warnings")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.extend(warnings.iter().filter_map(|w| serde_json::to_value(w).ok()));
        }
    }
    validate_record(schema, &value).map_err(|e| (e.to_string(), source_ref.clone()))?;
    Ok(value)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Removes object members whose value is null, at every depth: in the unified model a null
/// member means "absent" (no schema field is nullable), so `as_of: (.x | instant(null))`
/// just works.
pub fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Every jq program of a connector version, compiled once: per capability, the request's jq
/// query values and body, and the reply mapping.
#[derive(Debug)]
pub struct ConnectorPrograms {
    pub capabilities: BTreeMap<Capability, CompiledCapability>,
}

/// One capability's compiled programs.
#[derive(Debug)]
pub struct CompiledCapability {
    /// Query parameters computed by jq (name -> program run on `$query`).
    pub query: BTreeMap<String, Program>,
    /// The request body program, if the request has one.
    pub body: Option<Program>,
    pub mapping: std::sync::Arc<CapabilityMapping>,
}

impl ConnectorPrograms {
    /// Compiles every program of `spec`; on failure, every problem as (JSON pointer, reason).
    pub fn compile(spec: &ConnectorSpec) -> Result<Self, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut capabilities = BTreeMap::new();
        for (capability, cap) in &spec.capabilities {
            let at = format!(
                "/capabilities/{}",
                mallgate_schemas::escape_token(capability.name())
            );
            let mut query = BTreeMap::new();
            for (name, value) in &cap.request.query {
                if let QueryValue::Jq(jq) = value {
                    match Program::compile(&jq.jq) {
                        Ok(p) => {
                            query.insert(name.clone(), p);
                        }
                        Err(e) => problems.push((
                            format!(
                                "{at}/request/query/{}/jq",
                                mallgate_schemas::escape_token(name)
                            ),
                            program_reason(e),
                        )),
                    }
                }
            }
            let body = match cap.request.body.as_ref().map(|b| Program::compile(&b.jq)) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    problems.push((format!("{at}/request/body/jq"), program_reason(e)));
                    None
                }
            };
            match CapabilityMapping::compile(*capability, cap) {
                Ok(mapping) => {
                    capabilities.insert(
                        *capability,
                        CompiledCapability {
                            query,
                            body,
                            mapping: std::sync::Arc::new(mapping),
                        },
                    );
                }
                Err(failed) => problems.extend(
                    failed
                        .into_iter()
                        .map(|(field, reason)| (format!("{at}/{field}"), reason)),
                ),
            }
        }
        if problems.is_empty() {
            Ok(Self { capabilities })
        } else {
            Err(problems)
        }
    }
}

fn program_reason(e: ConnectorError) -> String {
    match e {
        ConnectorError::InvalidProgram { reason } => reason,
        other => other.to_string(),
    }
}
