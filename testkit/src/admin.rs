//! Admin-API helpers: a mall with an admin listener, a state directory and bearer tokens,
//! and admin requests with a token.

use mallgate::GatewayConfig;
use mallgate::config::{AdminConfig, TokenConfig};
use mallgate_partner_sim::Partner;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Mall;

pub fn hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// A mall whose gateway has the admin API with `tokens` (role, token), a fresh state
/// directory, the demo's partner grants and Threadline's own pacing lifted (tests send
/// fresh searches); `configure` may change the rest.
pub async fn admin_mall(
    tokens: &[(&str, &str)],
    configure: impl FnOnce(&mut GatewayConfig),
) -> Mall {
    admin_mall_with(tokens, |_, text| text, configure).await
}

/// As [`admin_mall`], with `patch` applied to each connector's text (after Threadline's
/// pacing is lifted).
pub async fn admin_mall_with(
    tokens: &[(&str, &str)],
    patch: impl Fn(Partner, String) -> String,
    configure: impl FnOnce(&mut GatewayConfig),
) -> Mall {
    let tokens: Vec<TokenConfig> = tokens
        .iter()
        .map(|(role, token)| TokenConfig {
            role: (*role).into(),
            token: None,
            sha256: Some(hash(token)),
        })
        .collect();
    Mall::start_configured(
        |partner, text| {
            let text = if partner == Partner::Threadline {
                text.replace("rate_limit_rps: 2 ", "rate_limit_rps: 10000 ")
            } else {
                text
            };
            patch(partner, text)
        },
        |config| {
            config.partners = mallgate::demo::demo_grants();
            config.state_dir = Some(std::env::temp_dir().join(format!(
                "mallgate-test-state-{}-{:x}",
                std::process::id(),
                mallgate::cursor::random_u64()
            )));
            config.admin = Some(AdminConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                tokens,
                sandbox_program: super::mallgate_binary(),
                canary_promote_after: 1_000_000,
                token_grace_s: 24 * 3600,
            });
            configure(config);
        },
    )
    .await
}

/// One admin request: (status, JSON body or null).
pub async fn admin_send(
    mall: &Mall,
    method: reqwest::Method,
    path: &str,
    token: &str,
    headers: &[(&str, String)],
    body: Option<String>,
) -> (u16, Value) {
    let addr = mall.gateway.admin_addr.expect("admin listener");
    let mut req = mall
        .http
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let res = req.send().await.expect("the admin listener answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The active version of connector `id` serving now.
pub fn live(mall: &Mall, id: &str) -> Option<std::sync::Arc<mallgate::registry::LiveConnector>> {
    mall.gateway
        .api
        .registry
        .load()
        .connectors
        .iter()
        .find(|c| c.id() == id)
        .cloned()
}

/// The version of connector `id` serving now.
pub fn serving(mall: &Mall, id: &str) -> Option<u32> {
    live(mall, id).map(|c| c.version())
}

/// The admin store's audit log.
pub fn audit_log(mall: &Mall) -> String {
    mall.gateway
        .admin
        .as_ref()
        .expect("admin")
        .store()
        .audit_log()
        .expect("audit")
}

/// A connector file of the mall's connectors directory.
pub fn connector_text(mall: &Mall, file: &str) -> String {
    std::fs::read_to_string(mall.dir.join(file)).expect("connector file")
}
