//! The process configuration: a YAML (or JSON) file given to `mallgate serve --config`.
//!
//! ```yaml
//! listen: 0.0.0.0:8080          # the public listener
//! threads: 2                    # pingora worker threads of the public listener
//! connectors_dir: connectors/partners
//! state_dir: /var/lib/mallgate
//! allow_loopback_partners: false
//! deadline: {default_ms: 800}
//! cache: {max_bytes: 268435456, window_items: 500, cursor_ttl_s: 900}
//! limits: {max_header_bytes: 16384, max_body_bytes: 65536, request_timeout_ms: 10000, header_timeout_ms: 10000}
//! admission: {max_in_flight: 2048, client_rps: 50, client_burst: 100}
//! connections: {max_total: 8192, max_per_client: 1024}   # the longest-waiting goes first
//! admin:
//!   listen: 127.0.0.1:9090      # never the public listener's port
//!   tokens:
//!     - {role: operator, token: env:MALLGATE_ADMIN_TOKEN}
//!     - {role: "partner:voltmart", sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8}
//! cursor_secret: env:MALLGATE_CURSOR_SECRET
//! partner_secrets:
//!   voltmart: {voltmart-api-key: env:VOLTMART_API_KEY}
//! secrets:                      # partner secrets set through the admin API, sealed at rest
//!   master_key: file:/etc/mallgate/master.key     # 32 bytes: 64 hex digits or base64
//!   previous_keys: []           # keys being rotated out: still open, re-sealed at startup
//! partners:                     # grants: kinds, best merge priority, carrier codes
//!   acme: {kinds: [supplier], priority: 10}
//!   swiftship: {kinds: [carrier], codes: [swiftship, swift]}
//! resilience:                   # breaker, ejection, retry budget, health-check defaults
//!   breaker_failures: 5         # (every field: see `config::resilience`)
//!   eject_max_ms: 30000
//! log: {format: json, level: info, access: true}        # see `config::telemetry`
//! traces: {endpoint: http://127.0.0.1:4318, sampling_ratio: 0.05}
//! metrics: {public: false, listen: 127.0.0.1:9464}
//! process: {pid_file: /run/mallgate/mallgate.pid, drain_delay_s: 5, grace_period_s: 30}
//! sandbox:                      # where partner-owned jq runs: worker processes
//!   workers: 2
//!   address_space_mib: 1536
//!   run_timeout_ms: 2000        # one mapping job at most; a worker past it is killed
//!   operator_in_process: true   # trusted operator connectors map on mapping_threads
//!   quarantine_after: 3         # overruns (kills, deaths, timeouts) before a version is quarantined
//! ```
//!
//! Every field has a default; an unknown field is an error naming its path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::GatewayError;

mod process;
mod resilience;
mod store;
mod telemetry;
pub use self::process::ProcessConfig;
pub use self::resilience::ResilienceConfig;
pub use self::store::{EtcdAuth, EtcdTlsConfig, StoreConfig};
pub use self::telemetry::{LogConfig, LogFormat, MetricsConfig, TracesConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The public listener.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Worker threads of the public listener's runtime.
    #[serde(default = "defaults::threads")]
    pub threads: usize,
    /// Connector documents (`*.yaml`, `*.yml`, `*.json`), operator-owned.
    #[serde(default)]
    pub connectors_dir: Option<PathBuf>,
    /// Where versions, the active pointer and the audit log live (the admin API's store).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// The store of a fleet (etcd) instead of the state directory.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Lets connectors call loopback addresses only (the demo and tests); off in production.
    #[serde(default)]
    pub allow_loopback_partners: bool,
    /// Non-public address ranges partners may nevertheless be at (`10.20.0.0/16`,
    /// `192.0.2.7`): the SSRF guard's operator allow-list.
    #[serde(default)]
    pub partner_allow: Vec<String>,
    #[serde(default)]
    pub deadline: DeadlineConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// Open connections of the public listener, in total and per client address.
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// The admin listener; absent: no admin API.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The key that signs paging cursors, as a reference (`env:VAR` or `file:PATH`). Absent:
    /// a random key per process (cursors then do not survive a restart).
    #[serde(default)]
    pub cursor_secret: Option<String>,
    /// Operator-provided partner secrets: partner -> name -> reference (`env:` or `file:`).
    #[serde(default)]
    pub partner_secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// How partner secrets set through the admin API are kept at rest.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// Mapping pool threads (trusted jq runs there, never on a request thread).
    #[serde(default = "defaults::mapping_threads")]
    pub mapping_threads: usize,
    /// The sandbox pool that runs partner-owned programs.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// Breaker, ejection, retry-budget and health-check defaults of every partner stack.
    #[serde(default)]
    pub resilience: ResilienceConfig,
    /// What each partner is granted: the connector kinds it may register, the best merge
    /// priority it may claim, the carrier codes it may answer for. A partner absent here
    /// may register retailer connectors at the retailers' default priority, no codes.
    #[serde(default)]
    pub partners: BTreeMap<String, mallgate_connectors::Grant>,
    /// Log lines: format, level, the access log.
    #[serde(default)]
    pub log: LogConfig,
    /// OpenTelemetry traces (OTLP); off unless an endpoint is configured.
    #[serde(default)]
    pub traces: TracesConfig,
    /// The Prometheus `/metrics` endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Failover drills through the admin API.
    #[serde(default)]
    pub drills: DrillsConfig,
    /// The pid file, the upgrade socket, the drain and its grace period.
    #[serde(default)]
    pub process: ProcessConfig,
}

/// Partner secrets at rest (see `crate::vault`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// The 256-bit key that seals partner secrets in the state directory, as a reference
    /// (`env:VAR` or `file:PATH`; 64 hex digits or base64). Absent: secrets set through the
    /// admin API are kept in memory only, and every answer that stores one says so.
    #[serde(default)]
    pub master_key: Option<String>,
    /// Keys being rotated out: values sealed under them still open, and are sealed again
    /// under `master_key` at startup.
    #[serde(default)]
    pub previous_keys: Vec<String>,
}

/// Failover drills (`POST /admin/v1/drills`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillsConfig {
    /// The longest drill allowed, in seconds.
    #[serde(default = "defaults::drill_max_duration_s")]
    pub max_duration_s: u64,
}

impl Default for DrillsConfig {
    fn default() -> Self {
        Self {
            max_duration_s: defaults::drill_max_duration_s(),
        }
    }
}

/// The sandbox pool (DESIGN §5): every jq program of a partner-owned connector runs in one
/// of these worker processes, never in the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Worker processes running partner programs at once.
    #[serde(default = "defaults::sandbox_workers")]
    pub workers: usize,
    /// The worker executable (it must answer to `sandbox-worker`); absent: this executable.
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// Address-space limit of one worker (it reserves a 256 MiB stack).
    #[serde(default = "defaults::sandbox_address_space_mib")]
    pub address_space_mib: u64,
    /// Operator-owned connectors map in process, on `mapping_threads` (trusted: a hostile
    /// operator program can take the gateway down). `false`: every connector is isolated.
    #[serde(default = "defaults::yes")]
    pub operator_in_process: bool,
    /// The longest one mapping job (one reply page, one request program) may run in a
    /// worker before the worker is killed, however long its call may still take.
    #[serde(default = "defaults::sandbox_run_timeout_ms")]
    pub run_timeout_ms: u64,
    /// How often the partner reply recorded per capability (the sample a candidate version
    /// is tried on at registration) may be replaced by a newer one.
    #[serde(default = "defaults::sample_refresh_s")]
    pub sample_refresh_s: u64,
    /// Calls of one version whose mapping overran (worker killed at the deadline, worker
    /// died, output over the cap) before the version is quarantined and rolled back.
    #[serde(default = "defaults::quarantine_after")]
    pub quarantine_after: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            workers: defaults::sandbox_workers(),
            program: None,
            address_space_mib: defaults::sandbox_address_space_mib(),
            run_timeout_ms: defaults::sandbox_run_timeout_ms(),
            sample_refresh_s: defaults::sample_refresh_s(),
            operator_in_process: true,
            quarantine_after: defaults::quarantine_after(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineConfig {
    /// The deadline of a request when it gives no `timeout_ms`; `timeout_ms` may only
    /// shorten it.
    #[serde(default = "defaults::deadline_ms")]
    pub default_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The byte budget of cached partner records and paging windows together.
    #[serde(default = "defaults::cache_bytes")]
    pub max_bytes: u64,
    /// The most products a search keeps in its merged window (the pages a cursor walks).
    #[serde(default = "defaults::window_items")]
    pub window_items: usize,
    /// How long a cursor (and its window) stays valid.
    #[serde(default = "defaults::cursor_ttl_s")]
    pub cursor_ttl_s: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Request line plus headers; beyond it: 431.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Request body; beyond it: 413.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Reading the request and answering it; beyond it the connection is closed.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A whole request head (line and headers) must arrive within this, counted from the
    /// connection's accept or its previous answer (so it bounds keep-alive idling too);
    /// beyond it the connection is closed. A client trickling its head cannot hold one.
    #[serde(default = "defaults::header_timeout_ms")]
    pub header_timeout_ms: u64,
}

/// The admin listener (DESIGN §9), separate from the public one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
    /// Bearer tokens, as references or hashes; never as text in the file.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// The program dry-runs start as their sandboxed child (it must answer to
    /// `sandbox-child`); absent: this executable.
    #[serde(default)]
    pub sandbox_program: Option<PathBuf>,
    /// Healthy partner calls a canary makes before it is promoted.
    #[serde(default = "defaults::canary_promote_after")]
    pub canary_promote_after: u32,
    /// How long a partner's previous tokens keep working after it rotates to a new one
    /// (`POST /admin/v1/partners/{id}/tokens` may ask for less, never more).
    #[serde(default = "defaults::token_grace_s")]
    pub token_grace_s: u64,
}

/// One admin token: its role, and the token as a reference (`env:VAR`, `file:PATH`) or
/// as the hex SHA-256 of its text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `operator`, or `partner:<id>`.
    pub role: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Open connections of the public listener: beyond a cap, a new connection takes the place
/// of the one that has waited longest (idle, or still sending its head); it is refused
/// only when every connection is busy.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    #[serde(default = "defaults::max_connections")]
    pub max_total: usize,
    /// Per client IP address (a frontend's servers may hold many each: not too low).
    #[serde(default = "defaults::max_connections_per_client")]
    pub max_per_client: usize,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            max_total: defaults::max_connections(),
            max_per_client: defaults::max_connections_per_client(),
        }
    }
}

/// Admission control of the public listener.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Requests being answered at once; beyond it a request gets 503 with `Retry-After`
    /// at once (`/healthz` is never refused).
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Requests per second per client (its `x-api-key` header, else its IP address);
    /// beyond it: 429 with `Retry-After`. Absent: no per-client limit.
    #[serde(default)]
    pub client_rps: Option<f64>,
    /// Requests a client may send at once before `client_rps` paces it (default: two
    /// seconds' worth).
    #[serde(default)]
    pub client_burst: Option<u32>,
}

mod defaults {
    use std::net::SocketAddr;

    pub(super) fn drill_max_duration_s() -> u64 {
        600
    }

    pub(super) fn listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    pub(super) fn threads() -> usize {
        2
    }
    pub(super) fn mapping_threads() -> usize {
        2
    }
    pub(super) fn deadline_ms() -> u64 {
        800
    }
    pub(super) fn cache_bytes() -> u64 {
        256 * 1024 * 1024
    }
    pub(super) fn window_items() -> usize {
        500
    }
    pub(super) fn cursor_ttl_s() -> u64 {
        900
    }
    pub(super) fn max_header_bytes() -> usize {
        16 * 1024
    }
    pub(super) fn max_body_bytes() -> usize {
        64 * 1024
    }
    pub(super) fn request_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn header_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn canary_promote_after() -> u32 {
        20
    }
    pub(super) fn token_grace_s() -> u64 {
        24 * 3600
    }
    pub(super) fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9090))
    }
    pub(super) fn max_in_flight() -> usize {
        2048
    }
    pub(super) fn max_connections() -> usize {
        8192
    }
    pub(super) fn max_connections_per_client() -> usize {
        1024
    }
    pub(super) fn sandbox_workers() -> usize {
        2
    }
    pub(super) fn sandbox_address_space_mib() -> u64 {
        1536
    }
    pub(super) fn sandbox_run_timeout_ms() -> u64 {
        2000
    }
    pub(super) fn sample_refresh_s() -> u64 {
        60
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn quarantine_after() -> u32 {
        3
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_in_flight: defaults::max_in_flight(),
            client_rps: None,
            client_burst: None,
        }
    }
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self {
            default_ms: defaults::deadline_ms(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: defaults::cache_bytes(),
            window_items: defaults::window_items(),
            cursor_ttl_s: defaults::cursor_ttl_s(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: defaults::max_header_bytes(),
            max_body_bytes: defaults::max_body_bytes(),
            request_timeout_ms: defaults::request_timeout_ms(),
            header_timeout_ms: defaults::header_timeout_ms(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            threads: defaults::threads(),
            connectors_dir: None,
            state_dir: None,
            store: None,
            allow_loopback_partners: false,
            partner_allow: Vec::new(),
            deadline: DeadlineConfig::default(),
            cache: CacheConfig::default(),
            limits: LimitsConfig::default(),
            admission: AdmissionConfig::default(),
            connections: ConnectionsConfig::default(),
            admin: None,
            cursor_secret: None,
            partner_secrets: BTreeMap::new(),
            secrets: SecretsConfig::default(),
            mapping_threads: defaults::mapping_threads(),
            sandbox: SandboxConfig::default(),
            resilience: ResilienceConfig::default(),
            partners: BTreeMap::new(),
            log: LogConfig::default(),
            traces: TracesConfig::default(),
            metrics: MetricsConfig::default(),
            drills: DrillsConfig::default(),
            process: ProcessConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// The grant of `partner` (the default one when the config names none).
    pub fn grant(&self, partner: &str) -> mallgate_connectors::Grant {
        self.partners.get(partner).cloned().unwrap_or_default()
    }

    /// Reads and checks a config file; errors name the file and the field's path.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|source| GatewayError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| GatewayError::Config {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses config text (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, String> {
        let format = mallgate_connectors::Format::sniff(text);
        let (value, _) =
            mallgate_connectors::source::parse(text, format).map_err(|p| p.to_string())?;
        let config: Self = serde_path_to_error::deserialize(value)
            .map_err(|e| format!("at `{}`: {}", e.path(), e.inner()))?;
        config.check()?;
        Ok(config)
    }

    /// This process's id in a fleet view (`store.replica_id`, else host name and pid).
    pub fn replica_id(&self) -> String {
        match &self.store {
            Some(StoreConfig::Etcd {
                replica_id: Some(id),
                ..
            }) => id.clone(),
            _ => self::store::default_replica_id(),
        }
    }

    /// The rules no single field says (run on every config, parsed or built).
    pub fn check(&self) -> Result<(), String> {
        if self.threads == 0 || self.mapping_threads == 0 || self.sandbox.workers == 0 {
            return Err("threads, mapping_threads and sandbox.workers must be at least 1".into());
        }
        if self.sandbox.address_space_mib < 512 {
            return Err("sandbox.address_space_mib must be at least 512 (a worker reserves a 256 MiB stack)".into());
        }
        if !(10..=60_000).contains(&self.sandbox.run_timeout_ms) {
            return Err("sandbox.run_timeout_ms must be between 10 and 60000".into());
        }
        if !(1..=86_400).contains(&self.drills.max_duration_s) {
            return Err("drills.max_duration_s must be between 1 and 86400 (a day)".into());
        }
        self.resilience.check()?;
        if let Some(problem) = self
            .store
            .as_ref()
            .and_then(|s| s.problems().into_iter().next())
        {
            return Err(problem);
        }
        self.traces.check()?;
        self.process.check()?;
        // Port 0 (a free port, picked at start) never collides.
        let fixed = self.metrics.listen.filter(|m| m.port() != 0);
        if let (Some(m), Some(a)) = (fixed, &self.admin)
            && m == a.listen
        {
            return Err("metrics.listen must differ from admin.listen".into());
        }
        if fixed == Some(self.listen) {
            return Err("metrics.listen must differ from listen (the public listener)".into());
        }
        if self.sandbox.quarantine_after == 0 {
            return Err("sandbox.quarantine_after must be at least 1".into());
        }
        if !(1..=60_000).contains(&self.deadline.default_ms) {
            return Err("deadline.default_ms must be between 1 and 60000".into());
        }
        if self.deadline.default_ms + 1000 > self.limits.request_timeout_ms {
            return Err(format!(
                "limits.request_timeout_ms ({}) must exceed deadline.default_ms ({}) by at least 1000: an answer is due by the deadline, and the connection is cut at the request timeout",
                self.limits.request_timeout_ms, self.deadline.default_ms
            ));
        }
        if !(100..=self.limits.request_timeout_ms).contains(&self.limits.header_timeout_ms) {
            return Err(format!(
                "limits.header_timeout_ms ({}) must be between 100 and limits.request_timeout_ms ({})",
                self.limits.header_timeout_ms, self.limits.request_timeout_ms
            ));
        }
        if self.connections.max_total == 0 || self.connections.max_per_client == 0 {
            return Err(
                "connections.max_total and connections.max_per_client must be at least 1".into(),
            );
        }
        if self.cache.window_items == 0 {
            return Err("cache.window_items must be at least 1".into());
        }
        if self.limits.max_header_bytes < 1024 {
            return Err("limits.max_header_bytes must be at least 1024".into());
        }
        if let Some(admin) = &self.admin {
            let (public, admin) = (self.listen, admin.listen);
            let same_ip = public.ip() == admin.ip()
                || public.ip().is_unspecified()
                || admin.ip().is_unspecified();
            if public.port() != 0 && public.port() == admin.port() && same_ip {
                return Err(format!(
                    "admin.listen ({admin}) must not share the public listener's port ({public}): the admin API has a listener of its own"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let config = GatewayConfig::parse("listen: 127.0.0.1:9000\ncache:\n  window_items: 40\n")
            .expect("parses");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.cache.window_items, 40);
        assert_eq!(config.deadline.default_ms, 800);
        assert!(!config.allow_loopback_partners);
    }

    #[test]
    fn the_admin_listener_cannot_share_the_public_port() {
        for (public, admin) in [
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("0.0.0.0:9000", "127.0.0.1:9000"),
        ] {
            let text = format!("listen: {public}\nadmin:\n  listen: {admin}\n");
            let err = GatewayConfig::parse(&text).expect_err("one port for both listeners");
            assert!(err.contains("admin.listen"), "{err}");
        }
        let ok = "listen: 127.0.0.1:9000\nadmin:\n  listen: 127.0.0.1:9001\n";
        assert!(GatewayConfig::parse(ok).is_ok());
        // Port 0 on both: each gets a port of its own when the gateway starts.
        let any = "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n";
        assert!(GatewayConfig::parse(any).is_ok());
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let err = GatewayConfig::parse("cache:\n  max_byte: 12\n").expect_err("typo");
        assert!(err.contains("cache"), "{err}");
        assert!(err.contains("max_byte"), "{err}");
        let err = GatewayConfig::parse("threads: 0\n").expect_err("zero threads");
        assert!(err.contains("threads"), "{err}");
    }
}
