//! SwiftShip, an express carrier modelled on a UPS/FedEx-style REST API.
//!
//! Quirks rendered here:
//! - OAuth2 client credentials at `POST /security/v1/oauth/token` (HTTP Basic client
//!   authentication, form `grant_type=client_credentials`); 3600 s tokens on the simulated
//!   clock (the `auth` knob shortens them), `expires_in` as a *string*;
//! - `transId` and `transactionSrc` headers required, `transId` echoed;
//! - deep nesting `trackResponse.shipment[].package[].activity[]`, newest events first,
//!   several events can share a timestamp; `date: "20261123"` and `time: "063800"` in
//!   local time, with `gmtOffset` for some parcels only;
//! - a coarse status `type` (I, D, X, M) plus a detailed `code` ([`code`]): label created
//!   and picked up share type I, so the code decides;
//! - an unknown tracking number is HTTP 200 with warning `TW0001`;
//! - weights as strings with units `LBS`/`KGS`; money as `{CurrencyCode, MonetaryValue}`
//!   strings; billing in whole pounds, rounded up per package; one package may be sent as
//!   an object instead of an array.
//!
//! Drift knob: `activity[].status.code` becomes `activity[].status.statusCode` only (the
//! detailed code moves).

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::{basic_auth, bearer, decimal, form, thousandths, zoned};
use crate::server::{AppState, Drift, TokenCheck};
use crate::shipping::{Shipment, Step, TrackEvent, quotes_for_pounds};
use crate::world::Partner;

pub const CLIENT_ID: &str = "swiftship-demo-client";
pub const CLIENT_SECRET: &str = "swiftship-demo-secret";

pub fn router() -> Router<AppState> {
    let api = Router::new()
        .route("/api/track/v1/details/{number}", get(track))
        .route("/api/rating/v2/Shop", post(rate))
        .route_layer(axum::middleware::from_fn(guard));
    Router::new()
        .route("/security/v1/oauth/token", post(token))
        .route("/health", get(|| async { "ok" }))
        .merge(api)
}

/// How SwiftShip codes a step: (type, code, description).
pub fn code(step: Step) -> (&'static str, &'static str, &'static str) {
    match step {
        Step::LabelCreated => (
            "I",
            "MP",
            "Shipper created a label, SwiftShip has not received the package yet.",
        ),
        Step::PickedUp => ("I", "PU", "Pickup Scan"),
        Step::DepartedFacility => ("I", "DP", "Departed from Facility"),
        Step::ArrivedFacility => ("I", "AR", "Arrived at Facility"),
        Step::InTransit => ("I", "OR", "On the Way"),
        Step::OutForDelivery => ("I", "OT", "Out For Delivery Today"),
        Step::DeliveryAttempted => ("X", "DA", "Delivery attempted. Customer not available."),
        Step::AvailableForPickup => (
            "I",
            "AP",
            "Delivery rescheduled to a SwiftShip Access Point for pickup",
        ),
        Step::Delivered => ("D", "DL", "Delivered"),
        Step::Exception => (
            "X",
            "X1",
            "Severe weather conditions have delayed delivery.",
        ),
        Step::ReturnToSender => ("X", "RS", "Returning to Sender"),
        Step::Cancelled => ("M", "MV", "Shipment voided by the shipper"),
        Step::Failure => ("X", "LD", "The package was lost or destroyed in transit"),
        Step::Unmapped => ("I", "ZR", "Clearance processing"),
    }
}

fn problem(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"response": {"errors": [{"code": code, "message": message}]}})),
    )
        .into_response()
}

async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match basic_auth(&headers) {
        Some((id, secret)) if id == CLIENT_ID && secret == CLIENT_SECRET => {}
        _ => {
            return problem(StatusCode::UNAUTHORIZED, "10401", "ClientId is Invalid");
        }
    }
    if form(&body).get("grant_type").map(String::as_str) != Some("client_credentials") {
        return problem(
            StatusCode::BAD_REQUEST,
            "10400",
            "Invalid/Missing grant_type",
        );
    }
    let now = state.sim.clock.now_s();
    let (token, ttl) = state.sim.tokens.issue(Partner::SwiftShip, now);
    Json(json!({
        "token_type": "Bearer",
        "issued_at": (now * 1000).to_string(),
        "client_id": CLIENT_ID,
        "access_token": token,
        "expires_in": ttl.to_string(),
        "status": "approved",
    }))
    .into_response()
}

async fn guard(
    Extension(state): Extension<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, Response> {
    let check = bearer(req.headers()).map_or(TokenCheck::Unknown, |t| {
        state
            .sim
            .tokens
            .check(Partner::SwiftShip, t, state.sim.clock.now_s())
    });
    // A request whose required signature held is authenticated by it.
    let signed = req.extensions().get::<crate::signing::Signed>().is_some();
    if check != TokenCheck::Valid && !signed {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "250002",
            "Invalid Authentication Information.",
        ));
    }
    for required in ["transid", "transactionsrc"] {
        if req
            .headers()
            .get(required)
            .is_none_or(|v| v.as_bytes().is_empty())
        {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "250003",
                &format!("Missing header: {required}"),
            ));
        }
    }
    Ok(next.run(req).await)
}

/// The weight a parcel's tracking shows: LBS for most, KGS for every third.
pub fn weight(shipment: &Shipment) -> (&'static str, String) {
    let n = shipment
        .tracking_number
        .bytes()
        .last()
        .map_or(0, |b| b.wrapping_sub(b'0'));
    if n.is_multiple_of(3) {
        (
            "KGS",
            format!("{:.2}", f64::from(shipment.weight_g) / 1000.0),
        )
    } else {
        (
            "LBS",
            format!("{:.2}", f64::from(shipment.weight_g) / 453.592_37),
        )
    }
}

fn activity(shipment: &Shipment, event: &TrackEvent, drift: bool) -> Value {
    let local = zoned(event.time_zone, event.unix_s);
    let (kind, code, description) = code(event.step);
    let status = if drift {
        json!({"type": kind, "description": description, "statusCode": code})
    } else {
        json!({"type": kind, "description": description, "code": code})
    };
    let mut a = json!({
        "status": status,
        "date": local.strftime("%Y%m%d").to_string(),
        "time": local.strftime("%H%M%S").to_string(),
    });
    if shipment.with_offset {
        a["gmtOffset"] = json!(local.strftime("%:z").to_string());
    }
    if let Some(place) = event.place {
        a["location"] = json!({"address": {
            "city": place.city().to_uppercase(),
            "stateProvince": place.region(),
            "postalCode": place.postal_code(),
            "country": "US",
            "countryCode": "US",
        }});
    }
    a
}

/// A parcel's tracking as SwiftShip renders it.
pub fn render(shipment: &Shipment, drift: bool) -> Value {
    let activity: Vec<Value> = shipment
        .events
        .iter()
        .rev()
        .map(|e| activity(shipment, e, drift))
        .collect();
    let (unit, weight) = weight(shipment);
    let current = shipment.events.last().map(|e| code(e.step));
    json!({"trackResponse": {"shipment": [{
        "inquiryNumber": shipment.tracking_number,
        "package": [{
            "trackingNumber": shipment.tracking_number,
            "activity": activity,
            "currentStatus": current.map(|(_, c, d)| json!({"code": c, "description": d})),
            "weight": {"unitOfMeasurement": unit, "weight": weight},
            "service": {"code": "003", "description": "SwiftShip Ground"},
        }],
    }]}})
}

async fn track(
    State(state): State<AppState>,
    Extension(Drift(drift)): Extension<Drift>,
    Path(number): Path<String>,
) -> Response {
    let well_formed = number.len() == 18
        && number.starts_with("1Z")
        && number.bytes().all(|b| b.is_ascii_alphanumeric());
    if !well_formed {
        return problem(StatusCode::BAD_REQUEST, "TV0001", "Invalid inquiry number");
    }
    match state.sim.world.parcel(Partner::SwiftShip, &number) {
        Some(shipment) => Json(render(shipment, drift)).into_response(),
        None => Json(json!({"trackResponse": {"shipment": [{
            "inquiryNumber": number,
            "package": [],
            "warnings": [{"code": "TW0001", "message": "Tracking Information Not Found"}],
        }]}}))
        .into_response(),
    }
}

fn money(cents: i64, currency: &str) -> Value {
    json!({"CurrencyCode": currency, "MonetaryValue": decimal(cents)})
}

/// The currency SwiftShip bills a shipper in (its country's), and the fixed rate from US
/// cents, in hundredths: a shipment from Germany is quoted in EUR.
pub fn billing_currency(country: &str) -> (&'static str, i64) {
    match country {
        "CA" => ("CAD", 137),
        "GB" => ("GBP", 79),
        "AT" | "BE" | "DE" | "ES" | "FI" | "FR" | "IE" | "IT" | "NL" | "PT" => ("EUR", 92),
        _ => ("USD", 100),
    }
}

/// A package's billable pounds from `{UnitOfMeasurement: {Code}, Weight: "2.5"}`: whole
/// pounds rounded up, at least one.
fn billable_pounds(package: &Value) -> Result<i64, String> {
    let weight = &package["PackageWeight"];
    let text = weight["Weight"]
        .as_str()
        .ok_or("PackageWeight.Weight must be a string")?;
    let milli = thousandths(text).ok_or_else(|| format!("`{text}` is not a weight"))?;
    let pounds = match weight["UnitOfMeasurement"]["Code"].as_str() {
        Some("LBS") => ((milli + 999) / 1000).max(1),
        Some("KGS") => {
            let grams = u32::try_from(milli).map_err(|_| format!("`{text}` KGS is too heavy"))?;
            crate::shipping::billable_pounds(grams)
        }
        Some(other) => return Err(format!("unit `{other}` is not LBS or KGS")),
        None => return Err("PackageWeight.UnitOfMeasurement.Code is required".to_owned()),
    };
    if milli == 0 || pounds > 150 {
        return Err("a package weighs more than 0 and at most 150 LBS".to_owned());
    }
    Ok(pounds)
}

async fn rate(Json(body): Json<Value>) -> Response {
    let shipment = &body["RateRequest"]["Shipment"];
    let zip = |who: &str| {
        shipment[who]["Address"]["PostalCode"]
            .as_str()
            .filter(|z| z.len() >= 5 && z.bytes().take(5).all(|b| b.is_ascii_digit()))
            .map(|z| z[..5].to_owned())
    };
    let (Some(from), Some(to)) = (zip("Shipper"), zip("ShipTo")) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "111285",
            "The postal code is invalid for the shipper or the recipient.",
        );
    };
    // One package may come as an object rather than an array.
    let packages: Vec<&Value> = match &shipment["Package"] {
        Value::Array(list) => list.iter().collect(),
        Value::Object(_) => vec![&shipment["Package"]],
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "111100",
                "Shipment.Package is required",
            );
        }
    };
    let mut pounds = Vec::new();
    for p in &packages {
        match billable_pounds(p) {
            Ok(lbs) => pounds.push(lbs),
            Err(e) => return problem(StatusCode::BAD_REQUEST, "111057", &e),
        }
    }
    if pounds.is_empty() {
        return problem(
            StatusCode::BAD_REQUEST,
            "111100",
            "Shipment.Package is required",
        );
    }
    let billed: i64 = pounds.iter().sum();
    let (currency, rate) = billing_currency(
        shipment["Shipper"]["Address"]["CountryCode"]
            .as_str()
            .unwrap_or("US"),
    );
    let convert = |cents: i64| (cents * rate + 50) / 100;
    let rated: Vec<Value> = quotes_for_pounds(Partner::SwiftShip, &from, &to, &pounds)
        .into_iter()
        .map(|q| {
            let mut r = json!({
                "Service": {"Code": q.service_code, "Description": q.service_name},
                "BillingWeight": {"UnitOfMeasurement": {"Code": "LBS", "Description": "Pounds"}, "Weight": format!("{billed}.0")},
                "TransportationCharges": money(convert(q.base_cents), currency),
                "ItemizedCharges": [{"Code": "375", "Description": "FUEL SURCHARGE", "CurrencyCode": currency, "MonetaryValue": decimal(convert(q.fuel_cents))}],
                "ServiceOptionsCharges": money(0, currency),
                // In USD the carrier's own total; converted, the sum of the converted parts.
                "TotalCharges": money(if rate == 100 { q.total_cents } else { convert(q.base_cents) + convert(q.fuel_cents) }, currency),
            });
            let days = q.transit_days.1.to_string();
            if q.guaranteed {
                r["GuaranteedDelivery"] = json!({"BusinessDaysInTransit": days, "DeliveryByTime": "10:30 A.M."});
            } else {
                r["EstimatedArrival"] = json!({"BusinessDaysInTransit": days});
            }
            r
        })
        .collect();
    Json(json!({"RateResponse": {
        "Response": {"ResponseStatus": {"Code": "1", "Description": "Success"}},
        "RatedShipment": rated,
    }}))
    .into_response()
}
