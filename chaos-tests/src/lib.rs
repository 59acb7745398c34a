//! Chaos tests for Mallgate: the real gateway against the simulated fleet with faults
//! injected in userspace (the simulator's knobs, stopped replicas). The tests live in
//! `tests/`; they share the gateway's integration harness, the `mallgate-testkit` crate.
