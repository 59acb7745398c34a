//! Threadline, an apparel retailer modelled on a Shopify-style Admin REST API under
//! `/admin/api/2026-10/`.
//!
//! Quirks rendered here:
//! - snake_case; products with up to three options (`option1..3`) and variants, each with
//!   its own `barcode`; a product without options has the single option `Title` with the
//!   value `Default Title`;
//! - prices are strings (`"299.00"`), `compare_at_price` is the list price or `null`;
//! - both `grams` and `weight` + `weight_unit`, and they can disagree: for the variants
//!   [`weight_disagrees`] names, `weight` is stale (the truth is `grams`);
//! - inventory per location: `available` (can be negative), `on_hand`, `committed`,
//!   `incoming` (never available);
//! - cursor paging through a `Link: <...page_info=...>; rel="next"` header; a `page_info`
//!   carries its filters, and combining it with a filter is a 400;
//! - the access token in `X-Shopify-Access-Token`;
//! - a leaky-bucket call limit per token and replica (40 calls, leaking 2 per second),
//!   reported in `X-Shopify-Shop-Api-Call-Limit: 32/40`, then 429 with `Retry-After: 2.0`
//!   (a decimal, as its model sends it);
//! - timestamps with the shop's offset (`2026-11-27T09:14:03-05:00`).
//!
//! Drift knob: the variant's `price` becomes `price_amount`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::{cursor, decimal, rfc3339_in, uncursor};
use crate::server::{AppState, Drift};
use crate::world::{Listing, Location, Partner, Product, STOCK_PERIOD_S};

/// The access token the simulated Threadline accepts.
pub const ACCESS_TOKEN: &str = "shpat_threadline_demo_token";
/// The shop's zone: every timestamp carries its offset.
pub const SHOP_ZONE: &str = "America/New_York";
/// Calls the bucket holds.
pub const BUCKET_SIZE: f64 = 40.0;
/// Calls the bucket leaks per second.
pub const LEAK_PER_S: f64 = 2.0;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 250;
const API: &str = "/admin/api/2026-10";
const CURSOR: &str = "tl1";

pub fn router() -> Router<AppState> {
    let buckets = Arc::new(Buckets::default());
    Router::new()
        .route("/admin/api/2026-10/shop.json", get(shop))
        .route("/admin/api/2026-10/products.json", get(products))
        .route("/admin/api/2026-10/products/{id}", get(product))
        .route("/admin/api/2026-10/locations.json", get(locations))
        .route(
            "/admin/api/2026-10/inventory_levels.json",
            get(inventory_levels),
        )
        .route_layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let buckets = Arc::clone(&buckets);
                async move { guard(&buckets, req, next).await }
            },
        ))
}

/// The product id Threadline gives a product.
pub fn product_id(listing: &Listing) -> u64 {
    listing.native_id.parse().unwrap_or_default()
}

/// A variant's id.
pub fn variant_id(product: &Product, variant: usize) -> u64 {
    44_000_000_000 + product.index as u64 * 16 + variant as u64
}

/// A variant's inventory item id (what inventory levels are keyed by).
pub fn inventory_item_id(product: &Product, variant: usize) -> u64 {
    46_000_000_000 + product.index as u64 * 16 + variant as u64
}

/// The (product index, variant index) of an inventory item id.
pub fn from_inventory_item_id(id: u64) -> Option<(usize, usize)> {
    let rest = id.checked_sub(46_000_000_000)?;
    Some(((rest / 16) as usize, (rest % 16) as usize))
}

/// A location's id.
pub fn location_id(location: &Location) -> u64 {
    60_000_000 + u64::from(location.native_id)
}

/// A variant's SKU text.
pub fn sku(product: &Product, variant: usize) -> String {
    let v = &product.variants[variant];
    let mut sku = format!("TL-{:05}", product.index);
    for (_, value) in &v.options {
        sku.push('-');
        sku.extend(value.chars().filter(char::is_ascii_alphanumeric).take(3));
    }
    sku.to_uppercase()
}

/// Whether the variant's `weight` is stale and disagrees with its `grams` (the truth).
pub fn weight_disagrees(product: &Product, variant: usize) -> bool {
    (product.index * 7 + variant).is_multiple_of(13)
}

/// The unit a product's `weight` is given in.
pub fn weight_unit(product: &Product) -> &'static str {
    ["kg", "lb", "oz", "g"][product.index % 4]
}

fn weight_in(grams: u32, unit: &str) -> f64 {
    let g = f64::from(grams);
    let w = match unit {
        "kg" => g / 1000.0,
        "lb" => g / 453.592_37,
        "oz" => g / 28.349_523_125,
        _ => g,
    };
    (w * 100.0).round() / 100.0
}

/// Units committed to open orders at a location (part of `on_hand`, not available).
pub fn committed(state: &AppState, location: &Location, product: &Product, variant: usize) -> i64 {
    let now = state.sim.clock.now_s();
    let period = now.div_euclid(STOCK_PERIOD_S) as u64;
    let mut r = crate::rng::Rng::derive(
        state.sim.world.seed,
        &[
            crate::rng::label("committed"),
            u64::from(location.native_id),
            product.index as u64,
            variant as u64,
            period,
        ],
    );
    r.below(4) as i64
}

// --- call limit --------------------------------------------------------------------

#[derive(Debug, Default)]
struct Buckets {
    levels: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Buckets {
    /// Takes one call from the token's bucket: `Ok(level after)` or `Err(())` when full.
    fn take(&self, token: &str) -> Result<u32, ()> {
        let mut levels = self.levels.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (level, at) = levels.entry(token.to_owned()).or_insert((0.0, now));
        let leaked = now.duration_since(*at).as_secs_f64() * LEAK_PER_S;
        *level = (*level - leaked).max(0.0);
        *at = now;
        if *level + 1.0 > BUCKET_SIZE {
            return Err(());
        }
        *level += 1.0;
        Ok(level.ceil() as u32)
    }
}

fn errors(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"errors": message}))).into_response()
}

/// Access token, then the bucket; every answer carries the call-limit header.
async fn guard(buckets: &Buckets, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if token != ACCESS_TOKEN {
        return errors(
            StatusCode::UNAUTHORIZED,
            "[API] Invalid API key or access token (unrecognized login or wrong password)",
        );
    }
    match buckets.take(&token) {
        Ok(level) => {
            let mut response = next.run(req).await;
            if let Ok(v) = HeaderValue::from_str(&format!("{level}/{}", BUCKET_SIZE as u32)) {
                response
                    .headers_mut()
                    .insert("x-shopify-shop-api-call-limit", v);
            }
            response
        }
        Err(()) => {
            let mut response = errors(
                StatusCode::TOO_MANY_REQUESTS,
                "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service.",
            );
            let headers = response.headers_mut();
            headers.insert("retry-after", HeaderValue::from_static("2.0"));
            if let Ok(v) = HeaderValue::from_str(&format!("{0}/{0}", BUCKET_SIZE as u32)) {
                headers.insert("x-shopify-shop-api-call-limit", v);
            }
            response
        }
    }
}

// --- rendering ---------------------------------------------------------------------

/// Units available of a variant across the shop's locations (can be negative).
fn inventory_quantity(state: &AppState, product: &Product, variant: usize) -> i64 {
    let now = state.sim.clock.now_s();
    state
        .sim
        .world
        .locations_of(Partner::Threadline)
        .map(|l| state.sim.world.stock(l, product.index, variant, now))
        .sum()
}

/// One product as Threadline renders it.
pub fn render(state: &AppState, product: &Product, listing: &Listing, drift: bool) -> Value {
    let id = product_id(listing);
    let updated = rfc3339_in(SHOP_ZONE, listing.updated_s);
    let created = rfc3339_in(SHOP_ZONE, listing.updated_s - 90 * 86_400);
    let option_names: Vec<String> = match product.variants[0].options.as_slice() {
        [] => vec!["Title".to_owned()],
        options => options.iter().map(|(name, _)| name.clone()).collect(),
    };
    let unit = weight_unit(product);
    let variants: Vec<Value> = product
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let values: Vec<String> = if v.options.is_empty() {
                vec!["Default Title".to_owned()]
            } else {
                v.options.iter().map(|(_, value)| value.clone()).collect()
            };
            let stated_grams = if weight_disagrees(product, i) {
                v.weight_g + v.weight_g / 2
            } else {
                v.weight_g
            };
            let price_key = if drift { "price_amount" } else { "price" };
            let mut variant = json!({
                "id": variant_id(product, i),
                "product_id": id,
                "title": values.join(" / "),
                "sku": sku(product, i),
                "position": i + 1,
                "inventory_policy": "deny",
                "compare_at_price": (listing.list_price_cents > listing.price_cents)
                    .then(|| decimal(listing.list_price_cents)),
                "option1": values.first(),
                "option2": values.get(1),
                "option3": values.get(2),
                "barcode": v.upc.clone().or_else(|| v.bad_code.clone()),
                "grams": v.weight_g,
                "weight": weight_in(stated_grams, unit),
                "weight_unit": unit,
                "inventory_item_id": inventory_item_id(product, i),
                "inventory_quantity": inventory_quantity(state, product, i),
                "created_at": created,
                "updated_at": updated,
            });
            variant[price_key] = json!(decimal(listing.price_cents));
            variant
        })
        .collect();
    let options: Vec<Value> = option_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut values: Vec<String> = Vec::new();
            for v in &product.variants {
                let value = v
                    .options
                    .get(i)
                    .map_or_else(|| "Default Title".to_owned(), |(_, value)| value.clone());
                if !values.contains(&value) {
                    values.push(value);
                }
            }
            json!({"id": id * 10 + i as u64, "product_id": id, "name": name, "position": i + 1, "values": values})
        })
        .collect();
    json!({
        "id": id,
        "title": product.title,
        "body_html": format!("<p>{}</p>", product.description),
        "vendor": product.brand,
        "product_type": product.category.last(),
        "handle": product.title.to_lowercase().replace(' ', "-"),
        "created_at": created,
        "updated_at": updated,
        "published_at": created,
        "status": "active",
        "tags": product.category.join(", "),
        "variants": variants,
        "options": options,
        "images": [],
    })
}

// --- handlers ----------------------------------------------------------------------

type Params = Query<BTreeMap<String, String>>;

async fn shop() -> Json<Value> {
    Json(json!({"shop": {
        "id": 54_000_000,
        "name": "Threadline",
        "currency": "USD",
        "iana_timezone": SHOP_ZONE,
        "weight_unit": "kg",
    }}))
}

/// The filters a product listing accepts (and a cursor carries).
#[derive(Debug, Default, Clone, PartialEq)]
struct Filters {
    title: Option<String>,
    vendor: Option<String>,
    ids: Option<Vec<u64>>,
}

impl Filters {
    fn from_query(q: &BTreeMap<String, String>) -> Self {
        Self {
            title: q.get("title").filter(|t| !t.is_empty()).cloned(),
            vendor: q.get("vendor").filter(|t| !t.is_empty()).cloned(),
            ids: q.get("ids").map(|ids| {
                ids.split(',')
                    .filter_map(|i| i.trim().parse().ok())
                    .collect()
            }),
        }
    }

    fn encode(&self, offset: usize) -> String {
        let value = json!({"t": self.title, "v": self.vendor, "i": self.ids, "o": offset});
        cursor(CURSOR, &value.to_string())
    }

    fn decode(page_info: &str) -> Option<(Self, usize)> {
        let value: Value = serde_json::from_str(&uncursor(CURSOR, page_info)?).ok()?;
        let text = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
        Some((
            Self {
                title: text("t"),
                vendor: text("v"),
                ids: value
                    .get("i")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_u64).collect()),
            },
            usize::try_from(value.get("o")?.as_u64()?).ok()?,
        ))
    }

    fn matches(&self, product: &Product, listing: &Listing) -> bool {
        if let Some(title) = &self.title {
            let have = product.title.to_lowercase();
            if !title
                .split_whitespace()
                .all(|w| have.contains(&w.to_lowercase()))
            {
                return false;
            }
        }
        if let Some(vendor) = &self.vendor
            && !product.brand.eq_ignore_ascii_case(vendor)
        {
            return false;
        }
        if let Some(ids) = &self.ids
            && !ids.contains(&product_id(listing))
        {
            return false;
        }
        true
    }
}

fn limit(q: &BTreeMap<String, String>) -> Result<usize, Response> {
    match q.get("limit").map(|l| l.parse::<usize>()) {
        None => Ok(50),
        Some(Ok(l)) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
        _ => Err(errors(
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 250",
        )),
    }
}

fn link(host: &str, limit: usize, previous: Option<String>, next: Option<String>) -> String {
    let url = |c: &str| format!("<http://{host}{API}/products.json?limit={limit}&page_info={c}>");
    let mut parts = Vec::new();
    if let Some(p) = previous {
        parts.push(format!("{}; rel=\"previous\"", url(&p)));
    }
    if let Some(n) = next {
        parts.push(format!("{}; rel=\"next\"", url(&n)));
    }
    parts.join(", ")
}

async fn products(
    State(state): State<AppState>,
    Extension(Drift(drift)): Extension<Drift>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let limit = match limit(&q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let (filters, offset) = match q.get("page_info") {
        Some(page_info) => {
            let extra: Vec<&str> = q
                .keys()
                .map(String::as_str)
                .filter(|k| !matches!(*k, "page_info" | "limit" | "fields"))
                .collect();
            if !extra.is_empty() {
                return errors(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "page_info cannot be combined with other parameters: {}",
                        extra.join(", ")
                    ),
                );
            }
            match Filters::decode(page_info) {
                Some(f) => f,
                None => return errors(StatusCode::BAD_REQUEST, "Invalid page_info."),
            }
        }
        None => (Filters::from_query(&q), 0),
    };
    let hits: Vec<(&Product, &Listing)> = state
        .sim
        .world
        .listed_by(Partner::Threadline)
        .filter(|(p, l)| filters.matches(p, l))
        .collect();
    let items: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(p, l)| render(&state, p, l, drift))
        .collect();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let next = (offset + limit < hits.len()).then(|| filters.encode(offset + limit));
    let previous = (offset > 0).then(|| filters.encode(offset.saturating_sub(limit)));
    let link = link(&host, limit, previous, next);
    let mut response = Json(json!({"products": items})).into_response();
    if !link.is_empty()
        && let Ok(v) = HeaderValue::from_str(&link)
    {
        response.headers_mut().insert(header::LINK, v);
    }
    response
}

async fn product(
    State(state): State<AppState>,
    Extension(Drift(drift)): Extension<Drift>,
    Path(file): Path<String>,
) -> Response {
    let id = file.strip_suffix(".json").unwrap_or(&file);
    match state.sim.world.by_native_id(Partner::Threadline, id) {
        Some((p, l)) => Json(json!({"product": render(&state, p, l, drift)})).into_response(),
        None => errors(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// A location as Threadline renders it (coordinates and zone included: the mall needs
/// them for distances and local times).
pub fn render_location(location: &Location) -> Value {
    json!({
        "id": location_id(location),
        "name": location.name,
        "address1": location.street,
        "city": location.city,
        "province_code": location.region,
        "zip": location.postal_code,
        "country_code": "US",
        "latitude": format!("{:.6}", location.lat),
        "longitude": format!("{:.6}", location.lon),
        "iana_timezone": location.time_zone,
        "legacy": false,
        "active": true,
        "fulfills_online_orders": true,
        "localized_kind": match location.kind {
            crate::world::LocationKind::Store => "retail_store",
            crate::world::LocationKind::Warehouse => "warehouse",
        },
    })
}

async fn locations(State(state): State<AppState>) -> Json<Value> {
    let list: Vec<Value> = state
        .sim
        .world
        .locations_of(Partner::Threadline)
        .map(render_location)
        .collect();
    Json(json!({"locations": list}))
}

async fn inventory_levels(State(state): State<AppState>, Query(q): Params) -> Response {
    let parse_ids = |key: &str| -> Result<Option<Vec<u64>>, Response> {
        q.get(key)
            .map(|ids| {
                ids.split(',')
                    .map(|i| i.trim().parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        errors(
                            StatusCode::BAD_REQUEST,
                            &format!("{key} must be a comma-separated list of ids"),
                        )
                    })
            })
            .transpose()
    };
    let (items, location_ids) = match (parse_ids("inventory_item_ids"), parse_ids("location_ids")) {
        (Ok(i), Ok(l)) => (i, l),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let Some(items) = items else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"errors": {"inventory_item_ids": ["must be given"]}})),
        )
            .into_response();
    };
    if items.len() > 50 {
        return errors(
            StatusCode::BAD_REQUEST,
            "inventory_item_ids takes at most 50 ids",
        );
    }
    let now = state.sim.clock.now_s();
    let updated = rfc3339_in(SHOP_ZONE, now - now.rem_euclid(STOCK_PERIOD_S));
    let world = &state.sim.world;
    let mut levels = Vec::new();
    for item in items {
        let Some((pi, vi)) = from_inventory_item_id(item) else {
            continue;
        };
        let Some(product) = world.products.get(pi) else {
            continue;
        };
        if product.listing(Partner::Threadline).is_none() || vi >= product.variants.len() {
            continue;
        }
        for location in world.locations_of(Partner::Threadline) {
            if location_ids
                .as_ref()
                .is_some_and(|ids| !ids.contains(&location_id(location)))
            {
                continue;
            }
            let available = world.stock(location, pi, vi, now);
            let committed = committed(&state, location, product, vi);
            levels.push(json!({
                "inventory_item_id": item,
                "location_id": location_id(location),
                "available": available,
                "on_hand": (available + committed).max(0),
                "committed": committed,
                "incoming": world.incoming(location, pi, vi, now),
                "updated_at": updated,
            }));
        }
    }
    Json(json!({"inventory_levels": levels})).into_response()
}
