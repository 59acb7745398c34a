//! `partner-sim --seed 7 [--replicas 2] [--bind 127.0.0.1:0] [--base-port 18000]`: serves
//! the simulated partner fleet and prints every address as one JSON line, then runs until
//! Ctrl-C. With `--base-port`, ports are fixed (see `FleetConfig::base_port`).

use std::net::SocketAddr;

use anyhow::{Context, bail};
use mallgate_partner_sim::{Fleet, FleetConfig};

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<FleetConfig> {
    let mut config = FleetConfig::default();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seed" => config.seed = value()?.parse().context("--seed must be an integer")?,
            "--replicas" => {
                config.replicas = value()?.parse().context("--replicas must be an integer")?;
            }
            "--bind" => {
                let bind: SocketAddr = value()?.parse().context("--bind must be IP:PORT")?;
                if !bind.ip().is_loopback() {
                    bail!("the simulator binds loopback addresses only, not {bind}");
                }
                config.bind = bind;
            }
            "--base-port" => {
                config.base_port = Some(
                    value()?
                        .parse()
                        .context("--base-port must be a port number")?,
                );
            }
            "-h" | "--help" => {
                eprintln!(
                    "usage: partner-sim [--seed N] [--replicas N] [--bind 127.0.0.1:0] [--base-port 18000]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = parse(std::env::args().skip(1))?;
    let fleet = Fleet::start(config).await?;
    #[allow(clippy::print_stdout)] // the addresses are the program's output
    {
        println!("{}", fleet.addresses());
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
