//! The round-trip harness: the simulated fleet on loopback, the six example connectors
//! pointed at it, and the demo secrets in a store.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use mallgate_connectors::Owner;
use mallgate_connectors::mapping::MappingPool;
use mallgate_connectors::runtime::guard::LoopbackOnly;
use mallgate_connectors::runtime::secrets::MemorySecretStore;
use mallgate_connectors::runtime::{
    Connector, PartnerResources, RuntimeConfig, connector_from_spec,
};
use mallgate_partner_sim::{Fleet, FleetConfig, Partner};

/// 2026-11-27T14:00:00Z, Black Friday.
pub(crate) const BLACK_FRIDAY: i64 = 1_795_788_000;

pub(crate) struct Harness {
    pub(crate) fleet: Arc<Fleet>,
    pub(crate) secrets: Arc<MemorySecretStore>,
    pub(crate) pool: Arc<MappingPool>,
}

/// The example connector file of a partner.
pub(crate) fn file(partner: Partner) -> &'static str {
    match partner {
        Partner::Voltmart => "voltmart.yaml",
        Partner::Threadline => "threadline.yaml",
        Partner::Acme => "acme-dropship.yaml",
        Partner::Northwind => "northwind.yaml",
        Partner::ParcelPost => "parcelpost.yaml",
        Partner::SwiftShip => "swiftship.yaml",
    }
}

impl Harness {
    /// A fleet with its clock frozen on Black Friday, and every partner's demo secrets.
    pub(crate) async fn start() -> Self {
        Self::start_with(FleetConfig {
            seed: 7,
            replicas: 2,
            ..FleetConfig::default()
        })
        .await
    }

    /// [`Harness::start`] with a fleet configured by `config` (TLS, say).
    pub(crate) async fn start_with(config: FleetConfig) -> Self {
        let fleet = Fleet::start(config).await.expect("fleet starts");
        fleet.clock().freeze(BLACK_FRIDAY);
        let secrets = Arc::new(MemorySecretStore::new());
        for (partner, name, value) in mallgate_partner_sim::partners::demo_secrets() {
            secrets.set(partner, name, value);
        }
        Self {
            fleet,
            secrets,
            pool: Arc::new(MappingPool::new(2, 64).expect("pool")),
        }
    }

    /// The example connector's text with its fixed demo ports replaced by the fleet's.
    pub(crate) fn text(&self, partner: Partner) -> String {
        let path = format!("{}/partners/{}", env!("CARGO_MANIFEST_DIR"), file(partner));
        let mut text = std::fs::read_to_string(path).expect("connector file");
        let i = Partner::ALL
            .iter()
            .position(|p| *p == partner)
            .expect("a partner")
            + 1;
        for r in 0..2 {
            let demo = format!("http://127.0.0.1:{}", 18_000 + 100 * i + 1 + r);
            let real = self.fleet.url(partner, r).expect("replica");
            text = text.replace(&demo, &real);
        }
        text
    }

    /// Fresh partner resources (pooled client, token cache) with the loopback guard.
    pub(crate) fn resources(&self, partner: Partner) -> Arc<PartnerResources> {
        PartnerResources::new(
            partner.id(),
            Arc::new(LoopbackOnly),
            RuntimeConfig::default(),
        )
        .expect("resources")
    }

    pub(crate) fn connector_with(
        &self,
        partner: Partner,
        resources: Arc<PartnerResources>,
    ) -> Connector {
        connector_from_spec(
            &self.text(partner),
            1,
            Owner::Partner(partner.id().to_owned()),
            resources,
            self.secrets.clone(),
            Arc::clone(&self.pool),
        )
        .expect("the example connector loads")
    }

    pub(crate) fn connector(&self, partner: Partner) -> Connector {
        self.connector_with(partner, self.resources(partner))
    }
}

/// A generous deadline: the tests judge outcomes, never speed.
pub(crate) fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}
