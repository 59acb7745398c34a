//! `mallgate demo`: the simulated partner fleet (fixed loopback ports from 18000, matching
//! `connectors/partners/*.yaml`) and the gateway on loopback, in one process, with the
//! partners' demo credentials stored as their secrets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mallgate_connectors::runtime::secrets::MemorySecretStore;
use mallgate_partner_sim::{Fleet, FleetConfig};

use sha2::{Digest, Sha256};

use crate::config::{AdminConfig, TokenConfig};
use crate::{GatewayConfig, GatewayError};

/// Options of `mallgate demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    /// The simulator's base port; the example connectors expect 18000.
    pub sim_base_port: u16,
    pub seed: u64,
    pub connectors_dir: PathBuf,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            sim_base_port: 18_000,
            seed: 7,
            connectors_dir: default_connectors_dir(),
        }
    }
}

/// `connectors/partners` of this checkout (the working directory's, else the source tree's).
pub fn default_connectors_dir() -> PathBuf {
    let here = PathBuf::from("connectors/partners");
    if here.is_dir() {
        here
    } else {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../connectors/partners"
        ))
    }
}

/// The demo secrets of every simulated partner, under the names the example connectors use.
pub fn demo_secrets() -> Arc<MemorySecretStore> {
    let secrets = Arc::new(MemorySecretStore::new());
    for (partner, name, value) in mallgate_partner_sim::partners::demo_secrets() {
        secrets.set(partner, name, value);
    }
    secrets
}

/// The gateway config of the demo: loopback partners allowed, the example connectors, and
/// the admin API on 127.0.0.1:9090 with a fresh state directory and fresh tokens (see
/// [`demo_admin`]).
pub fn demo_config(options: &DemoOptions, admin: Option<AdminConfig>) -> GatewayConfig {
    GatewayConfig {
        listen: options.listen,
        connectors_dir: Some(options.connectors_dir.clone()),
        allow_loopback_partners: true,
        state_dir: admin.as_ref().map(|_| demo_state_dir()),
        secrets: crate::config::SecretsConfig {
            master_key: admin
                .as_ref()
                .map(|_| format!("file:{}", demo_state_dir().join("master.key").display())),
            previous_keys: Vec::new(),
        },
        admin,
        partners: demo_grants(),
        ..GatewayConfig::default()
    }
}

/// What the demo partners are granted: what their example connectors declare.
pub fn demo_grants() -> std::collections::BTreeMap<String, mallgate_connectors::Grant> {
    use mallgate_connectors::{Grant, PartnerKind};
    let grant = |kind, priority, codes: &[&str]| Grant {
        kinds: vec![kind],
        priority,
        codes: codes.iter().map(|c| (*c).to_owned()).collect(),
    };
    [
        ("voltmart", grant(PartnerKind::Retailer, None, &[])),
        ("threadline", grant(PartnerKind::Retailer, None, &[])),
        ("acme", grant(PartnerKind::Supplier, Some(10), &[])),
        ("northwind", grant(PartnerKind::Supplier, None, &[])),
        (
            "parcelpost",
            grant(PartnerKind::Carrier, None, &["parcelpost", "pp"]),
        ),
        (
            "swiftship",
            grant(PartnerKind::Carrier, None, &["swiftship", "swift"]),
        ),
    ]
    .into_iter()
    .map(|(p, g)| (p.to_owned(), g))
    .collect()
}

/// `$TMPDIR/mallgate-demo`: the demo's state directory, emptied at each start.
pub fn demo_state_dir() -> PathBuf {
    std::env::temp_dir().join("mallgate-demo")
}

/// Fresh admin tokens for the demo (an operator, and Voltmart as a partner), written to
/// `<state>/tokens.env` (mode 0600) for `source`; the config keeps only their hashes.
pub fn demo_admin() -> Result<(AdminConfig, PathBuf), GatewayError> {
    let state = demo_state_dir();
    let _ = std::fs::remove_dir_all(&state);
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let token = || crate::vault::random::<16>().map(|b| format!("mg_{}", hex(&b)));
    let (operator, voltmart) = (token()?, token()?);
    // The master key that seals partner secrets set through the admin API in the demo.
    crate::store::write_atomic(
        &state.join("master.key"),
        hex(&crate::vault::random::<32>()?).as_bytes(),
    )?;
    let file = state.join("tokens.env");
    // Exported, so `source tokens.env` makes them visible to `--token env:…`.
    let text = format!(
        "export MALLGATE_OPERATOR_TOKEN={operator}\nexport MALLGATE_VOLTMART_TOKEN={voltmart}\n"
    );
    crate::store::write_atomic(&file, text.as_bytes())?;
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(
        |source| GatewayError::Io {
            path: file.clone(),
            source,
        },
    )?;
    let hash = |t: &str| format!("{:x}", Sha256::digest(t.as_bytes()));
    let config = AdminConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        tokens: vec![
            TokenConfig {
                role: "operator".into(),
                token: None,
                sha256: Some(hash(&operator)),
            },
            TokenConfig {
                role: "partner:voltmart".into(),
                token: None,
                sha256: Some(hash(&voltmart)),
            },
        ],
        sandbox_program: None,
        canary_promote_after: 20,
        token_grace_s: 24 * 3600,
    };
    Ok((config, file))
}

/// Starts the fleet on a runtime of its own (kept on a background thread).
pub fn start_fleet(seed: u64, base_port: Option<u16>) -> Result<Arc<Fleet>, GatewayError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("partner-sim".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("simulator runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let fleet = Fleet::start(FleetConfig {
                    seed,
                    replicas: 2,
                    base_port,
                    ..FleetConfig::default()
                })
                .await;
                match fleet {
                    Ok(f) => {
                        let _ = tx.send(Ok(f));
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("simulator fleet: {e}")));
                    }
                }
            });
        })
        .map_err(|e| GatewayError::Startup(format!("simulator thread: {e}")))?;
    rx.recv()
        .map_err(|e| GatewayError::Startup(format!("simulator thread: {e}")))?
        .map_err(GatewayError::Startup)
}

/// Sample requests against the demo, with real ids from the simulated world.
pub fn sample_commands(base: &str, fleet: &Fleet, tokens: &std::path::Path) -> String {
    let tokens = tokens.display();
    use mallgate_partner_sim::Partner;
    let world = fleet.world();
    let parcel = world
        .parcels
        .iter()
        .find(|p| p.carrier == Partner::ParcelPost)
        .map(|p| p.tracking_number.clone())
        .unwrap_or_default();
    let gtin = world
        .listed_by(Partner::Voltmart)
        .find_map(|(p, _)| p.variants[0].gtin14())
        .unwrap_or_default();
    let store = world
        .locations_of(Partner::Voltmart)
        .next()
        .map(|l| format!("{:.4},{:.4}", l.lat, l.lon))
        .unwrap_or_default();
    format!(
        "Mallgate demo: the unified API at {base}, six simulated partners on 127.0.0.1:18101-18602\n\
         \n  curl -s '{base}/v1/products?q=headphones&limit=3' | jq .\
         \n  curl -s '{base}/v1/products?q=speaker&currency=USD&sort=price_asc&limit=5' | jq '.data[] | {{product_id, title}}'\
         \n  curl -s '{base}/v1/products/gtin:{gtin}' | jq .\
         \n  curl -s '{base}/v1/inventory?gtin={gtin}&near={store}&radius_km=100' | jq .\
         \n  curl -s '{base}/v1/shipping/rates' -H 'content-type: application/json' \\\
         \n       -d '{{\"from\":{{\"postal_code\":\"10001\",\"country\":\"US\"}},\"to\":{{\"postal_code\":\"94103\",\"country\":\"US\"}},\"parcels\":[{{\"weight_g\":1200}}]}}' | jq .\
         \n  curl -s '{base}/v1/tracking/parcelpost/{parcel}' | jq .\
         \n  curl -s '{base}/v1/partners' | jq .\
         \n  curl -s '{base}/openapi.json' | jq '.paths | keys'\
         \n\nAdmin API on http://127.0.0.1:9090 (tokens: `source {tokens}`):\
         \n  curl -s -H \"authorization: Bearer $MALLGATE_OPERATOR_TOKEN\" localhost:9090/admin/v1/status | jq .\
         \n  curl -s -H \"authorization: Bearer $MALLGATE_VOLTMART_TOKEN\" localhost:9090/admin/v1/connectors/voltmart | jq '{{version, revision}}'\
         \n\nSimulator control API (faults, drift, clock): http://127.0.0.1:18001/__sim/fleet. Ctrl-C stops.\n"
    )
}
