//! The child side of connector dry-runs: compiles and runs a candidate connector's jq on a
//! sample reply under rlimits (see `mallgate_connectors::mapping::Sandbox`). Not meant to be
//! run by hand: it reads a JSON request and a payload on stdin and answers JSON on stdout.

fn main() -> std::process::ExitCode {
    mallgate_connectors::mapping::child_main(std::env::args().skip(1))
}
