//! The one change transaction. Every change to the serving set goes through
//! [`Admin::apply`], one at a time (the reload task calls it): check the change against
//! the state it replaces, write the store, build the whole serving set and swap it, write
//! the audit line. When a step fails, what the change wrote is undone as one — the pointers
//! it moved go back, a version it added is discarded, the old set keeps serving — and the
//! caller gets the reason: 422 for a set that does not build, 500 for a store or audit
//! write that failed (counted in `GET /admin/v1/status` under `store`).

use super::auth::Role;
use super::{Admin, revision};
use crate::GatewayError;
use crate::changes::{Applied, Apply, Change, ReloadSource};
use crate::problem::ApiError;
use crate::store::{AuditEntry, Store};

/// One audit line, before its result is known.
pub(super) struct Event<'a> {
    pub(super) actor: &'a Role,
    pub(super) action: &'static str,
    pub(super) target: String,
    pub(super) version: Option<u32>,
    pub(super) detail: Option<String>,
}

/// What a replica serves of one connector, against which the store's pointers are
/// checked before a change (a fleet's other replicas may have moved them).
#[derive(Debug, Clone, Copy)]
pub(super) struct Served {
    pub active: Option<u32>,
    /// The active version came from the store (not the connectors directory).
    pub active_from_store: bool,
    pub canary: Option<u32>,
}

/// A connector's two pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pointers {
    active: Option<u32>,
    canary: Option<(u32, u8)>,
}

/// The writes of one change to one connector, and how to undo them. Every pointer moves
/// by compare-and-put from where this change last saw it: a writer elsewhere (another
/// replica on the same etcd) that moved it meanwhile makes this change a conflict.
pub(super) struct Tx<'a> {
    store: &'a Store,
    id: &'a str,
    before: Pointers,
    /// Where this change has put the pointers so far.
    now: Pointers,
    added: Option<u32>,
}

impl Tx<'_> {
    pub(super) fn add_version(
        &mut self,
        partner: &str,
        text: &str,
        author: &str,
        floor: u32,
    ) -> Result<u32, GatewayError> {
        let meta = self
            .store
            .add_version_after(self.id, partner, text, author, floor)?;
        self.added = Some(meta.version);
        Ok(meta.version)
    }

    pub(super) fn set_active(&mut self, version: Option<u32>) -> Result<(), GatewayError> {
        self.store
            .set_active_if(self.id, self.now.active, version)?;
        self.now.active = version;
        Ok(())
    }

    pub(super) fn set_canary(&mut self, canary: Option<(u32, u8)>) -> Result<(), GatewayError> {
        self.store.set_canary_if(self.id, self.now.canary, canary)?;
        self.now.canary = canary;
        Ok(())
    }

    /// The pointers back where they were, an added version discarded.
    fn undo(&self) -> Result<(), GatewayError> {
        // The active pointer first, as a change moves it last: a crash in between never
        // leaves an older canary beside a newer active version.
        if self.now.active != self.before.active {
            self.store
                .set_active_if(self.id, self.now.active, self.before.active)?;
        }
        if self.now.canary != self.before.canary {
            self.store
                .set_canary_if(self.id, self.now.canary, self.before.canary)?;
        }
        match self.added {
            Some(v) => self.store.discard(self.id, v),
            None => Ok(()),
        }
    }
}

/// How a change's writes are undone when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnFailure {
    /// Pointers back, added versions discarded.
    Undo,
    /// Kept: a quarantine must never put the quarantined version back.
    Keep,
}

/// A write step of a change: the first that builds is kept.
pub(super) type Write<'w> = &'w dyn Fn(&mut Tx<'_>) -> Result<(), GatewayError>;

/// A write step, and what to add to the audit line's detail when it is the one kept.
pub(super) type Step<'w> = (Write<'w>, Option<&'w str>);

fn store_failed(e: &GatewayError) -> ApiError {
    match e {
        // Another replica's change won the compare-and-put.
        GatewayError::StoreConflict { .. } => ApiError::Conflict {
            detail: format!("{e}: someone changed it first; GET it and retry"),
        },
        GatewayError::StoreUnavailable { .. } => ApiError::StoreUnavailable {
            detail: format!("{e}; the active versions keep serving; retry when it is back"),
        },
        _ => ApiError::Internal {
            detail: format!("the store failed: {e}; the active version keeps serving"),
        },
    }
}

impl Admin {
    /// Appends the audit line of `event`; a failure is counted in the status and returned.
    pub(super) fn audit(&self, event: &Event<'_>, result: &str) -> Result<(), GatewayError> {
        let written = self.store.audit(&AuditEntry {
            at: jiff::Timestamp::now().to_string(),
            actor: event.actor.name(),
            action: event.action.into(),
            target: event.target.clone(),
            version: event.version,
            result: result.into(),
            detail: event.detail.clone(),
        });
        if let Err(e) = &written {
            self.health.audit_failed(e);
        }
        written
    }

    /// The audit line of a refusal: the refusal is the caller's answer; a failed write
    /// is counted in the status (`store.audit_failures`).
    pub(super) fn note(&self, event: &Event<'_>, result: &str) {
        // Counted by `audit`; the refusal stays the answer.
        let _ = self.audit(event, result);
    }

    /// Builds the serving set from the store and the directory and swaps it: the new
    /// generation, or why it does not build (422) or could not be read (500).
    pub(super) fn build(&self) -> Result<u64, ApiError> {
        self.reload().map_err(|e| match e {
            GatewayError::Rejected { .. } | GatewayError::Connector { .. } => ApiError::Rejected {
                detail: e.to_string(),
                problems: Vec::new(),
            },
            other => self.store_error(&other),
        })
    }

    /// Store → build → swap → audit for connector `id`, as one. `writes` are tried in
    /// turn: when the set a write leads to does not build, the next is written on top
    /// (a quarantine's fallbacks); the first that builds is kept.
    pub(super) fn transact(
        &self,
        id: &str,
        mut event: Event<'_>,
        on_failure: OnFailure,
        writes: &[Step<'_>],
    ) -> Result<(u64, Option<u32>), ApiError> {
        let read = (|| {
            Ok::<_, GatewayError>(Pointers {
                active: self.store.active(id)?,
                canary: self.store.canary(id)?,
            })
        })();
        let before = read.map_err(|e| self.failed(&event, &e))?;
        // A fleet shares the store: when it points elsewhere than this replica serves,
        // another replica changed it and this one has not applied that yet; the caller's
        // If-Match was checked against what this replica serves, so it cannot hold.
        // A connector served from the directory has no store pointer; one served from
        // the store whose pointer is gone was deleted elsewhere. The canary too.
        let served = self.served_pointers(id);
        let active_moved =
            before.active != served.active && (before.active.is_some() || served.active_from_store);
        let canary_moved = before.canary.map(|(v, _)| v) != served.canary;
        if active_moved || canary_moved {
            let name = |v: Option<u32>| v.map_or("none".to_owned(), |v| format!("v{v}"));
            let (what, stored, here) = if active_moved {
                ("active", before.active, served.active)
            } else {
                ("canary", before.canary.map(|(v, _)| v), served.canary)
            };
            let e = GatewayError::StoreConflict {
                key: format!("connectors/{id}/{what}"),
                reason: format!(
                    "the store's {what} version is {}, this replica serves {} (changed on another replica; retry once it is applied here)",
                    name(stored),
                    name(here)
                ),
            };
            let refused = store_failed(&e);
            self.note(&event.rejected(&refused), "conflict");
            return Err(refused);
        }
        let mut tx = Tx {
            store: &self.store,
            id,
            before,
            now: before,
            added: None,
        };
        let mut outcome = Err(ApiError::Internal {
            detail: "no write".into(),
        });
        for (write, kept) in writes {
            let written = write(&mut tx);
            // The audit names the version the change added.
            event.version = event.version.or(tx.added);
            if let Err(e) = written {
                let undone = self.undo(&tx, on_failure);
                return Err(self.failed(&event, &e).with_undo(undone));
            }
            outcome = self.build();
            if outcome.is_ok() {
                if let Some(kept) = kept {
                    event.detail = Some(match event.detail.take() {
                        Some(d) => format!("{d}; {kept}"),
                        None => (*kept).to_owned(),
                    });
                }
                break;
            }
        }
        let generation = match outcome {
            Ok(g) => g,
            Err(refused) => {
                let undone = self.undo(&tx, on_failure);
                self.note(&event.rejected(&refused), "rejected");
                return Err(refused.with_undo(undone));
            }
        };
        if let Err(e) = self.audit(&event, "ok") {
            return Err(self.unaudited(&tx, on_failure, &e));
        }
        Ok((generation, tx.added))
    }

    /// A change whose audit line could not be written: an unaudited change does not stay
    /// (a quarantine does: it is never undone). The answer says which.
    fn unaudited(&self, tx: &Tx<'_>, on_failure: OnFailure, e: &GatewayError) -> ApiError {
        let detail = match on_failure {
            OnFailure::Keep => {
                format!(
                    "the audit log could not be written ({e}); the change stays (it is never undone)"
                )
            }
            OnFailure::Undo => match tx.undo() {
                Err(u) => format!(
                    "the audit log could not be written ({e}) and undoing the change failed ({}): the store may hold the change",
                    self.health.store_failed(&u)
                ),
                Ok(()) => match self.reload() {
                    Ok(_) => {
                        format!("the audit log could not be written ({e}); the change was undone")
                    }
                    Err(b) => format!(
                        "the audit log could not be written ({e}); the store was restored, but the set before the change does not build again ({b}): the change serves until the next reload"
                    ),
                },
            },
        };
        ApiError::Internal { detail }
    }

    fn undo(&self, tx: &Tx<'_>, on_failure: OnFailure) -> Result<(), String> {
        match on_failure {
            OnFailure::Keep => Ok(()),
            OnFailure::Undo => tx.undo().map_err(|e| self.health.store_failed(&e)),
        }
    }

    /// A store read or write that failed: counted in the status, a 500.
    pub(super) fn store_error(&self, e: &GatewayError) -> ApiError {
        self.health.store_failed(e);
        store_failed(e)
    }

    /// A store write or read that failed: counted, audited, a 500.
    fn failed(&self, event: &Event<'_>, e: &GatewayError) -> ApiError {
        self.health.store_failed(e);
        let refused = store_failed(e);
        self.note(&event.rejected(&refused), "rejected");
        refused
    }

    /// The served version of `id` with the revision `if_match` names: 428 without one
    /// when `id` exists, 409 when it names another.
    pub(super) fn precondition(
        &self,
        actor: &Role,
        (action, id): (&'static str, &str),
        if_match: Option<&str>,
    ) -> Result<Option<u32>, ApiError> {
        let current = self.served_version(id);
        match (current, if_match) {
            (Some(_), None) => Err(ApiError::PreconditionRequired {
                detail: format!(
                    "connector `{id}` exists: send If-Match with the revision you replace or delete (GET gives it as ETag; `*` for whatever is active)"
                ),
            }),
            (Some(v), Some(given)) if given != revision(id, v) && given != "*" => {
                self.note(
                    &Event::new(actor, action, id).detail(format!("If-Match {given}")),
                    "conflict",
                );
                Err(ApiError::Conflict {
                    detail: format!(
                        "the active revision is {}, not {given}: someone changed it first",
                        revision(id, v)
                    ),
                })
            }
            (None, Some(given)) if given != "*" => Err(ApiError::Conflict {
                detail: format!("connector `{id}` does not exist; create it without If-Match"),
            }),
            _ => Ok(current),
        }
    }

    fn apply_put(
        &self,
        actor: &Role,
        id: &str,
        partner: &str,
        text: &str,
        canary: Option<u8>,
        if_match: Option<&str>,
    ) -> Result<Applied, ApiError> {
        // In turn with every other change: another partner may have registered this id.
        self.check_owner(actor, id)?;
        let current = self.precondition(actor, ("connector.put", id), if_match)?;
        if canary.is_some() && current.is_none() {
            return Err(ApiError::Conflict {
                detail: format!("a canary runs beside an active version; `{id}` has none yet"),
            });
        }
        if let Some((version, reason)) = self.quarantined_document(id, text) {
            // Again in turn: it may have been quarantined during the trial run.
            return Err(ApiError::Rejected {
                detail: format!("this document is version {version}, quarantined ({reason})"),
                problems: Vec::new(),
            });
        }
        let previous_canary = self.store.canary(id).map_err(|e| self.store_error(&e))?;
        if canary.is_none()
            && previous_canary.is_none()
            && let Some(active) = current
            && self.stored_active_is(actor, id, active, text)
        {
            // The document already serving: no new version, no swap, one audit line.
            self.note(
                &Event::new(actor, "connector.put", id)
                    .version(active)
                    .detail("unchanged: the active version's document"),
                "ok",
            );
            return Ok(Applied {
                generation: self.api.registry.load().generation,
                version: Some(active),
                before: current,
                serving: current,
                unchanged: true,
            });
        }
        let floor = current
            .unwrap_or(0)
            .max(previous_canary.map_or(0, |(v, _)| v));
        let event = match canary {
            Some(p) => Event::new(actor, "connector.canary", id).detail(format!("{p}%")),
            None => Event::new(actor, "connector.put", id),
        };
        let author = actor.name();
        let write = |tx: &mut Tx<'_>| {
            let version = tx.add_version(partner, text, &author, floor)?;
            match canary {
                Some(percent) => tx.set_canary(Some((version, percent))),
                None => {
                    // The canary goes first: a crash in between never leaves an older
                    // canary beside a newer active version.
                    tx.set_canary(None)?;
                    tx.set_active(Some(version))
                }
            }
        };
        let (generation, added) = self.transact(id, event, OnFailure::Undo, &[(&write, None)])?;
        Ok(Applied {
            generation,
            version: added,
            before: current,
            serving: self.served_version(id),
            unchanged: false,
        })
    }

    /// Whether `text` is the stored document of `id`'s active version `active`.
    /// (by the same owner: an operator re-pushing a partner's document takes it over).
    fn stored_active_is(&self, actor: &Role, id: &str, active: u32, text: &str) -> bool {
        self.store.active(id).ok().flatten() == Some(active)
            && self.store.document(id, active).is_ok_and(|d| d == text)
            && self.author_owner(id, active) == actor.owner()
    }
}

impl Apply for Admin {
    fn apply(&self, actor: &Role, change: Change) -> Result<Applied, ApiError> {
        match change {
            Change::Put {
                id,
                partner,
                text,
                canary,
                if_match,
            } => self.apply_put(actor, &id, &partner, &text, canary, if_match.as_deref()),
            Change::Rollback { id, to } => self.apply_rollback(actor, &id, to),
            Change::Delete { id, if_match } => self.apply_delete(actor, &id, if_match.as_deref()),
            Change::Verdict {
                id,
                version,
                promote,
                reason,
            } => self.apply_verdict(&id, version, promote, reason),
            Change::Quarantine {
                id,
                version,
                reason,
            } => self.apply_quarantine(&id, version, &reason),
            Change::ClearQuarantine { id, version } => {
                self.apply_clear_quarantine(actor, &id, version)
            }
            Change::Reload(source) => self.apply_reload(actor, source),
        }
    }
}

impl Admin {
    fn apply_reload(&self, actor: &Role, source: ReloadSource) -> Result<Applied, ApiError> {
        let event = Event::new(actor, source.action(), "*");
        if source == ReloadSource::Store {
            // Another replica may have onboarded a partner, issued or revoked a token,
            // changed a grant or set a secret: those are read again first.
            self.load_partners()
                .and_then(|()| self.load_secrets().map(drop))
                .map_err(|e| self.store_error(&e))?;
        }
        match self.build() {
            // Applying the shared store's change is not a change: the replica that made it
            // audited it (every replica auditing it would write the line N times).
            Ok(generation) if source == ReloadSource::Store => Ok(Applied {
                generation,
                ..Applied::default()
            }),
            Ok(generation) => {
                // A reload reflects the files and the store as they are: nothing to undo,
                // but an unaudited reload is still the caller's error.
                self.audit(&event, "ok").map_err(|e| ApiError::Internal {
                    detail: format!("reloaded, but the audit log could not be written: {e}"),
                })?;
                Ok(Applied {
                    generation,
                    ..Applied::default()
                })
            }
            // Logged and counted by the reload task; the watcher tries again.
            Err(refused) if source == ReloadSource::Store => Err(refused),
            Err(refused) => {
                self.note(&event.rejected(&refused), "rejected");
                Err(refused)
            }
        }
    }
}

impl<'a> Event<'a> {
    pub(super) fn new(actor: &'a Role, action: &'static str, target: &str) -> Self {
        Self {
            actor,
            action,
            target: target.to_owned(),
            version: None,
            detail: None,
        }
    }

    pub(super) fn version(mut self, version: impl Into<Option<u32>>) -> Self {
        self.version = version.into();
        self
    }

    pub(super) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The same event, refused: its detail says why.
    fn rejected(&self, refused: &ApiError) -> Event<'a> {
        let why = match refused {
            ApiError::Rejected { detail, .. }
            | ApiError::Internal { detail }
            | ApiError::Conflict { detail }
            | ApiError::StoreUnavailable { detail } => detail.clone(),
            other => format!("{other:?}"),
        };
        Event {
            actor: self.actor,
            action: self.action,
            target: self.target.clone(),
            version: self.version,
            detail: Some(match &self.detail {
                Some(d) => format!("{d}; {why}"),
                None => why,
            }),
        }
    }
}

impl ApiError {
    /// A failure whose undo failed too: a 500 saying so (the store needs a look).
    fn with_undo(self, undone: Result<(), String>) -> Self {
        match undone {
            Ok(()) => self,
            Err(e) => Self::Internal {
                detail: format!(
                    "{}; undoing it failed too ({e}): the store may hold the change, the serving set does not",
                    match &self {
                        Self::Rejected { detail, .. } | Self::Internal { detail } => detail.clone(),
                        other => format!("{other:?}"),
                    }
                ),
            },
        }
    }
}

/// What failed in the store and the audit log since startup (`GET /admin/v1/status`).
#[derive(Debug, Default)]
pub(super) struct StoreHealth {
    inner: std::sync::Mutex<StoreHealthView>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub(super) struct StoreHealthView {
    pub(super) write_failures: u64,
    pub(super) audit_failures: u64,
    pub(super) last_error: Option<String>,
}

impl StoreHealth {
    fn record(&self, audit: bool, e: &GatewayError) -> String {
        let text = e.to_string();
        let mut view = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if audit {
            view.audit_failures += 1;
        } else {
            view.write_failures += 1;
        }
        view.last_error = Some(text.clone());
        text
    }

    fn audit_failed(&self, e: &GatewayError) -> String {
        self.record(true, e)
    }

    pub(super) fn store_failed(&self, e: &GatewayError) -> String {
        self.record(false, e)
    }

    pub(super) fn view(&self) -> StoreHealthView {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
