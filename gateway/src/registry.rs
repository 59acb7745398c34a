//! The registry: which connector versions serve, as one immutable [`Snapshot`] behind an
//! `ArcSwap`. A request loads the snapshot once and answers wholly from it; a reload builds
//! a complete new snapshot first and swaps it in one store, so requests in flight finish on
//! the generation they started with.
//!
//! Partner resources (pooled clients, OAuth tokens) are kept apart, keyed by partner, and
//! handed to every version of that partner's connectors: a new version brings no token
//! storm and no cold pool. Startup is a reload from an empty snapshot.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use mallgate_connectors::mapping::MappingPool;
use mallgate_connectors::mapping::isolated::IsolatedPool;
use mallgate_connectors::runtime::guard::AddressGuard;
use mallgate_connectors::runtime::resilience::EndpointState;
use mallgate_connectors::runtime::secrets::SecretStore;
use mallgate_connectors::runtime::{Connector, Mapper, PartnerResources, RuntimeConfig};
use mallgate_connectors::{Capability, ConnectorError, ConnectorSpec, Format, Owner, Problem};
use sha2::{Digest, Sha256};

use crate::GatewayError;

/// One connector version as it serves.
pub struct LiveConnector {
    pub connector: Connector,
    /// Where the document came from (a file name, or `admin`).
    pub source: String,
    /// SHA-256 of the document text: the same text keeps its version across reloads.
    pub digest: String,
    /// Who submitted it (decides which secret references it may use).
    pub owner: Owner,
    /// The document it was built from (a broken replacement falls back to it).
    pub text: Arc<str>,
    /// What its partner calls did (canary judgement, status).
    pub stats: VersionStats,
}

/// Figures of one connector version's partner calls (answers from cache excluded).
#[derive(Debug, Default)]
pub struct VersionStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// Calls whose mapping overran the sandbox.
    pub overruns: AtomicU64,
    pub records: AtomicU64,
    /// Records dropped by the schema or identity checks.
    pub dropped: AtomicU64,
    pub micros: AtomicU64,
    /// Why the last overrun happened (worker killed, died, answer over the cap).
    pub last_overrun: Mutex<Option<String>>,
}

impl VersionStats {
    /// One finished call: `Ok((records, dropped))` or its error.
    pub fn record(
        &self,
        result: Result<(usize, usize), &ConnectorError>,
        elapsed: std::time::Duration,
    ) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok((records, dropped)) => {
                self.records.fetch_add(records as u64, Ordering::Relaxed);
                self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                match e {
                    ConnectorError::MappingOverrun { reason } => {
                        self.overruns.fetch_add(1, Ordering::Relaxed);
                        *self.last_overrun.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(reason.clone());
                    }
                    // Every record dropped: they count as schema violations too.
                    ConnectorError::MappingRejected { dropped, .. } => {
                        self.dropped.fetch_add(*dropped as u64, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn last_overrun(&self) -> Option<String> {
        self.last_overrun
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get(&self) -> StatsView {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsView {
            calls: l(&self.calls),
            failures: l(&self.failures),
            overruns: l(&self.overruns),
            records: l(&self.records),
            dropped: l(&self.dropped),
            micros: l(&self.micros),
        }
    }
}

/// A copy of [`VersionStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsView {
    pub calls: u64,
    pub failures: u64,
    pub overruns: u64,
    pub records: u64,
    pub dropped: u64,
    pub micros: u64,
}

impl std::ops::AddAssign for StatsView {
    /// Figures of the same version from another replica.
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.overruns += other.overruns;
        self.records += other.records;
        self.dropped += other.dropped;
        self.micros += other.micros;
    }
}

/// A canary: a candidate version taking `percent` of the requests beside the active one.
#[derive(Debug, Clone)]
pub struct Canary {
    pub live: Arc<LiveConnector>,
    pub percent: u8,
}

impl fmt::Debug for LiveConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveConnector")
            .field("connector", &self.connector)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl LiveConnector {
    pub fn spec(&self) -> &ConnectorSpec {
        self.connector.spec()
    }
    pub fn id(&self) -> &str {
        &self.connector.spec().id
    }
    pub fn partner(&self) -> &str {
        &self.connector.spec().partner
    }
    pub fn version(&self) -> u32 {
        self.connector.version()
    }
    pub fn serves(&self, capability: Capability) -> bool {
        self.connector.spec().capabilities.contains_key(&capability)
    }
}

/// The connectors serving at one moment, sorted by id.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Grows by one at every swap.
    pub generation: u64,
    pub connectors: Vec<Arc<LiveConnector>>,
    /// Canary versions, by connector id.
    pub canaries: Vec<Canary>,
}

impl Snapshot {
    /// Every endpoint of the serving set once (a partner's connectors share endpoint
    /// state), canaries' included.
    pub fn endpoint_states(&self) -> Vec<Arc<EndpointState>> {
        let mut seen = std::collections::HashSet::new();
        let all = self
            .connectors
            .iter()
            .chain(self.canaries.iter().map(|c| &c.live));
        let mut states = Vec::new();
        for c in all {
            for route in c.connector.routes() {
                if seen.insert(Arc::as_ptr(&route.state)) {
                    states.push(Arc::clone(&route.state));
                }
            }
        }
        states
    }

    /// The versions one request calls (DESIGN §3): for each connector with a canary, the
    /// canary or the active version is chosen here, once, and every call of the request
    /// uses that choice — an inventory request's catalog, stock and location calls never
    /// mix versions.
    pub fn view(self: &Arc<Self>) -> View {
        let chosen = (!self.canaries.is_empty()).then(|| {
            self.connectors
                .iter()
                .map(
                    |active| match self.canaries.iter().find(|k| k.live.id() == active.id()) {
                        Some(k) if (crate::cursor::random_u64() % 100) < u64::from(k.percent) => {
                            Arc::clone(&k.live)
                        }
                        _ => Arc::clone(active),
                    },
                )
                .collect()
        });
        View {
            snapshot: Arc::clone(self),
            chosen,
        }
    }
}

/// One request's view of a snapshot: its generation and the version of each connector the
/// request calls (see [`Snapshot::view`]).
#[derive(Debug)]
pub struct View {
    snapshot: Arc<Snapshot>,
    /// Without canaries, the snapshot's own list.
    chosen: Option<Vec<Arc<LiveConnector>>>,
}

impl View {
    pub fn generation(&self) -> u64 {
        self.snapshot.generation
    }

    /// Every connector, in the version this request calls.
    pub fn connectors(&self) -> &[Arc<LiveConnector>] {
        self.chosen.as_deref().unwrap_or(&self.snapshot.connectors)
    }

    /// The connectors serving a capability, in merge rank (priority, then partner, then id).
    pub fn serving(&self, capability: Capability) -> Vec<Arc<LiveConnector>> {
        let mut out: Vec<_> = self
            .connectors()
            .iter()
            .filter(|c| c.serves(capability))
            .cloned()
            .collect();
        out.sort_by(|a, b| rank(a).cmp(&rank(b)));
        out
    }

    /// The carrier connector that declares `code` (case-insensitive).
    pub fn carrier(&self, code: &str) -> Option<Arc<LiveConnector>> {
        self.connectors()
            .iter()
            .find(|c| c.spec().codes.iter().any(|k| k.eq_ignore_ascii_case(code)))
            .cloned()
    }
}

/// The merge rank of a connector: lower wins descriptive-field conflicts.
pub fn rank(c: &LiveConnector) -> (u32, &str, &str) {
    (c.spec().effective_priority(), c.partner(), c.id())
}

/// A connector document to load.
#[derive(Debug, Clone)]
pub struct Document {
    /// A file name or `admin`, for messages.
    pub name: String,
    pub text: String,
    pub owner: Owner,
    /// The version the store assigned (admin documents); `None`: numbered by content
    /// (a changed document gets the next number).
    pub version: Option<u32>,
    /// A canary beside the active document of the same id, taking this share of calls.
    pub canary_percent: Option<u8>,
}

/// The live snapshot and the parts that outlive connector versions.
pub struct Registry {
    current: ArcSwap<Snapshot>,
    resources: Mutex<HashMap<String, Arc<PartnerResources>>>,
    /// Connector id -> (digest, version) of the last version built.
    versions: Mutex<HashMap<String, (String, u32)>>,
    /// One reload at a time.
    reload_lock: Mutex<()>,
    guard: Arc<dyn AddressGuard>,
    secrets: Arc<dyn SecretStore>,
    mappers: Mappers,
    runtime: RuntimeConfig,
    /// What partners are granted (kinds, priority, codes); partner-owned documents are
    /// checked against it at every build, so a narrowed grant applies at the next reload.
    /// Swapped whole when the admin API onboards a partner or changes its grant.
    grants: ArcSwap<BTreeMap<String, mallgate_connectors::Grant>>,
    /// The shared store's revision the serving set was last read at (etcd; 0: none).
    store_revision: AtomicI64,
    /// Whether the shared store is reachable (set once, when there is one).
    store_link: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>>,
    /// Versions built (compiled and bound) per (partner, connector), since the start: a
    /// reload rebuilds only documents whose digest changed.
    builds: Mutex<BTreeMap<(String, String), u64>>,
}

/// Where connector programs run: partner-owned ones always in the sandbox pool; the
/// operator's on the in-process mapping threads when the operator trusts them.
#[derive(Debug, Clone)]
pub struct Mappers {
    pub trusted: Arc<MappingPool>,
    pub isolated: Arc<IsolatedPool>,
    pub operator_in_process: bool,
}

impl Mappers {
    fn for_document(&self, doc: &Document) -> Mapper {
        match &doc.owner {
            Owner::Operator if self.operator_in_process => {
                Mapper::InProcess(Arc::clone(&self.trusted))
            }
            owner => Mapper::isolated(Arc::clone(&self.isolated), &doc.text, owner),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("generation", &self.current.load().generation)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry (generation 0, nothing serving).
    pub fn new(
        guard: Arc<dyn AddressGuard>,
        secrets: Arc<dyn SecretStore>,
        mappers: Mappers,
        runtime: RuntimeConfig,
    ) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            resources: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            reload_lock: Mutex::new(()),
            guard,
            secrets,
            mappers,
            runtime,
            grants: ArcSwap::default(),
            store_revision: AtomicI64::new(0),
            store_link: std::sync::OnceLock::new(),
            builds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Versions built per (partner, connector) since the start.
    pub fn builds(&self) -> Vec<((String, String), u64)> {
        let builds = self.builds.lock().unwrap_or_else(|p| p.into_inner());
        builds.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// The live replicas sharing the partners' limits (one without a fleet).
    pub fn fleet_share(&self) -> &mallgate_connectors::runtime::stack::FleetShare {
        &self.runtime.fleet
    }

    /// The shared store's revision the serving set was last read at (0: none).
    pub fn store_revision(&self) -> i64 {
        self.store_revision.load(Ordering::Acquire)
    }

    /// Whether the shared store is reachable: `None` without one.
    pub fn store_connected(&self) -> Option<bool> {
        self.store_link.get().map(|l| l.load(Ordering::Acquire))
    }

    /// The shared store's reachability flag (see [`crate::store::Store::link`]).
    pub fn set_store_link(&self, link: Arc<std::sync::atomic::AtomicBool>) {
        let _ = self.store_link.set(link);
    }

    /// Records the revision a successful reload read the store at.
    pub fn set_store_revision(&self, revision: i64) {
        self.store_revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// The partners' grants.
    #[must_use]
    pub fn with_grants(self, grants: BTreeMap<String, mallgate_connectors::Grant>) -> Self {
        self.set_grants(grants);
        self
    }

    /// Replaces the partners' grants; the next build checks documents against them.
    pub fn set_grants(&self, grants: BTreeMap<String, mallgate_connectors::Grant>) {
        self.grants.store(Arc::new(grants));
    }

    /// Every partner's grant.
    pub fn grants(&self) -> BTreeMap<String, mallgate_connectors::Grant> {
        self.grants.load().as_ref().clone()
    }

    /// The grant of `partner` (the default one when none was given).
    pub fn grant(&self, partner: &str) -> mallgate_connectors::Grant {
        self.grants.load().get(partner).cloned().unwrap_or_default()
    }

    /// What `spec` (a partner-owned document `text`) declares beyond its partner's grant.
    pub fn grant_problems(&self, spec: &ConnectorSpec, text: &str) -> Vec<Problem> {
        self.grant(&spec.partner).problems(spec, text)
    }

    /// The snapshot to answer one request from.
    /// Where programs run (the trusted threads and the sandbox pool).
    pub fn mappers(&self) -> &Mappers {
        &self.mappers
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The long-lived resources of a partner, created on first use.
    pub fn resources(&self, partner: &str) -> Result<Arc<PartnerResources>, ConnectorError> {
        let mut map = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(partner) {
            return Ok(Arc::clone(r));
        }
        let r = PartnerResources::new(partner, Arc::clone(&self.guard), self.runtime.clone())?;
        map.insert(partner.to_owned(), Arc::clone(&r));
        Ok(r)
    }

    /// A candidate document bound to its partner's live resources (stack, tokens, address
    /// guard, secrets) without serving it: what a live dry-run calls the partner with.
    /// Refused like a build: a document that does not load, an address the guard refuses,
    /// a declaration beyond the partner's grant.
    pub fn candidate(
        &self,
        text: &str,
        owner: &Owner,
        version: u32,
    ) -> Result<Connector, ConnectorError> {
        let doc = Document {
            name: "dry-run".into(),
            text: text.to_owned(),
            owner: owner.clone(),
            version: Some(version),
            canary_percent: None,
        };
        Ok(self.build(&doc, &HashMap::new())?.connector)
    }

    /// Replaces the serving set with `documents`, all or nothing: every document is loaded,
    /// compiled and bound first; any failure rejects the whole change (each problem named)
    /// and the active snapshot keeps serving. A document whose text did not change keeps
    /// its version (and its compiled programs are rebuilt identically).
    pub fn reload(&self, documents: &[Document]) -> Result<Arc<Snapshot>, GatewayError> {
        let _one = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut problems = Vec::new();
        let mut built: BTreeMap<String, Arc<LiveConnector>> = BTreeMap::new();
        let mut canaries: Vec<(String, Canary)> = Vec::new();
        let mut codes: BTreeMap<String, String> = BTreeMap::new();
        let versions = self
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut next_versions = versions.clone();
        // A document that did not change keeps its built connector (no recompile): the
        // same text, owner and version.
        let current = self.current.load_full();
        let unchanged = |doc: &Document| {
            let digest = format!("{:x}", Sha256::digest(doc.text.as_bytes()));
            current
                .connectors
                .iter()
                .chain(current.canaries.iter().map(|k| &k.live))
                .find(|c| {
                    c.digest == digest
                        && c.owner == doc.owner
                        && doc.version.is_none_or(|v| v == c.version())
                })
                .cloned()
        };
        for doc in documents {
            let built_now = match unchanged(doc) {
                Some(live) => Ok(live),
                None => self.build(doc, &versions).map(|live| {
                    let key = (live.partner().to_owned(), live.id().to_owned());
                    *self
                        .builds
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(key)
                        .or_default() += 1;
                    Arc::new(live)
                }),
            };
            match built_now {
                Ok(live) if doc.canary_percent.is_some() => canaries.push((
                    doc.name.clone(),
                    Canary {
                        live,
                        percent: doc.canary_percent.unwrap_or(0),
                    },
                )),
                Ok(live) => {
                    let id = live.id().to_owned();
                    for code in &live.spec().codes {
                        let code = code.to_ascii_lowercase();
                        if let Some(other) = codes.insert(code.clone(), id.clone()) {
                            problems.push(format!(
                                "{}: carrier code `{code}` is already declared by `{other}`",
                                doc.name
                            ));
                        }
                    }
                    if built.contains_key(&id) {
                        problems.push(format!(
                            "{}: connector id `{id}` is declared twice",
                            doc.name
                        ));
                        continue;
                    }
                    next_versions.insert(id.clone(), (live.digest.clone(), live.version()));
                    built.insert(id, live);
                }
                Err(e) => problems.push(format!("{}: {e}", doc.name)),
            }
        }
        for (name, canary) in &canaries {
            if !built.contains_key(canary.live.id()) {
                problems.push(format!(
                    "{name}: a canary of `{}` needs an active version beside it",
                    canary.live.id()
                ));
            }
        }
        if !problems.is_empty() {
            return Err(GatewayError::Rejected { problems });
        }
        let generation = self.current.load().generation + 1;
        let snapshot = Arc::new(Snapshot {
            generation,
            connectors: built.into_values().collect(),
            canaries: canaries.into_iter().map(|(_, c)| c).collect(),
        });
        *self.versions.lock().unwrap_or_else(|p| p.into_inner()) = next_versions;
        self.current.store(Arc::clone(&snapshot));
        Ok(snapshot)
    }

    /// The connector's endpoint and token URLs the address guard refuses, by pointer.
    pub fn address_problems(&self, spec: &ConnectorSpec) -> Vec<Problem> {
        let mut urls: Vec<(String, &str)> = spec
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("/endpoints/{i}/url"), e.url.as_str()))
            .collect();
        if let mallgate_connectors::spec::Auth::Oauth2ClientCredentials { token_url, .. } =
            &spec.auth
        {
            urls.push(("/auth/token_url".into(), token_url.as_str()));
        }
        urls.into_iter()
            .filter_map(|(pointer, text)| {
                let reason = match url::Url::parse(text) {
                    Ok(u) => self.guard.check(&u).err()?,
                    Err(e) => format!("not a URL: {e}"),
                };
                Some(Problem {
                    pointer,
                    line: None,
                    column: None,
                    reason: format!("refused by the address guard: {reason}"),
                })
            })
            .collect()
    }

    fn build(
        &self,
        doc: &Document,
        versions: &HashMap<String, (String, u32)>,
    ) -> Result<LiveConnector, ConnectorError> {
        let (spec, programs) =
            ConnectorSpec::load_compiled(&doc.text, Format::sniff(&doc.text), &doc.owner)?;
        // Every address the connector names must pass the SSRF guard before it can serve,
        // and a partner declares nothing its grant does not give it.
        let mut refused = self.address_problems(&spec);
        if matches!(doc.owner, Owner::Partner(_)) {
            refused.extend(self.grant_problems(&spec, &doc.text));
        }
        if !refused.is_empty() {
            return Err(ConnectorError::InvalidSpec { problems: refused });
        }
        let digest = format!("{:x}", Sha256::digest(doc.text.as_bytes()));
        let version = match (doc.version, versions.get(&spec.id)) {
            (Some(v), _) => v,
            (None, Some((old, v))) if *old == digest => *v,
            (None, Some((_, v))) => v + 1,
            (None, None) => 1,
        };
        let resources = self.resources(&spec.partner)?;
        let connector = Connector::new(
            Arc::new(spec),
            Arc::new(programs),
            version,
            doc.owner.clone(),
            resources,
            Arc::clone(&self.secrets),
            self.mappers.for_document(doc),
        )?;
        Ok(LiveConnector {
            connector,
            source: doc.name.clone(),
            digest,
            owner: doc.owner.clone(),
            text: Arc::from(doc.text.as_str()),
            stats: VersionStats::default(),
        })
    }
}

/// The connector documents of a directory (`*.yaml`, `*.yml`, `*.json`), operator-owned,
/// in name order.
pub fn documents_in(dir: &std::path::Path) -> Result<Vec<Document>, GatewayError> {
    let io = |source| GatewayError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|source| GatewayError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(Document {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                text,
                owner: Owner::Operator,
                version: None,
                canary_percent: None,
            })
        })
        .collect()
}
