//! Acme Dropship, a supplier modelled on a Walmart Marketplace-style API.
//!
//! Quirks rendered here:
//! - OAuth2 client credentials at `POST /v3/token` (HTTP Basic client authentication, form
//!   body `grant_type=client_credentials`); tokens live 900 s of the simulated clock (the
//!   `auth` knob shortens that) and are valid on every replica;
//! - dotted header names: the token in `WM_SEC.ACCESS_TOKEN` (no scheme),
//!   `WM_QOS.CORRELATION_ID` and `WM_SVC.NAME` required on every call, the correlation id
//!   echoed;
//! - `nextCursor` paging: the first call sends `*`, an absent `nextCursor` means done;
//! - GTINs zero-padded to 14 digits; `shelf` is a JSON array *inside a string*; prices as
//!   `{"currency": "USD", "amount": 12.99}`;
//! - stock as `{"quantity": {"unit": "EACH", "amount": 10}}` per `shipNode` (never
//!   negative: an oversold node reports 0);
//! - timestamps as epoch milliseconds.
//!
//! Acme lists the first variant of a product. Drift knob: `productName` becomes
//! `product_name`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::{basic_auth, cursor, form, uncursor};
use crate::server::{AppState, Drift, TokenCheck};
use crate::world::{Listing, Location, Partner, Product, STOCK_PERIOD_S};

pub const CLIENT_ID: &str = "acme-demo-client";
pub const CLIENT_SECRET: &str = "acme-demo-secret";
/// Largest `limit` of an item page.
pub const MAX_LIMIT: usize = 200;
const CURSOR: &str = "AoE";

pub fn router() -> Router<AppState> {
    let api = Router::new()
        .route("/v3/items", get(items))
        .route("/v3/inventories", get(inventories))
        .route_layer(axum::middleware::from_fn(guard));
    Router::new()
        .route("/v3/token", post(token))
        .route("/health", get(|| async { "ok" }))
        .merge(api)
}

fn errors(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"errors": [{
            "code": code,
            "description": description,
            "severity": "ERROR",
            "category": "DATA",
        }]})),
    )
        .into_response()
}

async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match basic_auth(&headers) {
        Some((id, secret)) if id == CLIENT_ID && secret == CLIENT_SECRET => {}
        _ => {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "invalid_client", "error_description": "client authentication failed"})),
            )
                .into_response();
        }
    }
    let form = form(&body);
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let (token, ttl) = state
        .sim
        .tokens
        .issue(Partner::Acme, state.sim.clock.now_s());
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl})).into_response()
}

async fn guard(
    Extension(state): Extension<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, Response> {
    // Read what is needed first: a borrow of the request must not live across the await.
    let (token, missing) = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let missing = ["wm_qos.correlation_id", "wm_svc.name"]
            .into_iter()
            .find(|h| header(h).is_none());
        (header("wm_sec.access_token"), missing)
    };
    let check = token.map_or(TokenCheck::Unknown, |t| {
        state
            .sim
            .tokens
            .check(Partner::Acme, &t, state.sim.clock.now_s())
    });
    match check {
        TokenCheck::Valid => {}
        TokenCheck::Expired => {
            return Err(errors(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED.GMP_GATEWAY_API",
                "Token expired",
            ));
        }
        TokenCheck::Unknown => {
            return Err(errors(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED.GMP_GATEWAY_API",
                "Unauthorized token or invalid token",
            ));
        }
    }
    if let Some(required) = missing {
        return Err(errors(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST_HEADER.GMP_GATEWAY_API",
            &format!("{} is required", required.to_uppercase()),
        ));
    }
    Ok(next.run(req).await)
}

/// The 14-digit GTIN Acme sends for a product (its first variant), valid or not.
pub fn gtin(product: &Product) -> String {
    let v = &product.variants[0];
    let code = v
        .upc
        .clone()
        .or_else(|| v.bad_code.clone())
        .unwrap_or_default();
    format!("{code:0>14}")
}

/// One item as Acme renders it.
pub fn render(product: &Product, listing: &Listing, drift: bool) -> Value {
    let v = &product.variants[0];
    let shelf = serde_json::to_string(&product.category).unwrap_or_default();
    let mut item = json!({
        "mart": "WALMART_US",
        "sku": listing.native_id,
        "wpid": format!("5ACM{:08}", product.index),
        "upc": v.upc.clone().or_else(|| v.bad_code.clone()),
        "gtin": gtin(product),
        "shelf": shelf,
        "productType": product.category.last(),
        "brand": product.brand,
        "price": {"currency": "USD", "amount": listing.price_cents as f64 / 100.0},
        "publishedStatus": "PUBLISHED",
        "lifecycleStatus": "ACTIVE",
        "lastUpdated": listing.updated_s * 1000,
    });
    item[if drift { "product_name" } else { "productName" }] = json!(product.title);
    item
}

type Params = Query<BTreeMap<String, String>>;

async fn items(
    State(state): State<AppState>,
    Extension(Drift(drift)): Extension<Drift>,
    Query(q): Params,
) -> Response {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(l)) if (1..=MAX_LIMIT).contains(&l) => l,
        _ => {
            return errors(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST_PARAM.GMP_ITEM_API",
                "limit must be between 1 and 200",
            );
        }
    };
    let offset = match q.get("nextCursor").map(String::as_str) {
        None | Some("*") => 0,
        Some(c) => match uncursor(CURSOR, c).and_then(|s| s.parse::<usize>().ok()) {
            Some(o) => o,
            None => {
                return errors(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST_PARAM.GMP_ITEM_API",
                    "nextCursor is not valid",
                );
            }
        },
    };
    let hits: Vec<(&Product, &Listing)> = state
        .sim
        .world
        .listed_by(Partner::Acme)
        .filter(|(p, l)| {
            q.get("sku").is_none_or(|s| *s == l.native_id)
                && q.get("gtin").is_none_or(|g| *g == gtin(p))
        })
        .collect();
    let page: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(p, l)| render(p, l, drift))
        .collect();
    let mut body = json!({"ItemResponse": page, "totalItems": hits.len()});
    if offset + limit < hits.len() {
        body["nextCursor"] = json!(cursor(CURSOR, &(offset + limit).to_string()));
    }
    Json(body).into_response()
}

/// The ship node id of an Acme warehouse.
pub fn ship_node(location: &Location) -> String {
    location.native_id.to_string()
}

/// Units a node reports for a product: the world's stock, never below zero.
pub fn node_quantity(state: &AppState, location: &Location, product: &Product) -> i64 {
    state
        .sim
        .world
        .stock(location, product.index, 0, state.sim.clock.now_s())
        .max(0)
}

async fn inventories(State(state): State<AppState>, Query(q): Params) -> Response {
    let world = &state.sim.world;
    let found = match (q.get("sku"), q.get("gtin")) {
        (Some(sku), _) => world.by_native_id(Partner::Acme, sku),
        (None, Some(g)) => world.listed_by(Partner::Acme).find(|(p, _)| gtin(p) == *g),
        (None, None) => {
            return errors(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST_PARAM.GMP_INVENTORY_API",
                "sku or gtin is required",
            );
        }
    };
    let Some((product, listing)) = found else {
        return errors(
            StatusCode::NOT_FOUND,
            "CONTENT_NOT_FOUND.GMP_INVENTORY_API",
            "Item not found",
        );
    };
    let now = state.sim.clock.now_s();
    let as_of = (now - now.rem_euclid(STOCK_PERIOD_S)) * 1000;
    let nodes: Vec<Value> = world
        .locations_of(Partner::Acme)
        .map(|l| {
            json!({
                "shipNode": ship_node(l),
                "quantity": {"unit": "EACH", "amount": node_quantity(&state, l, product)},
                "lastUpdated": as_of,
            })
        })
        .collect();
    Json(json!({"elements": {"inventories": [{
        "sku": listing.native_id,
        "gtin": gtin(product),
        "nodes": nodes,
    }]}}))
    .into_response()
}
