//! A candidate's trial run (issue: registration runs the candidate): before a `PUT` (or a
//! canary) is stored, the candidate maps each reply its partner really sent — the samples
//! the runtime recorded — in a dry-run child under tight limits. A candidate that kills
//! or overruns the child there is refused with the reason and the capability; the active
//! version keeps serving. This is the first line only: every partner program still runs
//! in the sandbox pool at run time, on replies no sample foresaw.

use mallgate_connectors::mapping::DryRunRequest;
use mallgate_connectors::{ConnectorError, ConnectorSpec, Format, Owner, Problem};
use serde_json::json;

use super::Admin;
use crate::problem::ApiError;

impl Admin {
    /// Maps every recorded sample of the candidate's partner that the candidate serves;
    /// the number tried, or the refusal.
    pub(super) async fn trial(
        &self,
        spec: &ConnectorSpec,
        text: &str,
        owner: &Owner,
        version: u32,
    ) -> Result<usize, ApiError> {
        let Ok(resources) = self.api.registry.resources(&spec.partner) else {
            return Ok(0);
        };
        let samples: Vec<_> = resources
            .samples
            .all()
            .into_iter()
            .filter(|(c, _)| spec.capabilities.contains_key(c))
            .collect();
        if samples.is_empty() {
            return Ok(0);
        }
        let fetched_at = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let runs: Vec<_> = samples
            .into_iter()
            .map(|(capability, sample)| {
                let request = DryRunRequest {
                    connector: text.to_owned(),
                    format: Format::sniff(text),
                    owner: owner.clone(),
                    capability,
                    provenance: json!({"partner_id": spec.partner, "connector_id": spec.id,
                                       "connector_version": version, "fetched_at": fetched_at}),
                    query: sample.query,
                    locations: json!({}),
                };
                (request, sample.body)
            })
            .collect();
        let tried = runs.len();
        let sandbox = self.trials.clone();
        let failure = tokio::task::spawn_blocking(move || {
            runs.into_iter().find_map(|(request, body)| {
                match sandbox.dry_run(&request, &body) {
                    Err(
                        e
                        @ (ConnectorError::MappingOverrun { .. } | ConnectorError::Sandbox { .. }),
                    ) => Some((request.capability, e)),
                    // Anything else (a reply the candidate reads differently) is for the
                    // dry-run's difference and the canary's judge, not a reason to refuse.
                    _ => None,
                }
            })
        })
        .await
        .map_err(|e| ApiError::Rejected {
            detail: format!("the trial run failed: {e}"),
            problems: Vec::new(),
        })?;
        match failure {
            None => Ok(tried),
            Some((capability, error)) => {
                let pointer = format!(
                    "/capabilities/{}",
                    mallgate_schemas::escape_token(capability.name())
                );
                let reason = format!(
                    "on the partner's recorded {capability} reply the candidate's programs did not finish: {error}"
                );
                Err(ApiError::Rejected {
                    detail: format!("{reason}; the active version keeps serving"),
                    problems: vec![
                        serde_json::to_value(Problem {
                            pointer,
                            line: None,
                            column: None,
                            reason,
                        })
                        .unwrap_or_default(),
                    ],
                })
            }
        }
    }
}
