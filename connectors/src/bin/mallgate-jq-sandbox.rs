//! The sandbox side of connector mappings, for tools and tests (the gateway re-executes
//! itself instead). Not meant to be run by hand:
//! - `mallgate-jq-sandbox --address-space-bytes N --cpu-seconds N`: one dry-run (a JSON
//!   request and a payload on stdin, a JSON answer on stdout, see
//!   `mallgate_connectors::mapping::Sandbox`);
//! - `mallgate-jq-sandbox worker --address-space-bytes N --cpu-seconds N`: a long-lived
//!   worker of the sandbox pool (`mallgate_connectors::mapping::isolated`).

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("worker") {
        return mallgate_connectors::mapping::isolated::worker_main(args.skip(1));
    }
    mallgate_connectors::mapping::child_main(args)
}
