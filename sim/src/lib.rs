//! The partners Mallgate integrates, simulated: each speaks its native dialect over real
//! HTTP on loopback, renders one seeded world, and takes fault knobs, so the demo, the tests
//! and the benchmarks run against messy, failing, realistic partners.
//!
//! [`Fleet::start`] starts every replica of every partner on `127.0.0.1:0` in-process and
//! hands back the addresses; the world ([`Fleet::world`]) is the truth tests compare with.
//! The control API (`/__sim/...`, on [`Fleet::control_addr`]) sets faults, stops and starts
//! replicas, reads counters and moves the clock; the library does the same directly.

// Handlers return `Result<_, Response>`, axum's idiom; a simulator does not care that the
// error variant is large.
#![allow(clippy::result_large_err)]

pub mod control;
pub mod faults;
pub mod partners;
pub mod pki;
pub mod rng;
pub mod server;
pub mod shipping;
pub mod signing;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub use faults::Faults;
pub use server::{Clock, Replica, Sim, TokenCheck, Tokens};
pub use world::{Partner, World};

/// The simulator's one error type.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no such replica: {partner} #{replica}")]
    NoSuchReplica { partner: String, replica: usize },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// How to start a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub seed: u64,
    /// Replicas per partner (each its own port).
    pub replicas: usize,
    /// Where to bind: `127.0.0.1:0` for any free ports.
    pub bind: SocketAddr,
    /// Fixed ports instead: the control API on `base + 1`, replica `r` of the `i`-th
    /// partner of [`Partner::ALL`] on `base + 100 * (i + 1) + 1 + r` (with 18000: Voltmart
    /// on 18101, 18102..., Threadline on 18201..., as the example connectors expect).
    pub base_port: Option<u16>,
    /// Serve every replica over TLS with this configuration (see [`pki`]), or plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            replicas: 2,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            base_port: None,
            tls: None,
        }
    }
}

/// A running fleet.
#[derive(Debug)]
pub struct Fleet {
    pub sim: Arc<Sim>,
    replicas: BTreeMap<Partner, Vec<Arc<Replica>>>,
    control_addr: SocketAddr,
}

impl Fleet {
    /// Starts every simulated partner's replicas and the control API. Call inside a tokio
    /// runtime.
    pub async fn start(config: FleetConfig) -> Result<Arc<Self>, SimError> {
        let sim = Arc::new(Sim {
            world: World::generate(config.seed),
            clock: Clock::default(),
            tokens: Tokens::default(),
            signatures: signing::Signatures::default(),
        });
        let mut replicas = BTreeMap::new();
        let at = |offset: u32| -> Result<SocketAddr, SimError> {
            match config.base_port {
                None => Ok(config.bind),
                Some(base) => {
                    let port =
                        u16::try_from(u32::from(base) + offset).map_err(|_| SimError::Bind {
                            addr: config.bind,
                            source: std::io::Error::other("the base port leaves no room"),
                        })?;
                    Ok(SocketAddr::new(config.bind.ip(), port))
                }
            }
        };
        for (i, partner) in Partner::ALL.into_iter().enumerate() {
            let mut list = Vec::new();
            for index in 0..config.replicas.max(1) {
                let addr = at(100 * (i as u32 + 1) + 1 + index as u32)?;
                let replica = Replica::start(
                    Arc::clone(&sim),
                    partner,
                    index,
                    addr,
                    partners::router(partner),
                    axum::Router::new(),
                    config.tls.clone(),
                )
                .map_err(|source| SimError::Bind { addr, source })?;
                list.push(replica);
            }
            replicas.insert(partner, list);
        }
        let control = at(1)?;
        let listener = tokio::net::TcpListener::bind(control)
            .await
            .map_err(|source| SimError::Bind {
                addr: control,
                source,
            })?;
        let control_addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: control,
            source,
        })?;
        let fleet = Arc::new(Self {
            sim,
            replicas,
            control_addr,
        });
        let app = control::router(Arc::clone(&fleet));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(fleet)
    }

    pub fn world(&self) -> &World {
        &self.sim.world
    }

    pub fn clock(&self) -> &Clock {
        &self.sim.clock
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The OAuth2 tokens partners issued (lifetimes, counts, revocation).
    pub fn tokens(&self) -> &Tokens {
        &self.sim.tokens
    }

    /// The replicas of a partner.
    pub fn replicas(&self, partner: Partner) -> &[Arc<Replica>] {
        self.replicas.get(&partner).map_or(&[], Vec::as_slice)
    }

    pub fn replica(&self, partner: Partner, index: usize) -> Result<&Arc<Replica>, SimError> {
        self.replicas(partner)
            .get(index)
            .ok_or_else(|| SimError::NoSuchReplica {
                partner: partner.id().to_owned(),
                replica: index,
            })
    }

    /// `http://ADDR` (or `https://` over TLS) of a replica.
    pub fn url(&self, partner: Partner, index: usize) -> Option<String> {
        self.replicas(partner).get(index).map(|r| r.url())
    }

    /// Every address, as the binary prints it.
    pub fn addresses(&self) -> serde_json::Value {
        let partners: serde_json::Map<String, serde_json::Value> = self
            .replicas
            .iter()
            .map(|(p, list)| {
                (
                    p.id().to_owned(),
                    list.iter()
                        .map(|r| serde_json::Value::String(r.url()))
                        .collect(),
                )
            })
            .collect();
        serde_json::json!({
            "seed": self.sim.world.seed,
            "control": format!("http://{}", self.control_addr),
            "partners": partners,
            "credentials": partners::credentials(),
        })
    }
}
