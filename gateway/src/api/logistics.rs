//! `POST /v1/shipping/rates` and `GET /v1/tracking/{carrier}/{tracking_number}`.

use mallgate_connectors::Capability;
use mallgate_schemas::{Record, ShippingRate, ShippingRateRequest, Tracking};
use serde_json::Value;
use serde_json::json;

use super::{Api, Caching, Params, Request, Response, all_failed, envelope, view_of};
use crate::fanout::{self, PlannedCall, SourceResult};
use crate::merge::{answer_currency, rank_rates};
use crate::problem::ApiError;

const MAX_PARCELS: usize = 20;

fn bad_body(pointer: impl Into<String>, detail: impl Into<String>) -> ApiError {
    ApiError::BadBody {
        pointer: pointer.into(),
        detail: detail.into(),
    }
}

/// A JSON number with no fraction (`62.0`) as an integer, at every depth: JSON Schema counts
/// it an integer, and so must the typed read.
fn integral_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                #[allow(clippy::cast_possible_truncation)]
                let i = f as i64;
                *n = serde_json::Number::from(i);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Reads the rate request: JSON only, the documented shape exactly, with the pointer of the
/// first fault.
fn rate_request(req: &Request) -> Result<ShippingRateRequest, ApiError> {
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType {
            detail: format!(
                "the body must be application/json, not `{}`",
                if essence.is_empty() {
                    "(none)"
                } else {
                    essence
                }
            ),
        });
    }
    // The document first, as JSON: the schema decides what is valid (an integer may be
    // written `62.0`; an optional member may be absent but not null), then the typed read.
    let mut value: Value = serde_json::from_slice(&req.body)
        .map_err(|e| bad_body("", format!("malformed JSON: {e}")))?;
    match mallgate_schemas::validate_value(
        mallgate_schemas::UnifiedSchema::ShippingRateRequest,
        &value,
    ) {
        Ok(()) => {}
        Err(mallgate_schemas::SchemaError::Invalid { violations, .. }) => {
            let first = violations.first();
            return Err(bad_body(
                first.map(|v| v.pointer.clone()).unwrap_or_default(),
                first.map(|v| v.reason.clone()).unwrap_or_default(),
            ));
        }
        Err(e) => return Err(bad_body("", e.to_string())),
    }
    integral_numbers(&mut value);
    let request: ShippingRateRequest = serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = e
            .path()
            .iter()
            .map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => format!("/{index}"),
                serde_path_to_error::Segment::Map { key } => {
                    format!("/{}", mallgate_schemas::escape_token(key))
                }
                _ => String::new(),
            })
            .collect::<String>();
        bad_body(pointer, e.into_inner().to_string())
    })?;
    if request.parcels.is_empty() || request.parcels.len() > MAX_PARCELS {
        return Err(bad_body(
            "/parcels",
            format!("give 1 to {MAX_PARCELS} parcels"),
        ));
    }
    for (i, p) in request.parcels.iter().enumerate() {
        if p.weight_g == 0 || p.weight_g > 1_000_000 {
            return Err(bad_body(
                format!("/parcels/{i}/weight_g"),
                "must be from 1 to 1000000 grams",
            ));
        }
    }
    Ok(request)
}

impl Api {
    pub(super) async fn rates(
        &self,
        req: &Request,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        let params = Params::parse(&req.query, &["currency"])?;
        let deadline = self.deadline(&params)?;
        let currency = match params.get("currency") {
            None => None,
            Some(c) if mallgate_connectors::prelude::money::exponent(c).is_some() => Some(c),
            Some(_) => {
                return Err(ApiError::param(
                    "currency",
                    "must be an ISO 4217 code such as EUR",
                ));
            }
        };
        let request = rate_request(req)?;
        let weight_g: u64 = request.parcels.iter().map(|p| u64::from(p.weight_g)).sum();
        let query = json!({
            "from": request.from,
            "to": request.to,
            "parcels": request.parcels,
            "weight_g": weight_g,
        });
        let view = view_of(self);
        let carriers = view.serving(Capability::RatesQuote);
        let any_carrier = !carriers.is_empty();
        // A carrier is asked only for the lanes it declares (a domestic carrier never gets
        // an international quote).
        let calls: Vec<PlannedCall> = carriers
            .into_iter()
            .filter(|c| {
                c.spec()
                    .serves_lane(&request.from.country, &request.to.country)
            })
            .map(|c| PlannedCall::new(c, Capability::RatesQuote, query.clone()))
            .collect();
        if calls.is_empty() && any_carrier {
            // Nobody ships this lane: an answer (no rates), not an outage.
            let none: Vec<ShippingRate> = Vec::new();
            return envelope(req, &none, &[], view.generation(), Caching::NoStore);
        }
        let sources = fanout::run(
            &self.cache,
            &self.health,
            &self.metrics,
            Capability::RatesQuote,
            calls,
            deadline,
            request_id,
        )
        .await;
        if let Some(e) = all_failed("rates.quote", &sources) {
            return Err(e);
        }
        let mut rates: Vec<ShippingRate> = sources
            .iter()
            .filter_map(|s| s.records.as_ref())
            .flat_map(|r| r.records.iter().filter_map(Record::as_shipping_rate))
            .cloned()
            .collect();
        if let Some(answer) = answer_currency(&rates, currency) {
            rank_rates(&mut rates, &answer);
        }
        envelope(req, &rates, &sources, view.generation(), Caching::NoStore)
    }

    pub(super) async fn tracking(
        &self,
        req: &Request,
        carrier: &str,
        number: &str,
        request_id: &str,
    ) -> Result<Response, ApiError> {
        let params = Params::parse(&req.query, &[])?;
        let deadline = self.deadline(&params)?;
        if number.is_empty()
            || number.len() > 64
            || !number
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ApiError::param(
                "tracking_number",
                "must be 1 to 64 letters, digits or dashes",
            ));
        }
        let view = view_of(self);
        let connector = view
            .carrier(carrier)
            .filter(|c| c.serves(Capability::TrackingGet))
            .ok_or_else(|| ApiError::NotFound {
                kind: "carrier",
                detail: format!("no carrier tracks parcels under the code `{carrier}`"),
            })?;
        let query = json!({"tracking_number": number.to_ascii_uppercase(), "carrier": carrier});
        let calls = vec![PlannedCall::new(connector, Capability::TrackingGet, query)];
        let sources = fanout::run(
            &self.cache,
            &self.health,
            &self.metrics,
            Capability::TrackingGet,
            calls,
            deadline,
            request_id,
        )
        .await;
        if let Some(e) = all_failed("tracking.get", &sources) {
            return Err(e);
        }
        let tracking = tracked(&sources, carrier, number)?;
        envelope(
            req,
            &tracking,
            &sources,
            view.generation(),
            Caching::Validated,
        )
    }
}

/// The parcel the one source answered. The carrier's "no such parcel" (its `not_found`
/// rule, a 404) is a 404. A reply that held the parcel but whose record the mapping lost
/// never gets here: the runtime fails such a lookup with `mapping` (a 503 by
/// `all_failed`), and records are typed where they are mapped.
fn tracked(sources: &[SourceResult], carrier: &str, number: &str) -> Result<Tracking, ApiError> {
    sources
        .iter()
        .filter_map(|s| s.records.as_ref())
        .filter(|r| !r.not_found)
        .find_map(|r| r.records.iter().find_map(Record::as_tracking))
        .cloned()
        .ok_or_else(|| ApiError::NotFound {
            kind: "tracking",
            detail: format!("carrier `{carrier}` knows no parcel `{number}`"),
        })
}
