//! The admin API's routes: which handler answers which method and path, and who may call it.

use serde_json::json;

use super::Admin;
use super::change::Event;
use crate::api::{Request, Response};
use crate::changes::{Change, ReloadSource};
use crate::problem::ApiError;

impl Admin {
    pub(super) async fn route(&self, req: &Request) -> Result<Response, ApiError> {
        let role = self.tokens.authenticate(req)?;
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["admin", "v1", "status"]) => {
                role.operator_only()?;
                self.status()
            }
            ("GET", ["admin", "v1", "fleet"]) => self.fleet(&role),
            ("POST", ["admin", "v1", "reload"]) => {
                role.operator_only()?;
                let change = Change::Reload(ReloadSource::Admin);
                let applied = self.changes.submit(role, change).await?;
                Ok(Response::json_value(
                    200,
                    &json!({"generation": applied.generation}),
                ))
            }
            ("POST", ["admin", "v1", "cache", "purge"]) => {
                role.operator_only()?;
                self.api.purge();
                self.audit(&Event::new(&role, "cache.purge", "*"), "ok")
                    .map_err(|e| ApiError::Internal {
                        detail: format!(
                            "the cache was purged (that cannot be undone), but the audit log could not be written: {e}"
                        ),
                    })?;
                Ok(Response::json_value(200, &json!({"purged": true})))
            }
            ("POST", ["admin", "v1", "drills"]) => self.start_drill(&role, req),
            ("GET", ["admin", "v1", "drills"]) => self.list_drills(&role),
            ("GET", ["admin", "v1", "drills", id]) => self.get_drill(&role, id),
            ("GET", ["admin", "v1", "drills", id, "report.html"]) => self.drill_page(&role, id),
            ("DELETE", ["admin", "v1", "drills", id]) => self.abort_drill(&role, id),
            ("POST", ["admin", "v1", "partners"]) => self.create_partner(&role, &req.body),
            ("GET", ["admin", "v1", "partners"]) => self.list_partners(&role),
            ("GET", ["admin", "v1", "partners", id]) => self.get_partner(&role, id),
            ("PATCH", ["admin", "v1", "partners", id]) => {
                self.update_partner(&role, id, &req.body).await
            }
            ("POST", ["admin", "v1", "partners", id, "tokens"]) => {
                self.rotate_token(&role, id, req)
            }
            ("DELETE", ["admin", "v1", "partners", id, "tokens", token]) => {
                self.revoke_token(&role, id, token)
            }
            ("GET", ["admin", "v1", "partners", partner, "secrets"]) => {
                self.list_secrets(&role, partner)
            }
            ("PUT", ["admin", "v1", "partners", partner, "secrets", name]) => {
                self.put_secret(&role, partner, name, &req.body)
            }
            ("DELETE", ["admin", "v1", "partners", partner, "secrets", name]) => {
                self.delete_secret(&role, partner, name)
            }
            ("PUT", ["admin", "v1", "connectors", id]) => self.put_connector(&role, id, req).await,
            ("GET", ["admin", "v1", "connectors", id]) => self.get_connector(&role, id),
            ("DELETE", ["admin", "v1", "connectors", id]) => {
                self.delete_connector(&role, id, req).await
            }
            ("GET", ["admin", "v1", "connectors", id, "versions"]) => self.versions(&role, id),
            ("POST", ["admin", "v1", "connectors", id, "dry-run"]) => {
                self.dry_run(&role, id, &req.body).await
            }
            ("POST", ["admin", "v1", "connectors", id, "rollback"]) => {
                self.rollback(&role, id, &req.body).await
            }
            (
                "DELETE",
                [
                    "admin",
                    "v1",
                    "connectors",
                    id,
                    "versions",
                    version,
                    "quarantine",
                ],
            ) => self.clear_quarantine(&role, id, version).await,
            (_, ["admin", "v1", ..]) => Err(ApiError::NotFound {
                kind: "route",
                detail: format!("no admin route {} {}", req.method, req.path),
            }),
            _ => Err(ApiError::NotFound {
                kind: "route",
                detail: "admin routes start with /admin/v1/".into(),
            }),
        }
    }
}
