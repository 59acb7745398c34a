//! ParcelPost, a national post modelled on an XML web-tools API: one endpoint,
//! `/ShippingAPI.dll`, `API=TrackV2` or `API=RateV4`, the request XML in the `XML` query
//! parameter, a form field or the POST body, the user id in `USERID` (query, form or the
//! request's `USERID` attribute).
//!
//! Quirks rendered here:
//! - XML only, `text/xml`, every error a 200;
//! - tracking details are prose lines (`Sorting Complete, January 27, 2026, 8:03 am, DES
//!   MOINES, IA 50311`): some without a time or a place, in local time without a zone, the
//!   newest in `TrackSummary` and the rest in `TrackDetail` *not* in chronological order;
//! - an unknown tracking number is a `TrackInfo` whose `TrackSummary` is a sentence;
//! - failures are a top-level `<Error><Number>` (bad user id, unknown API, unreadable
//!   XML); a bad package is an `<Error>` inside its `Package`;
//! - rates take the weight as `<Pounds>` + `<Ounces>` and bill whole pounds rounded up;
//!   `<Postage>` holds `<Rate>10.30</Rate>`; a service that cannot quote says
//!   `<Rate>0.00</Rate>` plus its own `<Error>` inside a successful reply;
//! - service names are HTML escaped twice (`Priority Mail 2-Day&amp;lt;sup&amp;gt;...`).
//!
//! Drift knob: `<Rate>` becomes `<Price>`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use quick_xml::escape::{escape, unescape};

use super::{decimal, form, thousandths, zoned};
use crate::rng::{Rng, label};
use crate::server::{AppState, Drift};
use crate::shipping::{Shipment, Step, TrackEvent, quotes_for_pounds};
use crate::world::Partner;

pub const USER_ID: &str = "PARCELPOSTDEMO1";
/// What an unknown tracking number's summary says.
pub const NOT_FOUND: &str = "The Postal Service could not locate the tracking information for your request. Please verify your tracking number and try again later.";
/// Tracking numbers one request may ask for.
pub const MAX_TRACK_IDS: usize = 10;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ShippingAPI.dll", get(api).post(api))
        .route("/health", get(|| async { "ok" }))
}

/// How ParcelPost words a step. Delivered has several wordings, chosen per parcel.
pub fn phrase(step: Step, tracking_number: &str) -> &'static str {
    match step {
        Step::LabelCreated => "Shipping Label Created, USPS Awaiting Item",
        Step::PickedUp => "Accepted at USPS Origin Facility",
        Step::DepartedFacility => "Departed USPS Regional Facility",
        Step::ArrivedFacility => "Arrived at USPS Regional Facility",
        Step::InTransit => "In Transit to Next Facility",
        Step::OutForDelivery => "Out for Delivery",
        Step::DeliveryAttempted => "Notice Left (No Authorized Recipient Available)",
        Step::AvailableForPickup => "Available for Pickup",
        Step::Delivered if tracking_number.ends_with(['0', '1', '2', '3', '4']) => {
            "Delivered, In/At Mailbox"
        }
        Step::Delivered => "Delivered, Front Door/Porch",
        Step::Exception => "Delivery Exception, Animal Interference",
        Step::ReturnToSender => "Return to Sender",
        Step::Cancelled => "Shipping Label Cancelled",
        Step::Failure => "Undeliverable as Addressed",
        Step::Unmapped => "Package Acceptance Pending",
    }
}

/// One event as a prose line.
pub fn line(shipment: &Shipment, event: &TrackEvent) -> String {
    let local = zoned(event.time_zone, event.unix_s);
    let mut parts = vec![
        phrase(event.step, &shipment.tracking_number).to_owned(),
        local.strftime("%B %-d, %Y").to_string(),
    ];
    if event.has_time {
        parts.push(local.strftime("%-I:%M %P").to_string());
    }
    if let Some(place) = event.place {
        parts.push(place.city().to_uppercase());
        parts.push(format!("{} {}", place.region(), place.postal_code()));
    }
    parts.join(", ")
}

/// The order `TrackDetail` lines come in: every event but the newest, shuffled (seeded by
/// the tracking number, so it repeats).
pub fn detail_order(shipment: &Shipment) -> Vec<usize> {
    let n = shipment.events.len().saturating_sub(1);
    let mut order: Vec<usize> = (0..n).rev().collect();
    let mut r = Rng::derive(0x9a5c, &[label(&shipment.tracking_number)]);
    for i in (1..order.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response()
}

fn error_xml(number: &str, description: &str, source: &str) -> String {
    format!(
        "<Error><Number>{number}</Number><Description>{}</Description><Source>{source}</Source></Error>",
        escape(description)
    )
}

fn top_error(number: &str, description: &str) -> Response {
    xml(error_xml(number, description, "UspsCom::DoAuth"))
}

/// Elements named `name` in `xml`: (attributes text, inner text; empty if self-closing).
fn elements<'a>(xml: &'a str, name: &str) -> Vec<(&'a str, &'a str)> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        if !after.starts_with([' ', '>', '/', '\t', '\n']) {
            rest = after;
            continue;
        }
        let Some(end) = after.find('>') else {
            break;
        };
        let attrs = after[..end].trim_end_matches('/');
        if after[..end].ends_with('/') {
            out.push((attrs, ""));
            rest = &after[end + 1..];
            continue;
        }
        let body = &after[end + 1..];
        let Some(stop) = body.find(&close) else {
            break;
        };
        out.push((attrs, &body[..stop]));
        rest = &body[stop + close.len()..];
    }
    out
}

fn child<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    elements(xml, name).first().map(|(_, inner)| inner.trim())
}

fn attribute(attrs: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let at = attrs.find(&key)?;
    let rest = &attrs[at + key.len()..];
    let value = &rest[..rest.find('"')?];
    unescape(value).ok().map(|v| v.into_owned())
}

async fn api(
    State(state): State<AppState>,
    Extension(Drift(drift)): Extension<Drift>,
    Query(mut q): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    // The request may come as query, as a form, or as a raw XML body.
    let text = String::from_utf8_lossy(&body);
    if text.trim_start().starts_with('<') {
        q.entry("XML".to_owned())
            .or_insert_with(|| text.trim().to_owned());
    } else {
        for (k, v) in form(&body) {
            q.entry(k).or_insert(v);
        }
    }
    let request = q.get("XML").cloned().unwrap_or_default();
    let root_user = elements(&request, "TrackRequest")
        .into_iter()
        .chain(elements(&request, "TrackFieldRequest"))
        .chain(elements(&request, "RateV4Request"))
        .find_map(|(attrs, _)| attribute(attrs, "USERID"));
    let user = q.get("USERID").cloned().or(root_user);
    if user.as_deref() != Some(USER_ID) {
        return top_error(
            "80040B1A",
            "Authorization failure.  Perhaps username and/or password is incorrect.",
        );
    }
    match q.get("API").map(String::as_str) {
        Some("TrackV2") => track(&state, &q, &request),
        Some("RateV4") => rate(&request, drift),
        Some(other) => top_error(
            "80040B19",
            &format!(
                "API Authorization failure. {other} is not a valid API name for this protocol."
            ),
        ),
        None => top_error("80040B19", "API Authorization failure. No API given."),
    }
}

fn track(state: &AppState, q: &BTreeMap<String, String>, request: &str) -> Response {
    let mut ids: Vec<String> = elements(request, "TrackID")
        .into_iter()
        .filter_map(|(attrs, _)| attribute(attrs, "ID"))
        .collect();
    if let Some(list) = q.get("TrackID") {
        ids.extend(
            list.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        );
    }
    if ids.is_empty() {
        return xml(error_xml(
            "80040B19",
            "XML Syntax Error: Please check the XML request to see if it can be parsed.",
            "USPSCOM::DoAuth",
        ));
    }
    if ids.len() > MAX_TRACK_IDS {
        return xml(error_xml(
            "-2147219301",
            "A maximum of 10 tracking numbers may be requested at a time.",
            "clsTrackV2",
        ));
    }
    let mut out = String::from("<TrackResponse>");
    for id in ids {
        out.push_str(&format!("<TrackInfo ID=\"{}\">", escape(id.as_str())));
        match state.sim.world.parcel(Partner::ParcelPost, &id) {
            None => out.push_str(&format!("<TrackSummary>{NOT_FOUND}</TrackSummary>")),
            Some(shipment) => {
                if let Some(newest) = shipment.events.last() {
                    out.push_str(&format!(
                        "<TrackSummary>{}</TrackSummary>",
                        escape(line(shipment, newest).as_str())
                    ));
                }
                for i in detail_order(shipment) {
                    out.push_str(&format!(
                        "<TrackDetail>{}</TrackDetail>",
                        escape(line(shipment, &shipment.events[i]).as_str())
                    ));
                }
            }
        }
        out.push_str("</TrackInfo>");
    }
    out.push_str("</TrackResponse>");
    xml(out)
}

/// A service name as ParcelPost sends it: `™` in `<sup>`, HTML escaped, then escaped
/// again by the XML writer.
pub fn escaped_name(name: &str) -> String {
    let html = name.replace('™', "&lt;sup&gt;&#8482;&lt;/sup&gt;");
    escape(html.as_str()).into_owned()
}

fn is_zip(text: &str) -> bool {
    text.len() == 5 && text.bytes().all(|b| b.is_ascii_digit())
}

fn package_error(id: &str, number: &str, description: &str) -> String {
    format!(
        "<Package ID=\"{}\">{}</Package>",
        escape(id),
        error_xml(number, description, "RateEngineV4;RateV4.ProcessRequest")
    )
}

fn rate(request: &str, drift: bool) -> Response {
    let Some((_, body)) = elements(request, "RateV4Request").into_iter().next() else {
        return top_error(
            "80040B19",
            "XML Syntax Error: Please check the XML request to see if it can be parsed.",
        );
    };
    let mut out = String::from("<RateV4Response>");
    for (attrs, package) in elements(body, "Package") {
        let id = attribute(attrs, "ID").unwrap_or_default();
        let from = child(package, "ZipOrigination").unwrap_or_default();
        let to = child(package, "ZipDestination").unwrap_or_default();
        if !is_zip(from) {
            out.push_str(&package_error(
                &id,
                "-2147219498",
                "Please enter a valid ZIP Code for the sender.",
            ));
            continue;
        }
        if !is_zip(to) {
            out.push_str(&package_error(
                &id,
                "-2147219497",
                "Please enter a valid ZIP Code for the recipient.",
            ));
            continue;
        }
        let pounds = child(package, "Pounds").and_then(|p| p.parse::<i64>().ok());
        let ounces = child(package, "Ounces").map_or(Some(0), thousandths);
        let (Some(pounds), Some(ounces)) = (pounds, ounces) else {
            out.push_str(&package_error(
                &id,
                "-2147218046",
                "Please enter the package weight in Pounds and Ounces.",
            ));
            continue;
        };
        let total_thousandths_oz = pounds * 16_000 + ounces;
        if !(0..=70).contains(&pounds) || total_thousandths_oz <= 0 {
            out.push_str(&package_error(
                &id,
                "-2147218046",
                "The package weight must be greater than 0 and at most 70 pounds.",
            ));
            continue;
        }
        let lbs = (total_thousandths_oz as u64).div_ceil(16_000) as i64;
        out.push_str(&format!(
            "<Package ID=\"{}\"><ZipOrigination>{from}</ZipOrigination><ZipDestination>{to}</ZipDestination><Pounds>{pounds}</Pounds><Ounces>{}</Ounces><Zone>{}</Zone>",
            escape(id.as_str()),
            child(package, "Ounces").map_or("0".to_owned(), |o| escape(o).into_owned()),
            crate::shipping::zone(from, to),
        ));
        let rate_tag = if drift { "Price" } else { "Rate" };
        for quote in quotes_for_pounds(Partner::ParcelPost, from, to, &[lbs]) {
            let (rate, error) = match quote.failed {
                Some(reason) => (
                    "0.00".to_owned(),
                    error_xml("-2147218040", reason, "RateEngineV4"),
                ),
                None => (decimal(quote.total_cents), String::new()),
            };
            out.push_str(&format!(
                "<Postage CLASSID=\"{}\"><MailService>{}</MailService><{rate_tag}>{rate}</{rate_tag}><CommitmentName>{}-Day</CommitmentName>{error}</Postage>",
                quote.service_code,
                escaped_name(quote.service_name),
                quote.transit_days.1,
            ));
        }
        out.push_str("</Package>");
    }
    out.push_str("</RateV4Response>");
    xml(out)
}
