//! ParcelPost and SwiftShip over real HTTP, checked against the world's parcels and
//! quotes, with each dialect's quirks and drift knob.

mod support;

use mallgate_partner_sim::partners::{parcelpost, swiftship};
use mallgate_partner_sim::shipping::{self, Shipment, Step, unknown_tracking_number};
use mallgate_partner_sim::{Fleet, Partner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{BLACK_FRIDAY, base, client, control_put, drift, fleet_at, local, xml_texts};

// --- ParcelPost ----------------------------------------------------------------------

async fn pp_track(url: &str, ids: &[&str]) -> String {
    let xml: String = ids
        .iter()
        .map(|id| format!("<TrackID ID=\"{id}\"/>"))
        .collect();
    let r = client()
        .get(format!("{url}/ShippingAPI.dll"))
        .query(&[
            ("API", "TrackV2"),
            (
                "XML",
                &format!(
                    "<TrackRequest USERID=\"{}\">{xml}</TrackRequest>",
                    parcelpost::USER_ID
                ),
            ),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "ParcelPost answers 200 to everything"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/xml"))
    );
    r.text().await.expect("text")
}

fn unescape(text: &str) -> String {
    quick_xml::escape::unescape(text)
        .expect("escaped XML")
        .into_owned()
}

/// Checks a prose line against an event, independently of the simulator's renderer.
fn check_line(line: &str, shipment: &Shipment, index: usize) {
    let event = &shipment.events[index];
    let phrase = parcelpost::phrase(event.step, &shipment.tracking_number);
    let rest = line
        .strip_prefix(phrase)
        .and_then(|r| r.strip_prefix(", "))
        .unwrap_or_else(|| panic!("`{line}` starts with `{phrase}`"));
    let t = local(event.time_zone, event.unix_s);
    let months = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let mut expected = vec![format!(
        "{} {}, {}",
        months[t.month() as usize - 1],
        t.day(),
        t.year()
    )];
    if event.has_time {
        let (hour, half) = match t.hour() {
            0 => (12, "am"),
            h @ 1..=11 => (h, "am"),
            12 => (12, "pm"),
            h => (h - 12, "pm"),
        };
        expected.push(format!("{hour}:{:02} {half}", t.minute()));
    }
    if let Some(place) = event.place {
        expected.push(place.city().to_uppercase());
        expected.push(format!("{} {}", place.region(), place.postal_code()));
    }
    assert_eq!(rest, expected.join(", "), "{}", shipment.tracking_number);
}

#[tokio::test]
async fn parcelpost_tracking_prose_against_the_truth() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let url = base(&fleet, Partner::ParcelPost);
    let parcels: Vec<&Shipment> = fleet
        .world()
        .parcels
        .iter()
        .filter(|s| s.carrier == Partner::ParcelPost)
        .collect();
    let (mut shuffled, mut timeless, mut placeless) = (0, 0, 0);
    for chunk in parcels.chunks(parcelpost::MAX_TRACK_IDS) {
        let ids: Vec<&str> = chunk.iter().map(|s| s.tracking_number.as_str()).collect();
        let body = pp_track(&url, &ids).await;
        let infos: Vec<&str> = body.split("<TrackInfo ").skip(1).collect();
        assert_eq!(infos.len(), chunk.len());
        for (info, shipment) in infos.iter().zip(chunk) {
            assert!(info.starts_with(&format!("ID=\"{}\"", shipment.tracking_number)));
            let summary = xml_texts(info, "TrackSummary");
            assert_eq!(summary.len(), 1);
            check_line(&unescape(&summary[0]), shipment, shipment.events.len() - 1);
            let details: Vec<String> = xml_texts(info, "TrackDetail")
                .iter()
                .map(|d| unescape(d))
                .collect();
            assert_eq!(details.len(), shipment.events.len() - 1);
            // Each detail is one older event, in the documented (shuffled) order.
            let order = parcelpost::detail_order(shipment);
            for (line, index) in details.iter().zip(&order) {
                check_line(line, shipment, *index);
            }
            shuffled += usize::from(order.windows(2).any(|w| w[0] < w[1]));
            timeless += shipment.events.iter().filter(|e| !e.has_time).count();
            placeless += shipment.events.iter().filter(|e| e.place.is_none()).count();
        }
    }
    assert!(shuffled > 0, "details are not in chronological order");
    assert!(timeless > 0 && placeless > 0);

    // Unknown: 200 with a sentence. A bad user id: a top-level <Error>.
    let unknown = unknown_tracking_number(Partner::ParcelPost);
    let body = pp_track(&url, &[&unknown]).await;
    assert_eq!(xml_texts(&body, "TrackSummary"), [parcelpost::NOT_FOUND]);
    let r = client()
        .get(format!("{url}/ShippingAPI.dll"))
        .query(&[
            ("API", "TrackV2"),
            ("USERID", "WRONG"),
            ("TrackID", &unknown),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.expect("text");
    assert!(body.contains("<Error><Number>80040B1A</Number>"), "{body}");
    // The query form of a track request works too.
    let first = parcels[0];
    let r = client()
        .get(format!("{url}/ShippingAPI.dll"))
        .query(&[
            ("API", "TrackV2"),
            ("USERID", parcelpost::USER_ID),
            ("TrackID", &first.tracking_number),
        ])
        .send()
        .await
        .expect("request");
    let body = r.text().await.expect("text");
    assert_eq!(
        xml_texts(&body, "TrackDetail").len(),
        first.events.len() - 1
    );
}

async fn pp_rate(url: &str, packages: &[(&str, &str, u32, &str)]) -> String {
    let xml: String = packages
        .iter()
        .enumerate()
        .map(|(i, (from, to, pounds, ounces))| {
            format!("<Package ID=\"{i}\"><Service>ALL</Service><ZipOrigination>{from}</ZipOrigination><ZipDestination>{to}</ZipDestination><Pounds>{pounds}</Pounds><Ounces>{ounces}</Ounces></Package>")
        })
        .collect();
    let r = client()
        .post(format!(
            "{url}/ShippingAPI.dll?API=RateV4&USERID={}",
            parcelpost::USER_ID
        ))
        .body(format!("<RateV4Request>{xml}</RateV4Request>"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.expect("text")
}

#[tokio::test]
async fn parcelpost_rates_by_pounds_and_ounces_with_partial_failures() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let url = base(&fleet, Partner::ParcelPost);
    // Near (zone 1) and far (zone 8): 2 lb 3.5 oz bills as 3 lb.
    let body = pp_rate(
        &url,
        &[("50309", "60601", 2, "3.5"), ("02108", "98101", 2, "3.5")],
    )
    .await;
    let packages: Vec<&str> = body.split("<Package ").skip(1).collect();
    assert_eq!(packages.len(), 2);
    for (package, (from, to)) in packages
        .iter()
        .zip([("50309", "60601"), ("02108", "98101")])
    {
        let truth = shipping::quotes_for_pounds(Partner::ParcelPost, from, to, &[3]);
        assert_eq!(
            xml_texts(package, "Zone"),
            [shipping::zone(from, to).to_string()]
        );
        let postages: Vec<&str> = package.split("<Postage ").skip(1).collect();
        assert_eq!(postages.len(), truth.len());
        for (postage, quote) in postages.iter().zip(&truth) {
            assert!(postage.starts_with(&format!("CLASSID=\"{}\"", quote.service_code)));
            // Escaped twice: XML, then HTML inside it.
            let service = &xml_texts(postage, "MailService")[0];
            assert!(service.contains("&amp;lt;sup&amp;gt;&amp;#8482;&amp;lt;/sup&amp;gt;"));
            let rate = &xml_texts(postage, "Rate")[0];
            match quote.failed {
                None => {
                    assert_eq!(
                        *rate,
                        format!("{}.{:02}", quote.total_cents / 100, quote.total_cents % 100)
                    );
                    assert!(!postage.contains("<Error>"));
                }
                Some(reason) => {
                    assert_eq!(rate, "0.00", "a failed service shows 0.00");
                    assert_eq!(xml_texts(postage, "Description"), [reason]);
                }
            }
        }
    }
    assert!(
        body.matches("<Rate>0.00</Rate>").count() == 1,
        "Express fails far away only"
    );

    // A bad package is an error inside it; the others still quote.
    let body = pp_rate(
        &url,
        &[("5030", "60601", 1, "0"), ("50309", "60601", 1, "0")],
    )
    .await;
    let packages: Vec<&str> = body.split("<Package ").skip(1).collect();
    assert!(packages[0].contains("<Error><Number>-2147219498</Number>"));
    assert_eq!(packages[1].matches("<Postage ").count(), 3);

    // Unreadable XML: a top-level error.
    let r = client()
        .post(format!(
            "{url}/ShippingAPI.dll?API=RateV4&USERID={}",
            parcelpost::USER_ID
        ))
        .body("not xml")
        .send()
        .await
        .expect("request");
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("<Error><Number>80040B19</Number>")
    );

    // Drift: <Rate> becomes <Price>.
    drift(&fleet, Partner::ParcelPost, 1).await;
    let drifted = fleet.url(Partner::ParcelPost, 1).expect("replica 1");
    let body = pp_rate(&drifted, &[("50309", "60601", 1, "0")]).await;
    assert!(body.contains("<Price>") && !body.contains("<Rate>"));
}

// --- SwiftShip -----------------------------------------------------------------------

async fn swift_token(fleet: &Fleet) -> (String, String) {
    let r = client()
        .post(format!(
            "{}/security/v1/oauth/token",
            base(fleet, Partner::SwiftShip)
        ))
        .basic_auth(swiftship::CLIENT_ID, Some(swiftship::CLIENT_SECRET))
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    (
        body["access_token"].as_str().expect("token").to_owned(),
        body["expires_in"].as_str().expect("a string").to_owned(),
    )
}

async fn swift_track(url: &str, token: &str, number: &str) -> reqwest::Response {
    client()
        .get(format!("{url}/api/track/v1/details/{number}"))
        .bearer_auth(token)
        .header("transId", format!("t-{number}"))
        .header("transactionSrc", "mallgate")
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn swiftship_tracking_against_the_truth() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let url = base(&fleet, Partner::SwiftShip);
    let (token, expires_in) = swift_token(&fleet).await;
    assert_eq!(expires_in, "3600");
    let (mut ties, mut with_offset, mut without_offset, mut same_type) = (0, 0, 0, false);
    for shipment in fleet
        .world()
        .parcels
        .iter()
        .filter(|s| s.carrier == Partner::SwiftShip)
    {
        let r = swift_track(&url, &token, &shipment.tracking_number).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["transid"],
            format!("t-{}", shipment.tracking_number).as_str()
        );
        let body: Value = r.json().await.expect("json");
        let package = &body["trackResponse"]["shipment"][0]["package"][0];
        assert_eq!(package["trackingNumber"], json!(shipment.tracking_number));
        let activity = package["activity"].as_array().expect("activity");
        assert_eq!(activity.len(), shipment.events.len());
        // Newest first.
        for (a, event) in activity.iter().zip(shipment.events.iter().rev()) {
            let (kind, code, _) = swiftship::code(event.step);
            assert_eq!(a["status"]["type"], kind);
            assert_eq!(a["status"]["code"], code);
            let t = local(event.time_zone, event.unix_s);
            assert_eq!(
                a["date"],
                format!("{:04}{:02}{:02}", t.year(), t.month(), t.day()).as_str()
            );
            assert_eq!(
                a["time"],
                format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second()).as_str()
            );
            match a.get("gmtOffset").and_then(Value::as_str) {
                Some(offset) => {
                    assert!(shipment.with_offset);
                    // Local time minus the offset is the instant.
                    let stamp = format!(
                        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{offset}",
                        t.year(),
                        t.month(),
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    );
                    let instant: jiff::Timestamp = stamp.parse().expect("offset time");
                    assert_eq!(instant.as_second(), event.unix_s);
                    with_offset += 1;
                }
                None => {
                    assert!(!shipment.with_offset);
                    without_offset += 1;
                }
            }
            match event.place {
                Some(place) => assert_eq!(
                    a["location"]["address"]["city"],
                    place.city().to_uppercase().as_str()
                ),
                None => assert!(a.get("location").is_none()),
            }
        }
        ties += usize::from(
            activity
                .windows(2)
                .any(|w| w[0]["date"] == w[1]["date"] && w[0]["time"] == w[1]["time"]),
        );
        let kinds: Vec<&str> = shipment
            .events
            .iter()
            .map(|e| swiftship::code(e.step).0)
            .collect();
        same_type |= shipment.events.len() >= 2
            && shipment.events[0].step == Step::LabelCreated
            && shipment.events[1].step == Step::PickedUp
            && kinds[0] == kinds[1];
    }
    assert!(ties > 0, "several events share a timestamp");
    assert!(with_offset > 0 && without_offset > 0, "gmtOffset sometimes");
    assert!(same_type, "label created and picked up share type I");

    // Unknown: 200 with TW0001. Malformed: 400.
    let unknown = unknown_tracking_number(Partner::SwiftShip);
    let r = swift_track(&url, &token, &unknown).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["trackResponse"]["shipment"][0]["warnings"][0]["code"],
        "TW0001"
    );
    assert_eq!(
        swift_track(&url, &token, "NOT-A-NUMBER").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn swiftship_auth_headers_expiry_and_drift() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let url = base(&fleet, Partner::SwiftShip);
    let number = fleet
        .world()
        .parcels
        .iter()
        .find(|s| s.carrier == Partner::SwiftShip)
        .expect("a parcel")
        .tracking_number
        .clone();
    let r = client()
        .get(format!("{url}/api/track/v1/details/{number}"))
        .header("transId", "t")
        .header("transactionSrc", "m")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (token, _) = swift_token(&fleet).await;
    let r = client()
        .get(format!("{url}/api/track/v1/details/{number}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "transId is required");

    control_put(
        &fleet,
        "/__sim/partners/swiftship/auth",
        json!({"token_ttl_s": 30}),
    )
    .await;
    let (short, expires_in) = swift_token(&fleet).await;
    assert_eq!(expires_in, "30");
    assert_eq!(
        swift_track(&url, &short, &number).await.status(),
        StatusCode::OK
    );
    fleet.clock().advance(31);
    assert_eq!(
        swift_track(&url, &short, &number).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Revocation through the control API.
    let (fresh, _) = swift_token(&fleet).await;
    let r = client()
        .post(format!(
            "http://{}/__sim/partners/swiftship/auth/revoke",
            fleet.control_addr()
        ))
        .send()
        .await
        .expect("control");
    let view: Value = r.json().await.expect("json");
    assert_eq!(view["tokens_issued"], 3);
    assert_eq!(
        swift_track(&url, &fresh, &number).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Drift moves the detailed code.
    drift(&fleet, Partner::SwiftShip, 1).await;
    let (token, _) = swift_token(&fleet).await;
    let other = fleet.url(Partner::SwiftShip, 1).expect("replica 1");
    let body: Value = swift_track(&other, &token, &number)
        .await
        .json()
        .await
        .expect("json");
    let status = &body["trackResponse"]["shipment"][0]["package"][0]["activity"][0]["status"];
    assert!(status.get("code").is_none() && status.get("statusCode").is_some());
}

#[tokio::test]
async fn swiftship_rates_with_units_and_money_strings() {
    let fleet = fleet_at(BLACK_FRIDAY).await;
    let url = base(&fleet, Partner::SwiftShip);
    let (token, _) = swift_token(&fleet).await;
    let rate = |body: Value| {
        let url = url.clone();
        let token = token.clone();
        async move {
            client()
                .post(format!("{url}/api/rating/v2/Shop"))
                .bearer_auth(token)
                .header("transId", "rate-1")
                .header("transactionSrc", "mallgate")
                .json(&body)
                .send()
                .await
                .expect("request")
        }
    };
    let shipment = |packages: Value| {
        json!({"RateRequest": {"Shipment": {
            "Shipper": {"Address": {"PostalCode": "50309", "CountryCode": "US"}},
            "ShipTo": {"Address": {"PostalCode": "10001", "CountryCode": "US"}},
            "Package": packages,
        }}})
    };
    // 1.25 KGS and 3 LBS: billed 3 lb + 3 lb.
    let r = rate(shipment(json!([
        {"PackageWeight": {"UnitOfMeasurement": {"Code": "KGS"}, "Weight": "1.25"}},
        {"PackageWeight": {"UnitOfMeasurement": {"Code": "LBS"}, "Weight": "3"}},
    ])))
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    let truth = shipping::quotes_for_pounds(Partner::SwiftShip, "50309", "10001", &[3, 3]);
    let rated = body["RateResponse"]["RatedShipment"]
        .as_array()
        .expect("rated");
    assert_eq!(rated.len(), truth.len());
    let money = |cents: i64| json!({"CurrencyCode": "USD", "MonetaryValue": format!("{}.{:02}", cents / 100, cents % 100)});
    for (r, q) in rated.iter().zip(&truth) {
        assert_eq!(r["Service"]["Code"], q.service_code);
        assert_eq!(r["TotalCharges"], money(q.total_cents));
        assert_eq!(r["TransportationCharges"], money(q.base_cents));
        assert_eq!(
            r["ItemizedCharges"][0]["MonetaryValue"],
            money(q.fuel_cents)["MonetaryValue"]
        );
        assert_eq!(r["BillingWeight"]["Weight"], "6.0");
        let days = if q.guaranteed {
            &r["GuaranteedDelivery"]["BusinessDaysInTransit"]
        } else {
            &r["EstimatedArrival"]["BusinessDaysInTransit"]
        };
        assert_eq!(*days, json!(q.transit_days.1.to_string()));
    }
    // One package as an object.
    let r = rate(shipment(
        json!({"PackageWeight": {"UnitOfMeasurement": {"Code": "LBS"}, "Weight": "3"}}),
    ))
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Unknown unit, bad zip: 400 with the carrier's error shape.
    let r = rate(shipment(
        json!([{"PackageWeight": {"UnitOfMeasurement": {"Code": "STONE"}, "Weight": "3"}}]),
    ))
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["response"]["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("STONE"))
    );
}
