//! `/admin/v1/drills`: start, watch, list and abort failover drills ([`crate::drills`]).
//! Operators may drill any partner, a `partner:<id>` token only its own; every start,
//! abort and end is in the audit log.

use std::sync::{Arc, Weak};

use super::change::Event;
use super::{Admin, Role};
use crate::api::{Request, Response};
use crate::drills::{Drill, Drills, Phase, html};
use crate::problem::ApiError;

impl Admin {
    /// The gateway's drills (built beside the admin API).
    pub fn with_drills(mut self, drills: Arc<Drills>) -> Self {
        self.drills = Some(drills);
        self
    }

    pub fn drills(&self) -> Option<&Arc<Drills>> {
        self.drills.as_ref()
    }

    /// A drill's end goes to the audit log (the drill holds the admin API weakly).
    pub fn audit_drills(admin: &Arc<Self>) {
        let Some(drills) = &admin.drills else { return };
        let weak: Weak<Self> = Arc::downgrade(admin);
        drills.on_end(Box::new(move |drill: &Drill| {
            let Some(admin) = weak.upgrade() else { return };
            let role = Role::parse(&drill.actor).unwrap_or(Role::Operator);
            let report = drill.report();
            let detail = format!(
                "{:?}; verdict {}",
                report.state,
                if report.verdict.passed {
                    "passed"
                } else {
                    "failed"
                }
            );
            // Already counted in the store's health when it fails; nobody waits on it.
            let event = Event::new(&role, "drill.end", &drill.request.target.partner);
            let _ = admin.audit(&event.detail(format!("{}: {detail}", drill.id)), "ok");
        }));
    }

    fn drill_book(&self) -> Result<&Arc<Drills>, ApiError> {
        self.drills.as_ref().ok_or_else(|| ApiError::NotFound {
            kind: "route",
            detail: "drills are not enabled on this gateway".into(),
        })
    }

    /// The drill `id`, if this role may see it.
    fn drill(&self, role: &Role, id: &str) -> Result<Arc<Drill>, ApiError> {
        self.drill_book()?
            .get(id)
            .filter(|d| role.may_act_for(&d.request.target.partner))
            .ok_or_else(|| ApiError::NotFound {
                kind: "drill",
                detail: format!("no drill `{id}` (drills live as long as this process)"),
            })
    }

    pub(super) fn start_drill(&self, role: &Role, req: &Request) -> Result<Response, ApiError> {
        let drills = self.drill_book()?;
        let request = Drills::parse(&req.body)?;
        let partner = request.target.partner.clone();
        if !role.may_act_for(&partner) {
            return Err(ApiError::Forbidden {
                detail: format!("{} may not drill partner `{partner}`", role.name()),
            });
        }
        let summary = format!(
            "{} at rate {} for {} s",
            request.fault.name(),
            request.rate,
            request.duration_s
        );
        let drill = drills.start(request, &role.name())?;
        let event = Event::new(role, "drill.start", &partner);
        if let Err(e) = self.audit(&event.detail(format!("{}: {summary}", drill.id)), "ok") {
            // An unaudited drill does not run.
            drills.abort(&drill.id);
            return Err(ApiError::Internal {
                detail: format!("the drill was aborted: the audit log could not be written: {e}"),
            });
        }
        let mut response = Response::json(201, &drill.report())?;
        response
            .headers
            .push(("location", format!("/admin/v1/drills/{}", drill.id)));
        Ok(response)
    }

    pub(super) fn get_drill(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
        Response::json(200, &self.drill(role, id)?.report())
    }

    pub(super) fn drill_page(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
        let page = html::page(&self.drill(role, id)?.report());
        Ok(Response {
            status: 200,
            headers: vec![
                ("content-type", "text/html; charset=utf-8".to_owned()),
                ("cache-control", "no-store".to_owned()),
                // Self-contained: nothing may load from anywhere.
                (
                    "content-security-policy",
                    "default-src 'none'; style-src 'unsafe-inline'; img-src data:".to_owned(),
                ),
            ],
            body: bytes::Bytes::from(page),
        })
    }

    pub(super) fn list_drills(&self, role: &Role) -> Result<Response, ApiError> {
        let drills = self.drill_book()?;
        let mut all = drills.summaries();
        if let (Role::Partner(p), Some(list)) = (role, all["drills"].as_array_mut()) {
            list.retain(|d| d["target"]["partner"] == p.as_str());
        }
        Ok(Response::json_value(200, &all))
    }

    pub(super) fn abort_drill(&self, role: &Role, id: &str) -> Result<Response, ApiError> {
        let drill = self.drill(role, id)?;
        if matches!(drill.phase(), Phase::Finished | Phase::Aborted) {
            // Already over: nothing to abort, nothing to audit.
            return Response::json(200, &drill.report());
        }
        self.drill_book()?.abort(id);
        let event = Event::new(role, "drill.abort", &drill.request.target.partner);
        self.audit(&event.detail(id.to_owned()), "ok")
            .map_err(|e| ApiError::Internal {
                detail: format!(
                    "the drill was aborted (its fault is off), but the audit log could not be written: {e}"
                ),
            })?;
        Response::json(200, &drill.report())
    }
}
