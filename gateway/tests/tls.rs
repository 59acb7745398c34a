//! The mall over TLS to its partners: every simulated partner serves HTTPS with a
//! certificate from a CA generated here. Connectors that trust the CA through `tls.ca`
//! answer live, and their health probes pass over the same TLS; the one connector that
//! does not (Threadline) is a failed source with the `tls` code and a plain reason, and
//! its probes say why — the frontend still gets a 200 from everyone else.

use mallgate_testkit as support;

use mallgate_partner_sim::pki::{Alpn, Leaf, Pki};
use mallgate_partner_sim::{FleetConfig, Partner};
use support::Mall;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_partners_are_live_and_an_untrusted_one_fails_with_tls() {
    let pki = Pki::generate("partner CA").expect("pki");
    let ca = std::env::temp_dir().join(format!(
        "mallgate-tls-ca-{}-{:x}.pem",
        std::process::id(),
        mallgate::cursor::random_u64()
    ));
    std::fs::write(&ca, pki.ca_pem()).expect("write the CA");
    let trust = format!("tls:\n  ca: file:{}\n", ca.display());
    let mall = Mall::start_fleet(
        FleetConfig {
            tls: Some(
                pki.server_config(&Leaf::Good, None, Alpn::Both)
                    .expect("config"),
            ),
            ..FleetConfig::default()
        },
        |partner, text| {
            assert!(
                text.contains("https://127.0.0.1:"),
                "the fleet serves https"
            );
            if partner == Partner::Threadline {
                text
            } else {
                text.replacen("\ncapabilities:\n", &format!("\n{trust}capabilities:\n"), 1)
            }
        },
        |_| {},
    )
    .await;

    let answer = mall.get("/v1/products?q=tv").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.outcome("voltmart"), Some("live"), "{}", answer.body);
    let threadline = answer.body["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["partner"] == "threadline"))
        .cloned()
        .expect("threadline is a source");
    assert_eq!(threadline["outcome"], "failed", "{threadline}");
    assert_eq!(threadline["error"]["code"], "tls", "{threadline}");
    let message = threadline["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("unknown issuer"), "{message}");

    // Health probes go through the connectors' own stacks, with their TLS identity.
    mall.wait_until_probed().await;
    for c in &mall.gateway.api.registry.load().connectors {
        for route in c.connector.routes() {
            let probe = route.state.report(0, 0, false).last_probe.expect("probed");
            if c.partner() == "threadline" {
                let error = probe.error.unwrap_or_default();
                assert!(!probe.ok && error.contains("unknown issuer"), "{error}");
            } else {
                assert!(probe.ok, "{}: {:?}", c.id(), probe.error);
            }
        }
    }
    let _ = std::fs::remove_file(&ca);
}
