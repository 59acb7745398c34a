//! Partners cannot act as other partners: identity is the gateway's, not the map's, and a
//! connector's kind, merge priority and carrier codes are the operator's grants. Tried as
//! a partner would, with nothing but its own admin token.

use mallgate_testkit as support;

use reqwest::Method;
use serde_json::Value;
use support::Mall;
use support::admin::{admin_mall, admin_send, connector_text, serving};

const VOLTMART: &str = "voltmart-token-for-identity-1";
const THREADLINE: &str = "threadline-token-for-ident-1";

async fn mall() -> Mall {
    admin_mall(
        &[
            ("partner:voltmart", VOLTMART),
            ("partner:threadline", THREADLINE),
        ],
        |_| {},
    )
    .await
}

async fn put(mall: &Mall, id: &str, token: &str, text: String) -> (u16, Value) {
    let headers = match serving(mall, id) {
        Some(v) => vec![("if-match", format!("\"{id}-v{v}\""))],
        None => Vec::new(),
    };
    admin_send(
        mall,
        Method::PUT,
        &format!("/admin/v1/connectors/{id}"),
        token,
        &headers,
        Some(text),
    )
    .await
}

fn pointers(body: &Value) -> Vec<&str> {
    body["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pointer"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_kind_priority_and_codes_are_refused_with_pointer_and_reason() {
    let mall = mall().await;
    // Voltmart as the highest-priority supplier, to win merged titles.
    let supplier = connector_text(&mall, "voltmart.yaml").replacen(
        "kind: retailer",
        "kind: supplier\npriority: 0",
        1,
    );
    let (status, body) = put(&mall, "voltmart", VOLTMART, supplier).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(pointers(&body), ["/kind", "/priority"], "{body}");
    assert!(body["problems"][0]["line"].is_u64(), "{body}");
    assert!(
        body["problems"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not granted kind `supplier`")),
        "{body}"
    );
    // Threadline as a carrier answering for UPS and FedEx tracking numbers.
    let carrier = connector_text(&mall, "swiftship.yaml")
        .replace("id: swiftship", "id: threadline-parcels")
        .replace("partner: swiftship", "partner: threadline")
        .replace("codes: [swiftship, swift]", "codes: [ups, fedex]");
    let (status, body) = put(&mall, "threadline-parcels", THREADLINE, carrier).await;
    assert_eq!(status, 422, "{body}");
    let refused = pointers(&body);
    assert!(refused.contains(&"/kind"), "{body}");
    assert!(
        refused.contains(&"/codes/0") && refused.contains(&"/codes/1"),
        "{body}"
    );
    let answer = mall.get("/v1/tracking/ups/1Z999AA10123456784").await;
    assert_eq!(
        answer.status, 404,
        "no connector answers for ups: {}",
        answer.body
    );
    // What the grant allows lands: Voltmart ranking itself lower than a retailer's default.
    let lower = connector_text(&mall, "voltmart.yaml").replacen(
        "kind: retailer",
        "kind: retailer\npriority: 90",
        1,
    );
    let (status, body) = put(&mall, "voltmart", VOLTMART, lower).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_provenance_and_sellers_are_dropped() {
    let mall = mall().await;
    // Voltmart's search map claims Threadline: its provenance, its seller, its offer ids.
    // (The provenance comes from the connector's shared `definitions`.)
    let text = connector_text(&mall, "voltmart.yaml");
    let spoof = text
        .replace(
            "def sku_provenance: $provenance + {source_ref: (.sku | tostring)};",
            "def sku_provenance: $provenance + {partner_id: \"threadline\", source_ref: (.sku | tostring)};",
        )
        .replace(
            "seller: {id: \"voltmart\", name: \"Voltmart\"}",
            "seller: {id: \"threadline\", name: \"Threadline\"}",
        );
    assert_eq!(
        spoof.matches("threadline").count(),
        text.matches("threadline").count() + 2,
        "both spoofs applied"
    );
    let (status, body) = put(&mall, "voltmart", VOLTMART, spoof).await;
    assert_eq!(status, 200, "the document is valid: {body}");
    let answer = mall.get("/v1/products?q=headphones&limit=50").await;
    assert_eq!(answer.status, 200);
    let source = answer.body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["partner"] == "voltmart"))
        .cloned()
        .expect("voltmart asked");
    // Every record was dropped, so the source failed as a mapping fault, not `live`.
    assert_eq!(source["outcome"], "failed", "{source}");
    assert_eq!(source["error"]["code"], "mapping", "{source}");
    assert!(
        source["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("identity")),
        "{source}"
    );
    // No offer anywhere claims to be Threadline's unless Threadline's connector made it.
    for product in answer.body["data"].as_array().into_iter().flatten() {
        for variant in product["variants"].as_array().into_iter().flatten() {
            for offer in variant["offers"].as_array().into_iter().flatten() {
                let claims_threadline = offer["seller"]["id"] == "threadline"
                    || offer["provenance"]["partner_id"] == "threadline";
                if claims_threadline {
                    assert_eq!(offer["provenance"]["connector_id"], "threadline", "{offer}");
                }
                assert_ne!(offer["provenance"]["connector_id"], "voltmart", "{offer}");
            }
        }
    }
}
