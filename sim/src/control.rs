//! The control API, `/__sim/...`: fault knobs, replica stop/start, counters and the clock.
//!
//! - `GET /__sim/fleet`: seed, clock, every replica's address and state
//! - `GET|PUT /__sim/partners/{partner}/replicas/{n}/faults`: the knobs ([`Faults`] as JSON)
//! - `POST /__sim/partners/{partner}/replicas/{n}/stop|start`
//! - `GET /__sim/partners/{partner}/replicas/{n}/counters`: requests by route and by path
//! - `GET|PUT /__sim/partners/{partner}/auth`: OAuth token lifetime and issued count
//!   (`{"token_ttl_s": N, "token_max_uses": N}`: a token dies after N accepted requests,
//!   0 for no limit); `POST /__sim/partners/{partner}/auth/revoke` invalidates every
//!   token the partner issued
//! - `GET|PUT /__sim/clock`: `{"freeze_at_s": N}`, `{"advance_s": N}`, `{"thaw": true}`

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::{Faults, Fleet, Partner, Replica};

pub fn router(fleet: Arc<Fleet>) -> Router {
    Router::new()
        .route("/__sim/fleet", get(fleet_view))
        .route(
            "/__sim/partners/{partner}/replicas/{n}/faults",
            get(get_faults).put(put_faults),
        )
        .route("/__sim/partners/{partner}/replicas/{n}/stop", post(stop))
        .route("/__sim/partners/{partner}/replicas/{n}/start", post(start))
        .route(
            "/__sim/partners/{partner}/replicas/{n}/counters",
            get(counters),
        )
        .route("/__sim/partners/{partner}/auth", get(auth).put(set_auth))
        .route("/__sim/partners/{partner}/auth/revoke", post(revoke))
        .route(
            "/__sim/partners/{partner}/signature",
            get(signature).put(set_signature).delete(clear_signature),
        )
        .route("/__sim/clock", get(clock).put(set_clock))
        .with_state(fleet)
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": what}))).into_response()
}

fn replica(fleet: &Fleet, partner: &str, n: usize) -> Result<Arc<Replica>, Response> {
    let p =
        Partner::from_id(partner).ok_or_else(|| not_found(format!("no partner `{partner}`")))?;
    fleet
        .replica(p, n)
        .cloned()
        .map_err(|e| not_found(e.to_string()))
}

async fn fleet_view(State(fleet): State<Arc<Fleet>>) -> Json<serde_json::Value> {
    let mut view = fleet.addresses();
    view["now_s"] = json!(fleet.clock().now_s());
    let running: serde_json::Map<String, serde_json::Value> = Partner::ALL
        .iter()
        .filter(|p| !fleet.replicas(**p).is_empty())
        .map(|p| {
            (
                p.id().to_owned(),
                fleet
                    .replicas(*p)
                    .iter()
                    .map(|r| json!(r.is_running()))
                    .collect(),
            )
        })
        .collect();
    view["running"] = serde_json::Value::Object(running);
    Json(view)
}

type Answer = Result<Response, Response>;

async fn get_faults(
    State(fleet): State<Arc<Fleet>>,
    Path((partner, n)): Path<(String, usize)>,
) -> Answer {
    Ok(Json(replica(&fleet, &partner, n)?.state.faults.get()).into_response())
}

async fn put_faults(
    State(fleet): State<Arc<Fleet>>,
    Path((partner, n)): Path<(String, usize)>,
    Json(faults): Json<Faults>,
) -> Answer {
    replica(&fleet, &partner, n)?
        .state
        .faults
        .set(faults.clone());
    Ok(Json(faults).into_response())
}

async fn stop(
    State(fleet): State<Arc<Fleet>>,
    Path((partner, n)): Path<(String, usize)>,
) -> Answer {
    replica(&fleet, &partner, n)?.stop().await;
    Ok(Json(json!({"running": false})).into_response())
}

async fn start(
    State(fleet): State<Arc<Fleet>>,
    Path((partner, n)): Path<(String, usize)>,
) -> Answer {
    match replica(&fleet, &partner, n)?.restart().await {
        Ok(()) => Ok(Json(json!({"running": true})).into_response()),
        Err(e) => {
            Err((StatusCode::CONFLICT, Json(json!({"error": e.to_string()}))).into_response())
        }
    }
}

async fn counters(
    State(fleet): State<Arc<Fleet>>,
    Path((partner, n)): Path<(String, usize)>,
) -> Answer {
    Ok(Json(replica(&fleet, &partner, n)?.state.counters()).into_response())
}

fn partner(id: &str) -> Result<Partner, Response> {
    Partner::from_id(id).ok_or_else(|| not_found(format!("no partner `{id}`")))
}

fn auth_view(fleet: &Fleet, p: Partner) -> Response {
    Json(json!({
        "token_ttl_s": fleet.tokens().ttl_s(p),
        "token_max_uses": fleet.tokens().max_uses(p),
        "tokens_issued": fleet.tokens().issued(p),
    }))
    .into_response()
}

async fn auth(State(fleet): State<Arc<Fleet>>, Path(id): Path<String>) -> Answer {
    Ok(auth_view(&fleet, partner(&id)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthChange {
    #[serde(default)]
    token_ttl_s: Option<i64>,
    #[serde(default)]
    token_max_uses: Option<u64>,
}

async fn set_auth(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
    Json(change): Json<AuthChange>,
) -> Answer {
    let p = partner(&id)?;
    if let Some(ttl) = change.token_ttl_s {
        fleet.tokens().set_ttl_s(p, ttl);
    }
    if let Some(uses) = change.token_max_uses {
        fleet.tokens().set_max_uses(p, uses);
    }
    Ok(auth_view(&fleet, p))
}

async fn revoke(State(fleet): State<Arc<Fleet>>, Path(id): Path<String>) -> Answer {
    let p = partner(&id)?;
    fleet.tokens().revoke_all(p);
    Ok(auth_view(&fleet, p))
}

async fn clock(State(fleet): State<Arc<Fleet>>) -> Json<serde_json::Value> {
    Json(json!({"now_s": fleet.clock().now_s()}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    #[serde(default)]
    freeze_at_s: Option<i64>,
    #[serde(default)]
    advance_s: Option<i64>,
    #[serde(default)]
    thaw: bool,
}

async fn set_clock(
    State(fleet): State<Arc<Fleet>>,
    Json(change): Json<ClockChange>,
) -> Json<serde_json::Value> {
    let clock = fleet.clock();
    if change.thaw {
        clock.thaw();
    }
    if let Some(t) = change.freeze_at_s {
        clock.freeze(t);
    }
    if let Some(s) = change.advance_s {
        clock.advance(s);
    }
    Json(json!({"now_s": clock.now_s()}))
}

fn signature_view(fleet: &Fleet, p: Partner) -> Response {
    // The check holds the partner's keys: only its kind is shown.
    let kind = fleet.sim.signatures.get(p).map(|c| match c {
        crate::signing::SignatureCheck::Hmac { .. } => "hmac",
        crate::signing::SignatureCheck::AwsSigv4 { .. } => "aws_sigv4",
    });
    Json(json!({"required": kind})).into_response()
}

async fn signature(State(fleet): State<Arc<Fleet>>, Path(id): Path<String>) -> Answer {
    Ok(signature_view(&fleet, partner(&id)?))
}

/// Makes every request to the partner need this signature.
async fn set_signature(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
    Json(check): Json<crate::signing::SignatureCheck>,
) -> Answer {
    let p = partner(&id)?;
    fleet.sim.signatures.set(p, Some(check));
    Ok(signature_view(&fleet, p))
}

async fn clear_signature(State(fleet): State<Arc<Fleet>>, Path(id): Path<String>) -> Answer {
    let p = partner(&id)?;
    fleet.sim.signatures.set(p, None);
    Ok(signature_view(&fleet, p))
}
