//! Voltmart, an electronics retailer modelled on a products API that answers XML unless
//! asked for JSON (`format=json`), with the API key in the `apiKey` query parameter.
//!
//! Quirks rendered here: `sku` is an integer; `upc` is 12 digits; `regularPrice` and
//! `salePrice` are JSON numbers in USD (`849.99`); the page envelope has `from, to, total,
//! currentPage, totalPages`, `queryTime` as a *string* and a `partial` flag; store
//! availability gives no quantities, only `lowStock`; the store id is `storeID` (string)
//! in availability but `storeId` (integer) in the store list.
//!
//! Drift knob: `salePrice` becomes `sale_price`.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use quick_xml::escape::escape;
use serde_json::{Value, json};

use crate::server::{AppState, Drift};
use crate::world::{Listing, Partner, Product, distance_km};

/// The API key the simulated Voltmart accepts.
pub const API_KEY: &str = "voltmart-demo-key";
/// Largest `pageSize`.
pub const MAX_PAGE_SIZE: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", get(search))
        .route("/v1/products/{sku}", get(product))
        .route("/v1/products/{sku}/stores", get(availability))
        .route("/v1/stores", get(stores))
        .route("/health", get(|| async { "ok" }))
}

type Params = Query<BTreeMap<String, String>>;

fn denied() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"errorCode": "403", "errorMessage": "The provided API Key is invalid."})),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"errorCode": "400", "errorMessage": message})),
    )
        .into_response()
}

fn authorized(q: &BTreeMap<String, String>) -> bool {
    q.get("apiKey").is_some_and(|k| k == API_KEY)
}

fn wants_json(q: &BTreeMap<String, String>) -> bool {
    q.get("format").is_some_and(|f| f == "json")
}

/// Dollars as a JSON number (`849.99`).
fn dollars(cents: i64) -> Value {
    serde_json::Number::from_f64(cents as f64 / 100.0).map_or(Value::Null, Value::Number)
}

/// Whether any Voltmart store has the product (the world's stock at the clock).
fn online(state: &AppState, product: &Product) -> bool {
    let now = state.sim.clock.now_s();
    state
        .sim
        .world
        .locations_of(Partner::Voltmart)
        .any(|l| state.sim.world.stock(l, product.index, 0, now) > 0)
}

/// One product as Voltmart's JSON renders it.
pub fn render(state: &AppState, product: &Product, listing: &Listing, drift: bool) -> Value {
    let variant = &product.variants[0];
    let code = variant
        .upc
        .clone()
        .or_else(|| variant.bad_code.clone())
        .unwrap_or_default();
    let price_key = if drift { "sale_price" } else { "salePrice" };
    let mut item = json!({
        "sku": listing.native_id.parse::<u64>().unwrap_or_default(),
        "name": product.title,
        "upc": code,
        "manufacturer": product.brand,
        "categoryPath": product.category.iter().enumerate()
            .map(|(i, name)| json!({"id": format!("abcat0{}00000", 1 + i), "name": name}))
            .collect::<Vec<_>>(),
        "regularPrice": dollars(listing.list_price_cents),
        "onlineAvailability": online(state, product),
        "shortDescription": product.description,
        "weight": format!("{:.2} lbs", f64::from(variant.weight_g) / 453.59237),
    });
    item[price_key] = dollars(listing.price_cents);
    item
}

fn xml_value(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s.as_str()).into_owned(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn xml_product(item: &Value) -> String {
    let mut out = String::from("<product>");
    if let Value::Object(map) = item {
        for (k, v) in map {
            match v {
                Value::Array(cats) => {
                    out.push_str(&format!("<{k}>"));
                    for c in cats {
                        out.push_str(&format!(
                            "<category><id>{}</id><name>{}</name></category>",
                            xml_value(&c["id"]),
                            xml_value(&c["name"])
                        ));
                    }
                    out.push_str(&format!("</{k}>"));
                }
                other => out.push_str(&format!("<{k}>{}</{k}>", xml_value(other))),
            }
        }
    }
    out.push_str("</product>");
    out
}

fn answer(q: &BTreeMap<String, String>, envelope: Value, items: Vec<Value>) -> Response {
    if wants_json(q) {
        let mut body = envelope;
        body["products"] = Value::Array(items);
        return Json(body).into_response();
    }
    let mut attrs = String::new();
    if let Value::Object(map) = &envelope {
        for (k, v) in map {
            attrs.push_str(&format!(" {k}=\"{}\"", xml_value(v)));
        }
    }
    let mut xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><products{attrs}>");
    for item in &items {
        xml.push_str(&xml_product(item));
    }
    xml.push_str("</products>");
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}

fn matches(product: &Product, q: &BTreeMap<String, String>) -> bool {
    if let Some(search) = q.get("search") {
        let title = product.title.to_lowercase();
        if !search
            .split_whitespace()
            .all(|w| title.contains(&w.to_lowercase()))
        {
            return false;
        }
    }
    if let Some(brand) = q.get("manufacturer")
        && !product.brand.eq_ignore_ascii_case(brand)
    {
        return false;
    }
    if let Some(upc) = q.get("upc")
        && product.variants[0].upc.as_deref() != Some(upc.as_str())
    {
        return false;
    }
    true
}

async fn search(
    State(state): State<AppState>,
    Extension(Drift(drift)): Extension<Drift>,
    Query(q): Params,
) -> Response {
    if !authorized(&q) {
        return denied();
    }
    let page: usize = match q.get("page").map(|p| p.parse()) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p,
        _ => return bad_request("page must be a positive integer"),
    };
    let size: usize = match q.get("pageSize").map(|p| p.parse()) {
        None => 10,
        Some(Ok(s)) if (1..=MAX_PAGE_SIZE).contains(&s) => s,
        _ => return bad_request("pageSize must be between 1 and 100"),
    };
    let hits: Vec<(&Product, &Listing)> = state
        .sim
        .world
        .listed_by(Partner::Voltmart)
        .filter(|(p, _)| matches(p, &q))
        .collect();
    let total = hits.len();
    let total_pages = total.div_ceil(size).max(1);
    let start = (page - 1) * size;
    let items: Vec<Value> = hits
        .iter()
        .skip(start)
        .take(size)
        .map(|(p, l)| render(&state, p, l, drift))
        .collect();
    let envelope = json!({
        "from": if items.is_empty() { 0 } else { start + 1 },
        "to": start + items.len(),
        "total": total,
        "currentPage": page,
        "totalPages": total_pages,
        "queryTime": "0.005",
        "partial": false,
    });
    answer(&q, envelope, items)
}

async fn product(
    State(state): State<AppState>,
    Extension(Drift(drift)): Extension<Drift>,
    Path(sku): Path<String>,
    Query(q): Params,
) -> Response {
    if !authorized(&q) {
        return denied();
    }
    // Like its model, an unknown sku is an empty list, not a 404.
    let items: Vec<Value> = state
        .sim
        .world
        .by_native_id(Partner::Voltmart, &sku)
        .map(|(p, l)| render(&state, p, l, drift))
        .into_iter()
        .collect();
    let n = items.len();
    answer(
        &q,
        json!({"from": n.min(1), "to": n, "total": n, "currentPage": 1, "totalPages": 1, "queryTime": "0.001", "partial": false}),
        items,
    )
}

fn near(q: &BTreeMap<String, String>) -> Result<Option<(f64, f64, f64)>, Response> {
    match (q.get("lat"), q.get("lng")) {
        (None, None) => Ok(None),
        (Some(lat), Some(lng)) => {
            let lat: f64 = lat
                .parse()
                .map_err(|_| bad_request("lat must be a number"))?;
            let lng: f64 = lng
                .parse()
                .map_err(|_| bad_request("lng must be a number"))?;
            let radius: f64 = q
                .get("radius")
                .map_or(Ok(250.0), |r| r.parse())
                .map_err(|_| bad_request("radius must be a number"))?;
            Ok(Some((lat, lng, radius)))
        }
        _ => Err(bad_request("lat and lng go together")),
    }
}

async fn availability(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    Query(q): Params,
) -> Response {
    if !authorized(&q) {
        return denied();
    }
    let near = match near(&q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let Some((product, _)) = state.sim.world.by_native_id(Partner::Voltmart, &sku) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"errorCode": "404", "errorMessage": "sku not found"})),
        )
            .into_response();
    };
    let now = state.sim.clock.now_s();
    let stores: Vec<Value> = state
        .sim
        .world
        .locations_of(Partner::Voltmart)
        .filter_map(|l| {
            let distance = near.map(|(lat, lng, _)| distance_km(lat, lng, l.lat, l.lon));
            if let (Some(d), Some((_, _, radius))) = (distance, near)
                && d > radius
            {
                return None;
            }
            let stock = state.sim.world.stock(l, product.index, 0, now);
            (stock > 0).then(|| {
                json!({
                    "storeID": l.native_id.to_string(),
                    "name": l.name,
                    "city": l.city,
                    "distance": distance.map(|d| (d * 10.0).round() / 10.0),
                    "lowStock": stock < 4,
                })
            })
        })
        .collect();
    Json(json!({"ispuEligible": !stores.is_empty(), "stores": stores})).into_response()
}

async fn stores(State(state): State<AppState>, Query(q): Params) -> Response {
    if !authorized(&q) {
        return denied();
    }
    let near = match near(&q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let page: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let size = 5;
    let all: Vec<Value> = state
        .sim
        .world
        .locations_of(Partner::Voltmart)
        .filter(|l| {
            near.is_none_or(|(lat, lng, radius)| distance_km(lat, lng, l.lat, l.lon) <= radius)
        })
        .map(|l| {
            json!({
                "storeId": l.native_id,
                "name": l.name,
                "address": l.street,
                "city": l.city,
                "region": l.region,
                "postalCode": l.postal_code,
                "lat": l.lat,
                "lng": l.lon,
                "timeZone": l.time_zone,
            })
        })
        .collect();
    let total_pages = all.len().div_ceil(size).max(1);
    let items: Vec<Value> = all.into_iter().skip((page - 1) * size).take(size).collect();
    Json(json!({"currentPage": page, "totalPages": total_pages, "stores": items})).into_response()
}
