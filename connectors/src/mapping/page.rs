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
use mallgate_schemas::{Record, Warning};
use serde_json::Value;

use super::finish::{
    Identity, RawPage, RawRecord, dropped, finish_page, native_ref, native_ref_json, record_name,
};
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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// The same records, typed by the capability's schema, in the same order (validation
    /// deserializes them anyway; the gateway caches, merges and serves these).
    pub typed: Vec<Record>,
    /// Records the selector yielded.
    pub selected: usize,
    /// One `record_dropped` warning per record (or mapped output) that was dropped.
    pub dropped: Vec<Warning>,
    /// What the pagination's jq found in this reply (the next cursor, URL or token, the
    /// total pages or records), or `None` when it found nothing (null, false, no output).
    pub paging: Option<Value>,
}

impl MappedPage {
    pub(super) fn push(&mut self, (record, typed): (Value, Option<Record>)) {
        self.records.push(record);
        self.typed.extend(typed);
    }
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
    /// A pass-through capability (JSON, a plain path as `records`, `.` as `map`, no rules)
    /// read without jq: see [`CapabilityMapping::map_inline`].
    native: Option<Vec<Step>>,
}

/// One step of a plain path: `.name` or `[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Each,
}

/// Replies up to this size may be mapped on the calling thread when the capability is a
/// pass-through: reading them is linear and bounded, a few tens of microseconds.
pub const INLINE_REPLY_BYTES: usize = 64 * 1024;

/// `.`, `.a.b[]`, `.[]`, `.items[].x` ...: the steps of a plain path, or `None` for any
/// other program.
fn plain_path(code: &str) -> Option<Vec<Step>> {
    let code = code.trim();
    let mut rest = code.strip_prefix('.')?;
    let mut steps = Vec::new();
    let mut after_dot = true;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[]") {
            steps.push(Step::Each);
            rest = r;
            after_dot = false;
            continue;
        }
        if !after_dot {
            rest = rest.strip_prefix('.')?;
        }
        let n = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if n == 0 || rest.as_bytes()[0].is_ascii_digit() {
            return None;
        }
        steps.push(Step::Key(rest[..n].to_owned()));
        rest = &rest[n..];
        after_dot = false;
    }
    Some(steps)
}

/// The values a plain path selects, as jq would, or `None` where jq would fail or where
/// the order could differ (iterating an object): the caller then runs jq itself, which
/// gives the exact error.
fn select_plain(reply: Value, steps: &[Step]) -> Option<Vec<Value>> {
    let mut current = vec![reply];
    for step in steps {
        let mut next = Vec::with_capacity(current.len());
        for value in current {
            match (step, value) {
                (Step::Key(k), Value::Object(mut map)) => {
                    next.push(map.remove(k.as_str()).unwrap_or(Value::Null));
                }
                (Step::Key(_), Value::Null) => next.push(Value::Null),
                (Step::Each, Value::Array(items)) => next.extend(items),
                _ => return None,
            }
        }
        if next.len() > MAX_RECORDS_PER_REPLY {
            return None;
        }
        current = next;
    }
    Some(current)
}

/// Numbers as the jq path gives them: an integral value is an integer. `None` for an
/// integer jq cannot hold (the jq path then reports it).
fn jq_numbers(value: &mut Value) -> Option<()> {
    match value {
        Value::Number(n) => {
            if n.is_u64() && n.as_i64().is_none() {
                return None;
            }
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *n = serde_json::Number::from(i);
            }
        }
        Value::Array(items) => {
            for item in items {
                jq_numbers(item)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                jq_numbers(item)?;
            }
        }
        _ => {}
    }
    Some(())
}

/// Which program of a capability a compile error is about, as a pointer suffix.
fn compile_at(
    field: &'static str,
    definitions: Option<&str>,
    code: &str,
) -> Result<Program, (&'static str, String)> {
    Program::compile_with(definitions, code).map_err(|e| (field, program_reason(e)))
}

impl CapabilityMapping {
    /// Compiles a capability's programs; on failure every problem, each naming its field
    /// (`records`, `map`, `not_found`, `error`) and why.
    pub fn compile(
        capability: Capability,
        spec: &CapabilitySpec,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        Self::compile_with(capability, spec, None)
    }

    /// [`compile`](Self::compile), every program able to call the connector's shared
    /// `definitions`.
    pub fn compile_with(
        capability: Capability,
        spec: &CapabilitySpec,
        definitions: Option<&str>,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let mut compile = |field: &'static str, code: Option<&str>| match code {
            None => None,
            Some(code) => compile_at(field, definitions, code)
                .map_err(|problem| problems.push(problem))
                .ok(),
        };
        let records = compile("records", Some(&spec.records));
        let map = compile("map", Some(&spec.map));
        let native = (spec.decode == Decode::Json
            && spec.map.trim() == "."
            && spec.not_found.is_none()
            && spec.error.is_none()
            && spec.pagination.is_none())
        .then(|| plain_path(&spec.records))
        .flatten();
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
                native,
            }),
            _ => Err(problems),
        }
    }

    pub fn capability(&self) -> Capability {
        self.capability
    }

    /// Decodes a reply body in the capability's format, then maps it (in this process:
    /// for trusted programs, or inside a sandbox worker through [`map_reply_raw`]).
    ///
    /// [`map_reply_raw`]: Self::map_reply_raw
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

    /// The partner's half of [`map_reply`](Self::map_reply): decode and run the programs,
    /// no validation. A sandbox worker runs this; the gateway finishes the page with
    /// [`finish_page`].
    pub fn map_reply_raw(
        &self,
        body: &[u8],
        limits: &Limits,
        globals: &Globals,
        deadline: Instant,
    ) -> Result<RawPage, ConnectorError> {
        let reply = decode(self.decode, body, limits)?;
        self.map_raw(reply, globals, deadline)
    }

    /// The gateway's half: validation and identity checks of a raw page.
    pub fn finish(&self, raw: RawPage, globals: &Globals) -> MappedPage {
        finish_page(
            raw,
            self.capability.record_schema(),
            Identity::of(globals).as_ref(),
        )
    }

    /// Whether replies are read without jq (see [`map_inline`](Self::map_inline)).
    pub fn is_pass_through(&self) -> bool {
        self.native.is_some()
    }

    /// Maps a small reply of a pass-through capability here, without jq and without a
    /// thread hop: the same records, drops and warnings as [`map_reply`](Self::map_reply).
    /// `None` when the capability is not a pass-through, the reply is larger than
    /// [`INLINE_REPLY_BYTES`] or `limits` allow, `limits` are stricter on nesting than
    /// serde_json (128 levels), or the reply is anything but plain JSON the path reads (the
    /// caller then maps it on the pool, which reports the exact error). No partner code
    /// runs here: the path is read by the gateway's own code.
    pub fn map_inline(
        &self,
        body: &[u8],
        limits: &Limits,
        globals: &Globals,
    ) -> Option<MappedPage> {
        let steps = self.native.as_ref()?;
        if body.len() > INLINE_REPLY_BYTES.min(limits.max_bytes) || limits.max_depth < 128 {
            return None;
        }
        let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
        let reply: Value = serde_json::from_slice(body).ok()?;
        let mut selected = select_plain(reply, steps)?;
        for record in &mut selected {
            jq_numbers(record)?;
        }
        let raw = RawPage {
            selected: selected.len(),
            outputs: selected
                .into_iter()
                .enumerate()
                .map(|(index, value)| RawRecord {
                    index,
                    source_ref: native_ref_json(&value),
                    value,
                    warnings: Vec::new(),
                })
                .collect(),
            ..RawPage::default()
        };
        Some(self.finish(raw, globals))
    }

    /// Maps an already decoded reply.
    pub fn map_value(
        &self,
        reply: Val,
        globals: &Globals,
        deadline: Instant,
    ) -> Result<MappedPage, ConnectorError> {
        let raw = self.map_raw(reply, globals, deadline)?;
        Ok(self.finish(raw, globals))
    }

    /// Runs the error and not-found rules, the pagination program, the selector and the
    /// map of every record: outputs as JSON, not yet validated.
    fn map_raw(
        &self,
        reply: Val,
        globals: &Globals,
        deadline: Instant,
    ) -> Result<RawPage, ConnectorError> {
        let vals = globals.to_vals();
        let budget = Budget::until(deadline);
        let overrun = |reason: String| ConnectorError::MappingOverrun { reason };

        if let Some(rule) = &self.error {
            let verdict = run_rule(rule, &reply, &vals, &budget, "error")?;
            let message = match verdict {
                Val::Null | Val::Bool(false) => None,
                Val::Bool(true) => Some("the reply matched the connector's error rule".into()),
                Val::TStr(message) => Some(
                    String::from_utf8_lossy(&message)
                        .chars()
                        .take(500)
                        .collect(),
                ),
                other => Some(other.to_string().chars().take(500).collect()),
            };
            if let Some(message) = message {
                return Err(ConnectorError::PartnerReported { message });
            }
        }
        if let Some(rule) = &self.not_found
            && matches!(
                run_rule(rule, &reply, &vals, &budget, "not_found")?,
                Val::Bool(true)
            )
        {
            return Ok(RawPage {
                not_found: true,
                ..RawPage::default()
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

        let mut page = RawPage {
            selected: selected.len(),
            paging,
            ..RawPage::default()
        };
        for (index, record) in selected.into_iter().enumerate() {
            let source_ref = native_ref(&record);
            let (outputs, warnings) = match self.map.run(record, vals.clone(), &budget) {
                Ok(done) => done,
                Err(RunError::Overrun(reason)) => return Err(overrun(reason)),
                Err(RunError::Failed(reason)) => {
                    page.dropped.push(dropped(
                        &record_name(index, source_ref.as_deref()),
                        &format!("the map failed: {reason}"),
                    ));
                    continue;
                }
            };
            for output in outputs {
                let mut cap = MAX_RECORD_BYTES;
                match to_json(&output, &mut cap) {
                    Ok(value) => page.outputs.push(RawRecord {
                        index,
                        source_ref: source_ref.clone(),
                        value,
                        warnings: warnings.clone(),
                    }),
                    Err(reason) => page
                        .dropped
                        .push(dropped(&record_name(index, source_ref.as_deref()), &reason)),
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
        let definitions = spec.definitions.as_deref();
        if let Some(defs) = definitions
            && let Err(e) = Program::check_definitions(defs)
        {
            // Every program would repeat this fault: name it once, where it is.
            return Err(vec![("/definitions".to_owned(), program_reason(e))]);
        }
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
                    match Program::compile_with(definitions, &jq.jq) {
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
            let body = match cap
                .request
                .body
                .as_ref()
                .map(|b| Program::compile_with(definitions, &b.jq))
            {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    problems.push((format!("{at}/request/body/jq"), program_reason(e)));
                    None
                }
            };
            match CapabilityMapping::compile_with(*capability, cap, definitions) {
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
