//! Northwind Wholesale, a supplier serving an ANSI X12 846 inventory advice snapshot over
//! HTTP at `GET /edi/846/latest` (HTTP Basic auth).
//!
//! The document is regenerated every stock period (5 minutes of the simulated clock): its
//! number (`BIA03`) and time follow the period, and the `ETag` says which one it is
//! (`If-None-Match` gets a 304). Segments end with `~`, elements split on `*`; a fixed-width `ISA` envelope; per item
//! `LIN` with the UPC (`UP`) and vendor part number (`VP`), `PID` description,
//! `QTY*33` (available) and `QTY*17` (on hand) totals, `SDQ` available units per warehouse,
//! and `DTM*018` (available-on date, `CCYYMMDD`) when stock is incoming; then `CTT` with
//! the line count and the hash total of every `QTY` quantity.
//!
//! Northwind carries the first variant of every seventh product (including some whose UPC
//! has a bad check digit). Drift knob: the generator miscounts, and `CTT01` is one more
//! than the number of `LIN` lines.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::{basic_auth, zoned};
use crate::server::{AppState, Drift};
use crate::world::{Location, Partner, Product, STOCK_PERIOD_S, World};

pub const USERNAME: &str = "mallgate";
pub const PASSWORD: &str = "northwind-demo-password";
/// The zone Northwind writes its dates in.
pub const ZONE: &str = "America/Chicago";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/edi/846/latest", get(latest))
        .route("/health", get(|| async { "ok" }))
}

/// The products Northwind carries (their first variant), in document order.
pub fn carried(world: &World) -> impl Iterator<Item = &Product> {
    world.products.iter().filter(|p| p.index % 7 == 1)
}

/// The warehouse id Northwind writes in `SDQ`.
pub fn location_code(location: &Location) -> String {
    format!("NW{}", location.native_id)
}

/// The code Northwind sends for a product: the UPC, or the mistyped one.
pub fn upc(product: &Product) -> String {
    let v = &product.variants[0];
    v.upc
        .clone()
        .or_else(|| v.bad_code.clone())
        .unwrap_or_default()
}

/// The vendor part number.
pub fn vendor_part(product: &Product) -> String {
    format!("NW-{:05}", product.index)
}

/// Units available at a warehouse for the snapshot taken at `unix_s` (never negative).
pub fn available(world: &World, location: &Location, product: &Product, unix_s: i64) -> i64 {
    world.stock(location, product.index, 0, unix_s).max(0)
}

/// The date incoming stock becomes available, `CCYYMMDD`, if any is incoming.
pub fn restock_date(world: &World, product: &Product, unix_s: i64) -> Option<String> {
    let incoming: i64 = world
        .locations_of(Partner::Northwind)
        .map(|l| world.incoming(l, product.index, 0, unix_s))
        .sum();
    (incoming > 0).then(|| {
        let days = 1 + (product.index as i64 + unix_s.div_euclid(STOCK_PERIOD_S)) % 14;
        zoned(ZONE, unix_s + days * 86_400)
            .strftime("%Y%m%d")
            .to_string()
    })
}

/// The snapshot's number for the period of `unix_s`.
pub fn document_number(unix_s: i64) -> String {
    format!("846-{}", unix_s.div_euclid(STOCK_PERIOD_S))
}

/// The whole 846 document for the period of `unix_s`.
pub fn document(world: &World, unix_s: i64, miscount: bool) -> String {
    let taken = unix_s - unix_s.rem_euclid(STOCK_PERIOD_S);
    let local = zoned(ZONE, taken);
    let control = (taken.div_euclid(STOCK_PERIOD_S) % 1_000_000_000) as u64;
    let mut segments: Vec<String> = Vec::new();
    let isa = format!(
        "ISA*00*{:10}*00*{:10}*ZZ*{:15}*ZZ*{:15}*{}*{}*U*00401*{control:09}*0*P*>",
        "",
        "",
        "NORTHWIND",
        "MALLGATE",
        local.strftime("%y%m%d"),
        local.strftime("%H%M"),
    );
    let mut doc = format!("{isa}~");
    segments.push(format!(
        "GS*IB*NORTHWIND*MALLGATE*{}*{}*{control}*X*004010",
        local.strftime("%Y%m%d"),
        local.strftime("%H%M")
    ));
    let mut set = vec![
        "ST*846*0001".to_owned(),
        format!(
            "BIA*00*DD*{}*{}*{}",
            document_number(taken),
            local.strftime("%Y%m%d"),
            local.strftime("%H%M")
        ),
    ];
    let warehouses: Vec<&Location> = world.locations_of(Partner::Northwind).collect();
    let mut lines = 0usize;
    let mut hash: i64 = 0;
    for product in carried(world) {
        lines += 1;
        set.push(format!(
            "LIN*{lines}*UP*{}*VP*{}",
            upc(product),
            vendor_part(product)
        ));
        set.push(format!(
            "PID*F****{}",
            product.title.replace(['*', '~'], " ")
        ));
        let per_location: Vec<(String, i64)> = warehouses
            .iter()
            .map(|l| (location_code(l), available(world, l, product, taken)))
            .collect();
        let total: i64 = per_location.iter().map(|(_, q)| q).sum();
        let on_hand = total + (product.index as i64 % 3);
        set.push(format!("QTY*33*{total}*EA"));
        set.push(format!("QTY*17*{on_hand}*EA"));
        hash += total + on_hand;
        let sdq: Vec<String> = per_location
            .iter()
            .map(|(code, q)| format!("{code}*{q}"))
            .collect();
        set.push(format!("SDQ*EA*92*{}", sdq.join("*")));
        if let Some(date) = restock_date(world, product, taken) {
            set.push(format!("DTM*018*{date}"));
        }
    }
    let declared = if miscount { lines + 1 } else { lines };
    set.push(format!("CTT*{declared}*{hash}"));
    set.push(format!("SE*{}*0001", set.len() + 1));
    segments.extend(set);
    segments.push(format!("GE*1*{control}"));
    segments.push(format!("IEA*1*{control:09}"));
    for s in segments {
        doc.push_str(&s);
        doc.push_str("~\n");
    }
    doc
}

async fn latest(
    State(state): State<AppState>,
    Extension(Drift(drift)): Extension<Drift>,
    signed: Option<Extension<crate::signing::Signed>>,
    headers: HeaderMap,
) -> Response {
    match basic_auth(&headers) {
        Some((user, password)) if user == USERNAME && password == PASSWORD => {}
        // A request whose required signature held is authenticated by it.
        _ if signed.is_some() => {}
        _ => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"northwind-edi\"")],
                "authentication required\n",
            )
                .into_response();
        }
    }
    let now = state.sim.clock.now_s();
    let etag = format!("\"{}\"", document_number(now));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let body = document(&state.sim.world, now, drift);
    let mut response = ([(header::CONTENT_TYPE, "application/edi-x12")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}
