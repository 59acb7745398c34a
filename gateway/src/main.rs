//! `mallgate serve --config FILE` | `mallgate demo [--listen ADDR] [--seed N] [--connectors DIR]`
//! | `mallgate connector check|push ...`
//!
//! A thin CLI: everything lives in the library.
#![allow(clippy::print_stdout)] // `mallgate connector` prints its results on stdout

use std::path::PathBuf;

use anyhow::{Context, bail};
#[cfg(feature = "demo")]
use mallgate::demo::{self, DemoOptions};
use mallgate::telemetry::{self, Mode};
use mallgate::{Gateway, GatewayConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  mallgate serve --config FILE      serve the unified API (SIGTERM drains, SIGINT stops)
  mallgate demo [--listen 127.0.0.1:8080] [--seed 7] [--connectors DIR]
                                    the simulated partner fleet (ports 18000-18602, as the
                                    example connectors say) and the gateway, on loopback
  mallgate connector check FILE [--owner operator|partner:ID] [--sample FILE --capability C]
                                    validate offline; with a sample reply, print the records
  mallgate connector push FILE --admin URL --token T|env:VAR [--if-match REV]
                                    register a connector version through the admin API";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        // The dry-run sandbox's child side (started by the gateway itself, never by hand).
        Some("sandbox-child") => {
            let code = mallgate_connectors::mapping::child_main(args);
            std::process::exit(if code == std::process::ExitCode::SUCCESS {
                0
            } else {
                1
            });
        }
        // A worker of the sandbox pool that runs partner-owned jq (started by the gateway).
        Some("sandbox-worker") => {
            let code = mallgate_connectors::mapping::isolated::worker_main(args);
            std::process::exit(if code == std::process::ExitCode::SUCCESS {
                0
            } else {
                1
            });
        }
        Some("connector") => {
            let rest: Vec<String> = args.collect();
            let outcome = match rest.first().map(String::as_str) {
                Some("check") => mallgate::cli::check(&rest[1..])?,
                Some("push") => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(mallgate::cli::push(&rest[1..]))?,
                Some("-h" | "--help") => mallgate::cli::Outcome {
                    ok: true,
                    output: USAGE.to_owned(),
                },
                _ => bail!("{USAGE}"),
            };
            println!("{}", outcome.output);
            std::process::exit(if outcome.ok { 0 } else { 1 });
        }
        Some("serve") => {
            let mut config = None;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--config" | "-c" => {
                        config = Some(PathBuf::from(args.next().context("--config needs a file")?))
                    }
                    "-h" | "--help" => {
                        println!("{USAGE}");
                        return Ok(());
                    }
                    other => bail!("unknown argument `{other}`\n{USAGE}"),
                }
            }
            let path = config.context("serve needs --config FILE")?;
            let config = GatewayConfig::load(&path)?;
            let _telemetry = telemetry::init(&config, Mode::Serve)?;
            tracing::info!(
                target: "mallgate::process",
                version = env!("CARGO_PKG_VERSION"),
                listen = %config.listen,
                "starting"
            );
            let gateway = Gateway::build(config, std::sync::Arc::default()).inspect_err(
                |e| tracing::error!(target: "mallgate::process", error = %e, "cannot start"),
            )?;
            gateway.run()?;
            Ok(())
        }
        #[cfg(feature = "demo")]
        Some("demo") => demo_main(args),
        #[cfg(not(feature = "demo"))]
        Some("demo") => bail!("this mallgate was built without the `demo` feature"),
        Some("-h" | "--help") | None => {
            eprintln!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

/// `mallgate demo`: the simulated fleet and the gateway, on loopback.
#[cfg(feature = "demo")]
fn demo_main(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut options = DemoOptions::default();
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let addr: std::net::SocketAddr =
                    value()?.parse().context("--listen must be IP:PORT")?;
                if !addr.ip().is_loopback() {
                    bail!("the demo listens on loopback only, not {addr}");
                }
                options.listen = addr;
            }
            "--seed" => options.seed = value()?.parse().context("--seed must be an integer")?,
            "--connectors" => options.connectors_dir = PathBuf::from(value()?),
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let fleet = demo::start_fleet(options.seed, Some(options.sim_base_port))?;
    let (admin, tokens) = demo::demo_admin()?;
    let config = demo::demo_config(&options, Some(admin));
    let _telemetry = telemetry::init(&config, Mode::Demo)?;
    let gateway = Gateway::build(config, demo::demo_secrets())?;
    eprintln!(
        "{}",
        demo::sample_commands(&format!("http://{}", options.listen), &fleet, &tokens)
    );
    gateway.run()?;
    Ok(())
}
