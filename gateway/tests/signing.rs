//! Signed requests end to end: the real gateway signs every request (health probes, GETs
//! with a query, POSTs with a body) and the simulated partners verify each signature with
//! their own, separately written checks. Northwind requires an HMAC over the canonical
//! request (base64, custom header, key id); SwiftShip requires AWS Signature Version 4.
//! A signature made with a key the partner no longer holds is refused, and the source says
//! so; nothing else in the answer changes.

use mallgate_testkit as support;

use mallgate_partner_sim::Partner;
use mallgate_partner_sim::partners::{northwind, swiftship};
use mallgate_partner_sim::signing::SignatureCheck;
use serde_json::{Value, json};
use support::Mall;

fn northwind_hmac(text: String) -> String {
    let signed = text.replace(
        "auth:\n  kind: basic\n  username: mallgate\n  password: secret:northwind-password\n",
        "auth:\n  kind: hmac\n  key_id: mallgate-1\n  secret: secret:northwind-password\n  encoding: base64\n  signature_header: X-NW-Signature\n",
    );
    assert_ne!(signed, text, "Northwind's basic auth was replaced");
    signed
}

fn swiftship_sigv4(text: String) -> String {
    // The whole `auth` block (its token URL carries the replica's port).
    let start = text
        .find("auth:\n  kind: oauth2")
        .expect("SwiftShip uses OAuth2");
    let end = start + text[start..].find("capabilities:").expect("capabilities");
    format!(
        "{}auth:\n  kind: aws_sigv4\n  access_key_id: AKIDMALLGATE\n  secret_access_key: secret:swiftship-client-secret\n  region: us-east-1\n  service: execute-api\n{}",
        &text[..start],
        &text[end..]
    )
}

fn hmac_check(secret: &str) -> SignatureCheck {
    SignatureCheck::Hmac {
        secret: secret.into(),
        algorithm: "sha256".into(),
        encoding: "base64".into(),
        signature_header: "x-nw-signature".into(),
        timestamp_header: "x-timestamp".into(),
        key_id: Some("mallgate-1".into()),
        key_id_header: "x-key-id".into(),
        max_skew_s: 300,
    }
}

fn source<'a>(body: &'a Value, partner: &str) -> &'a Value {
    body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["partner"] == partner))
        .unwrap_or_else(|| panic!("no {partner} source: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_verify_hmac_and_sigv4_signatures_of_every_request() {
    let mall = Mall::start_with(|partner, text| match partner {
        Partner::Northwind => northwind_hmac(text),
        Partner::SwiftShip => swiftship_sigv4(text),
        _ => text,
    })
    .await;
    let sim = &mall.fleet.sim;
    sim.signatures
        .set(Partner::Northwind, Some(hmac_check(northwind::PASSWORD)));
    sim.signatures.set(
        Partner::SwiftShip,
        Some(SignatureCheck::AwsSigv4 {
            access_key_id: "AKIDMALLGATE".into(),
            secret_access_key: swiftship::CLIENT_SECRET.into(),
            session_token: None,
            region: "us-east-1".into(),
            service: "execute-api".into(),
            max_skew_s: 300,
        }),
    );
    let gtins: Vec<String> = northwind::carried(mall.fleet.world())
        .filter_map(|p| p.variants.first().and_then(|v| v.gtin14()))
        .take(2)
        .collect();
    assert_eq!(gtins.len(), 2, "Northwind carries products with GTINs");

    // HMAC: a GET, signed with the secret Northwind holds.
    let a = mall
        .get_owned(format!("/v1/inventory?gtin={}&fulfillment=ship", gtins[0]))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let nw = source(&a.body, "northwind");
    assert_eq!(nw["outcome"], "live", "{nw}");
    assert!(nw["records"].as_u64().unwrap_or(0) > 0, "{nw}");
    assert!(mall.requests(Partner::Northwind, "signature:valid") > 0);
    assert_eq!(mall.requests(Partner::Northwind, "signature:invalid"), 0);

    // SigV4: a POST with a JSON body (its hash and content type signed).
    let rates = mall
        .post_json(
            "/v1/shipping/rates",
            &json!({
                "from": {"postal_code": "10001", "country": "US"},
                "to": {"postal_code": "94103", "country": "US"},
                "parcels": [{"weight_g": 1200}],
            }),
        )
        .await;
    assert_eq!(rates.status, 200, "{}", rates.body);
    let ss = source(&rates.body, "swiftship");
    assert_eq!(ss["outcome"], "live", "{ss}");
    assert!(
        rates.body["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|r| r["carrier"] == "swiftship")),
        "{}",
        rates.body
    );
    assert!(mall.requests(Partner::SwiftShip, "signature:valid") > 0);
    assert_eq!(mall.requests(Partner::SwiftShip, "signature:invalid"), 0);
    assert_eq!(
        mall.fleet.tokens().issued(Partner::SwiftShip),
        0,
        "a signing connector asks for no OAuth2 token"
    );

    // Northwind rotates its key and the gateway still holds the old one: refused, and the
    // source says so (another GTIN: the first answer is cached).
    sim.signatures
        .set(Partner::Northwind, Some(hmac_check("rotated-key")));
    let b = mall
        .get_owned(format!("/v1/inventory?gtin={}&fulfillment=ship", gtins[1]))
        .await;
    let nw = source(&b.body, "northwind");
    assert_ne!(nw["outcome"], "live", "{}", b.body);
    assert!(mall.requests(Partner::Northwind, "signature:invalid") > 0);
}
