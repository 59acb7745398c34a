//! Chaos tests for Mallgate: the real gateway against the simulated fleet with faults
//! injected in userspace — the simulator's knobs, stopped replicas, the gateway's own
//! drills, and [`proxy::FaultProxy`] for the faults below HTTP. The tests live in
//! `tests/`; they share the gateway's integration harness (`mallgate-testkit`) and
//! [`scenario`]'s helpers, which run each scenario as a drill and keep its report.

/// The TCP fault proxy lives in the shared test harness (the gateway's fleet tests cut
/// etcd with it too).
pub use mallgate_testkit::proxy;
pub mod scenario;
