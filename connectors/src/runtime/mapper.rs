//! Where a connector version's jq programs run — on the gateway's mapping threads
//! (trusted, operator-owned) or in the sandbox pool's worker processes (every partner
//! program) — and the calls that run them.

use std::sync::Arc;
use tokio::time::Instant;

use jaq_json::Val;
use serde_json::Value;

use super::Connector;
use crate::error::ConnectorError;
use crate::mapping::isolated::{Answer, IsolatedPool, ProgramSource, Task};
use crate::mapping::{Budget, Globals, MappedPage, MappingPool, RunError};
use crate::spec::{Capability, Owner};

/// Where a connector version's jq programs run.
#[derive(Debug, Clone)]
pub enum Mapper {
    /// On the gateway's own mapping threads: for trusted (operator-owned) programs only.
    InProcess(Arc<MappingPool>),
    /// In the sandbox pool's worker processes: every partner-owned program.
    Isolated {
        pool: Arc<IsolatedPool>,
        source: Arc<ProgramSource>,
    },
}

impl From<Arc<MappingPool>> for Mapper {
    fn from(pool: Arc<MappingPool>) -> Self {
        Self::InProcess(pool)
    }
}

impl Mapper {
    /// Programs of the document `text` in the sandbox pool.
    pub fn isolated(pool: Arc<IsolatedPool>, text: &str, owner: &Owner) -> Self {
        Self::Isolated {
            pool,
            source: Arc::new(ProgramSource {
                text: text.to_owned(),
                format: crate::source::Format::sniff(text),
                owner: owner.clone(),
            }),
        }
    }

    pub fn is_isolated(&self) -> bool {
        matches!(self, Self::Isolated { .. })
    }
}

/// A version's place in the sandbox pool: its program set's id, and its partner's lane,
/// which lets all of the partner's versions together hold at most half of the workers, so
/// a partner whose programs run hot (or hostile) leaves the other half to everyone else.
pub(super) struct Lane {
    pub(super) set: u64,
    pub(super) slots: Arc<tokio::sync::Semaphore>,
}

pub(super) static NEXT_SET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Connector {
    /// Runs a request program (a jq query value or the body) where this version's programs
    /// run: the query is its input. `None` when it gives nothing (null, no output).
    pub(super) async fn request_program(
        &self,
        capability: Capability,
        which: Option<String>,
        globals: &Arc<Globals>,
        deadline: Instant,
    ) -> Result<Option<Value>, ConnectorError> {
        let what = which
            .as_ref()
            .map_or_else(|| "body".to_owned(), |n| format!("query value `{n}`"));
        let failed = |reason: String| ConnectorError::Request {
            reason: format!("the request {what} failed: {reason}"),
        };
        let pool = match &self.mapper {
            Mapper::Isolated { .. } => {
                let task = Task::Request {
                    capability,
                    field: which,
                };
                return match self.isolated(task, globals, Vec::new(), deadline).await? {
                    Answer::Value { value } => Ok(value.filter(|v| !v.is_null())),
                    Answer::Failed { kind, reason } if kind == "request" => Err(failed(reason)),
                    other => Err(unexpected(other)),
                };
            }
            Mapper::InProcess(pool) => pool,
        };
        let programs = Arc::clone(&self.programs);
        let std_deadline = deadline.into_std();
        let globals = Arc::clone(globals);
        let receiver = pool.execute(std_deadline, move || {
            let compiled = programs.capabilities.get(&capability)?;
            let program = match &which {
                Some(name) => compiled.query.get(name)?,
                None => compiled.body.as_ref()?,
            };
            let input = crate::mapping::to_val(&globals.query);
            let vals: [Val; 3] = [
                crate::mapping::to_val(&globals.provenance),
                input.clone(),
                crate::mapping::to_val(&globals.locations),
            ];
            Some(
                program
                    .run(input, vals, &Budget::until(std_deadline))
                    .map(|(out, _)| {
                        out.into_iter().next().and_then(|v| {
                            let mut cap = 1024 * 1024;
                            crate::mapping::to_json(&v, &mut cap).ok()
                        })
                    }),
            )
        })?;
        match receiver.await {
            Ok(None) => Ok(None),
            Ok(Some(Ok(value))) => Ok(value.filter(|v| !v.is_null())),
            Ok(Some(Err(RunError::Failed(reason)))) => Err(failed(reason)),
            Ok(Some(Err(RunError::Overrun(reason)))) => {
                Err(ConnectorError::MappingOverrun { reason })
            }
            Err(_) => Err(ConnectorError::MappingOverrun {
                reason: format!("the request {what} did not finish"),
            }),
        }
    }

    /// Runs `task` in the sandbox pool within this version's lane.
    async fn isolated(
        &self,
        task: Task,
        globals: &Arc<Globals>,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<Answer, ConnectorError> {
        let (Mapper::Isolated { pool, source }, Some(lane)) = (&self.mapper, &self.lane) else {
            return Err(ConnectorError::Sandbox {
                reason: "this version maps in process".into(),
            });
        };
        let _slot = match tokio::time::timeout_at(deadline, lane.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(ConnectorError::MappingBusy),
        };
        pool.run(
            lane.set,
            source,
            task,
            globals,
            payload,
            deadline.into_std(),
        )
        .await
    }

    /// Maps one reply: a pass-through read by the gateway's own code, else the programs
    /// where this version runs them (the gateway validates the records either way).
    pub(super) async fn map_page(
        &self,
        compiled: &crate::mapping::CompiledCapability,
        body: Vec<u8>,
        globals: &Arc<Globals>,
        deadline: Instant,
    ) -> Result<MappedPage, ConnectorError> {
        if let Some(page) = compiled.mapping.map_inline(&body, &self.limits, globals) {
            return Ok(page);
        }
        match &self.mapper {
            Mapper::InProcess(pool) => pool
                .map_reply(
                    Arc::clone(&compiled.mapping),
                    body,
                    self.limits,
                    Arc::clone(globals),
                    deadline.into_std(),
                )?
                .await
                .map_err(|_| ConnectorError::MappingOverrun {
                    reason: "the mapping thread failed".into(),
                })?,
            Mapper::Isolated { .. } => {
                let task = Task::MapReply {
                    capability: compiled.mapping.capability(),
                };
                match self.isolated(task, globals, body, deadline).await? {
                    Answer::Page { page } => Ok(compiled.mapping.finish(page, globals)),
                    other => Err(unexpected(other)),
                }
            }
        }
    }
}

/// A worker's answer that is not the one the job asked for: its error, or a protocol fault.
fn unexpected(answer: Answer) -> ConnectorError {
    match answer {
        Answer::Failed { kind, reason } => crate::mapping::rebuild_error(&kind, reason),
        Answer::InvalidSpec { problems } => ConnectorError::InvalidSpec { problems },
        other => ConnectorError::Sandbox {
            reason: format!("unexpected answer from the sandbox worker: {other:?}"),
        },
    }
}
