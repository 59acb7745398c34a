//! Partners over real TLS on loopback: the simulator serves its replicas with certificates
//! from a CA generated here (`rcgen`), and the example connectors call them through rustls.
//! Trusted through `tls.ca` a partner is live, over HTTP/2 when it offers it; an untrusted,
//! expired or wrong-name certificate fails with its own `tls` error and a plain reason; a
//! partner requiring a client certificate refuses a connector without one and answers one
//! with it; no key or secret ever shows in an error or a `Debug`.

#[path = "support/fleet.rs"]
#[allow(dead_code)]
mod fleet;

use mallgate_connectors::spec::ConnectorSpec;
use mallgate_connectors::{Capability, ConnectorError, Owner};
use mallgate_partner_sim::pki::{Alpn, Leaf, Pki};
use mallgate_partner_sim::{FleetConfig, Partner};
use serde_json::json;

use fleet::{Harness, deadline};

/// A fleet serving TLS with `config`.
async fn tls_fleet(config: std::sync::Arc<rustls::ServerConfig>) -> Harness {
    Harness::start_with(FleetConfig {
        seed: 7,
        replicas: 2,
        tls: Some(config),
        ..FleetConfig::default()
    })
    .await
}

/// The example connector of `partner`, with a `tls` block.
fn with_tls(harness: &Harness, partner: Partner, tls: &str) -> String {
    let text = harness.text(partner);
    assert!(
        text.contains("https://127.0.0.1:"),
        "the fleet serves https"
    );
    text.replacen(
        "\ncapabilities:\n",
        &format!("\ntls:\n{tls}capabilities:\n"),
        1,
    )
}

fn connector(
    harness: &Harness,
    partner: Partner,
    text: &str,
) -> mallgate_connectors::runtime::Connector {
    mallgate_connectors::runtime::connector_from_spec(
        text,
        1,
        Owner::Partner(partner.id().to_owned()),
        harness.resources(partner),
        harness.secrets.clone(),
        std::sync::Arc::clone(&harness.pool),
    )
    .expect("the connector loads")
}

async fn search(
    connector: &mallgate_connectors::runtime::Connector,
) -> Result<mallgate_connectors::runtime::CallOutput, ConnectorError> {
    connector
        .call(
            Capability::CatalogSearch,
            &json!({"q": "tv", "limit": 5}),
            "req-tls",
            deadline(),
        )
        .await
}

fn http2_requests(harness: &Harness, partner: Partner) -> u64 {
    (0..2)
        .map(|r| {
            harness
                .fleet
                .replica(partner, r)
                .expect("replica")
                .state
                .counters()
                .get("version:HTTP/2.0")
                .copied()
                .unwrap_or(0)
        })
        .sum()
}

/// A fleet serving `leaf` from a new CA (requiring client certificates from `clients`),
/// the CA stored as `partner`'s secret `<partner>-ca`.
async fn trusting(
    partner: Partner,
    leaf: Leaf,
    clients: Option<&Pki>,
    alpn: Alpn,
) -> (Pki, Harness) {
    let pki = Pki::generate("partner CA").expect("pki");
    let config = pki.server_config(&leaf, clients, alpn).expect("config");
    let harness = tls_fleet(config).await;
    let id = partner.id();
    harness.secrets.set(id, &format!("{id}-ca"), pki.ca_pem());
    (pki, harness)
}

/// The example connector of `partner` trusting its CA secret, plus `more` of `tls`.
fn trusted(harness: &Harness, partner: Partner, more: &str) -> String {
    let id = partner.id();
    with_tls(harness, partner, &format!("  ca: secret:{id}-ca\n{more}"))
}

fn tls_reason(result: Result<mallgate_connectors::runtime::CallOutput, ConnectorError>) -> String {
    match result {
        Err(ConnectorError::Tls { reason, .. }) => reason,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_partner_trusted_through_its_ca_is_live_over_http2() {
    let (_pki, harness) = trusting(Partner::Voltmart, Leaf::Good, None, Alpn::Both).await;
    let text = trusted(&harness, Partner::Voltmart, "");
    let out = search(&connector(&harness, Partner::Voltmart, &text))
        .await
        .expect("live over TLS");
    assert!(!out.records.is_empty(), "records came back");
    assert!(
        http2_requests(&harness, Partner::Voltmart) > 0,
        "HTTP/2 was negotiated by ALPN"
    );

    // The same partner, not trusted: the platform roots do not know the test CA.
    let plain = harness.text(Partner::Voltmart);
    let reason = tls_reason(search(&connector(&harness, Partner::Voltmart, &plain)).await);
    assert!(reason.starts_with("unknown issuer"), "{reason}");
}

#[tokio::test]
async fn a_partner_offering_only_http1_is_called_over_http1() {
    let (_pki, harness) = trusting(Partner::Voltmart, Leaf::Good, None, Alpn::Http1).await;
    let text = trusted(&harness, Partner::Voltmart, "");
    let out = search(&connector(&harness, Partner::Voltmart, &text))
        .await
        .expect("live over TLS");
    assert!(!out.records.is_empty());
    assert_eq!(http2_requests(&harness, Partner::Voltmart), 0);
}

#[tokio::test]
async fn oauth_token_calls_go_over_the_same_tls() {
    let (_pki, harness) = trusting(Partner::Acme, Leaf::Good, None, Alpn::Both).await;
    let text = trusted(&harness, Partner::Acme, "");
    assert!(
        text.contains("token_url: https://"),
        "the token URL is https too"
    );
    let c = connector(&harness, Partner::Acme, &text);
    let out = search(&c).await.expect("live over TLS");
    assert!(!out.records.is_empty());
    assert_eq!(c.resources().token_requests(), 1, "one token, over TLS");
}

#[tokio::test]
async fn expired_and_wrong_name_certificates_fail_with_their_reason() {
    let (_pki, expired) = trusting(Partner::Voltmart, Leaf::Expired, None, Alpn::Both).await;
    let text = trusted(&expired, Partner::Voltmart, "");
    let reason = tls_reason(search(&connector(&expired, Partner::Voltmart, &text)).await);
    assert!(reason.starts_with("expired"), "{reason}");

    let elsewhere = Leaf::Names(vec!["api.voltmart.example".into()]);
    let (_pki, wrong) = trusting(Partner::Voltmart, elsewhere, None, Alpn::Both).await;
    let text = trusted(&wrong, Partner::Voltmart, "");
    let reason = tls_reason(search(&connector(&wrong, Partner::Voltmart, &text)).await);
    assert!(reason.starts_with("name mismatch"), "{reason}");

    // The partner's certificate is for its public name: `server_name` verifies against it.
    let text = trusted(
        &wrong,
        Partner::Voltmart,
        "  server_name: api.voltmart.example\n",
    );
    let out = search(&connector(&wrong, Partner::Voltmart, &text))
        .await
        .expect("verified against the configured name");
    assert!(!out.records.is_empty());
    // The override is for that name only: another name still fails.
    let text = trusted(
        &wrong,
        Partner::Voltmart,
        "  server_name: other.voltmart.example\n",
    );
    let reason = tls_reason(search(&connector(&wrong, Partner::Voltmart, &text)).await);
    assert!(reason.starts_with("name mismatch"), "{reason}");
}

#[tokio::test]
async fn mutual_tls_refuses_a_connector_without_a_certificate_and_answers_one_with_it() {
    const CANARY_KEY_MARK: &str = "PRIVATE KEY";
    let clients = Pki::generate("partner client CA").expect("client pki");
    let (_pki, harness) = trusting(Partner::Voltmart, Leaf::Good, Some(&clients), Alpn::Both).await;

    let without = with_tls(&harness, Partner::Voltmart, "  ca: secret:voltmart-ca\n");
    let c = connector(&harness, Partner::Voltmart, &without);
    let reason = tls_reason(search(&c).await);
    assert!(reason.starts_with("client certificate refused"), "{reason}");

    // A certificate from a CA the partner does not know is refused too.
    let stranger = Pki::generate("someone else")
        .expect("pki")
        .client("mallgate")
        .expect("id");
    harness
        .secrets
        .set("voltmart", "voltmart-cert", &stranger.cert_pem);
    harness
        .secrets
        .set("voltmart", "voltmart-key", &stranger.key_pem);
    let with = with_tls(
        &harness,
        Partner::Voltmart,
        "  ca: secret:voltmart-ca\n  client_certificate: secret:voltmart-cert\n  client_key: secret:voltmart-key\n",
    );
    let c = connector(&harness, Partner::Voltmart, &with);
    let refused = search(&c)
        .await
        .expect_err("an unknown client CA is refused");
    match &refused {
        ConnectorError::Tls { reason, .. } => {
            assert!(reason.starts_with("client certificate refused"), "{reason}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }

    // The partner's own client certificate: live. A rotated secret takes effect on the
    // next call, on the same connector version.
    let identity = clients.client("mallgate").expect("id");
    harness
        .secrets
        .set("voltmart", "voltmart-cert", &identity.cert_pem);
    harness
        .secrets
        .set("voltmart", "voltmart-key", &identity.key_pem);
    let out = search(&c).await.expect("live with the client certificate");
    assert!(!out.records.is_empty());

    // The key never shows: not in errors, not in a Debug of anything that held it.
    let body = identity
        .key_pem
        .lines()
        .find(|l| !l.starts_with("-----"))
        .expect("a key line")
        .to_owned();
    for shown in [
        refused.to_string(),
        format!("{refused:?}"),
        format!("{c:?}"),
        format!("{:?}", c.resources()),
        format!("{:?}", harness.secrets),
        format!("{out:?}"),
    ] {
        assert!(!shown.contains(&body), "the key leaked: {shown}");
        assert!(
            !shown.contains(CANARY_KEY_MARK),
            "key material shown: {shown}"
        );
    }

    // A key that is not the certificate's: refused by name, never by value.
    harness
        .secrets
        .set("voltmart", "voltmart-key", &stranger.key_pem);
    let mismatch = search(&c).await.expect_err("a mismatched key");
    let shown = mismatch.to_string();
    assert!(shown.contains("secret:voltmart-key"), "{shown}");
    assert!(
        !shown.contains(CANARY_KEY_MARK) && !shown.contains(&body),
        "{shown}"
    );
}

#[test]
fn the_tls_block_holds_references_only() {
    let base = "id: v\npartner: v\nkind: retailer\nendpoints:\n  - url: https://api.v.example\n\
                capabilities:\n  catalog.search:\n    request:\n      path: /p\n    records: .items[]\n    map: .\n";
    let load = |tls: &str, owner: &Owner| {
        let text = base.replacen(
            "\ncapabilities:\n",
            &format!("\ntls:\n{tls}capabilities:\n"),
            1,
        );
        ConnectorSpec::load(&text, mallgate_connectors::source::Format::Yaml, owner)
    };
    let partner = Owner::Partner("v".into());
    let problems = |r: Result<ConnectorSpec, ConnectorError>| match r {
        Err(ConnectorError::InvalidSpec { problems }) => problems
            .into_iter()
            .map(|p| format!("{} {}", p.pointer, p.reason))
            .collect::<Vec<_>>(),
        other => panic!("expected problems, got {other:?}"),
    };
    assert!(load("  ca: secret:ca\n  server_name: api.v.example\n", &partner).is_ok());
    let literal = problems(load("  ca: \"-----BEGIN CERTIFICATE-----\"\n", &partner));
    assert!(literal[0].starts_with("/tls/ca "), "{literal:?}");
    let env = problems(load(
        "  client_certificate: env:CERT\n  client_key: env:KEY\n",
        &partner,
    ));
    assert!(
        env.iter()
            .any(|p| p.starts_with("/tls/client_certificate ") && p.contains("operator")),
        "{env:?}"
    );
    assert!(
        load(
            "  client_certificate: env:CERT\n  client_key: env:KEY\n",
            &Owner::Operator
        )
        .is_ok()
    );
    let half = problems(load("  client_certificate: secret:cert\n", &partner));
    assert!(half.iter().any(|p| p.contains("client_key")), "{half:?}");
    let off = problems(load("  verify: false\n", &partner));
    assert!(
        off[0].starts_with("/tls"),
        "no way to turn verification off: {off:?}"
    );
}
