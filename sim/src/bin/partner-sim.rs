//! `partner-sim --seed 7 [--replicas 2] [--bind 127.0.0.1:0] [--base-port 18000]
//! [--tls DIR [--mtls]]`: serves the simulated partner fleet and prints every address as
//! one JSON line, then runs until Ctrl-C. With `--base-port`, ports are fixed (see
//! `FleetConfig::base_port`). With `--tls DIR`, every replica serves HTTPS with a
//! certificate from a CA generated now, whose PEM is written to `DIR/ca.pem` (the server
//! certificate and key too, `DIR/server.pem` and `DIR/server-key.pem`, for a proxy or a
//! benchmark upstream to serve with); `--mtls` also requires a client certificate from
//! that CA (written to `DIR/client.pem` and `DIR/client-key.pem`).

use std::net::SocketAddr;

use std::path::PathBuf;

use anyhow::{Context, bail};
use mallgate_partner_sim::pki::{Alpn, Leaf, Pki, server_config};
use mallgate_partner_sim::{Fleet, FleetConfig};

struct Args {
    config: FleetConfig,
    tls_dir: Option<PathBuf>,
    mtls: bool,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut config = FleetConfig::default();
    let mut tls_dir = None;
    let mut mtls = false;
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
            "--tls" => tls_dir = Some(PathBuf::from(value()?)),
            "--mtls" => mtls = true,
            "-h" | "--help" => {
                eprintln!(
                    "usage: partner-sim [--seed N] [--replicas N] [--bind 127.0.0.1:0] [--base-port 18000] [--tls DIR [--mtls]]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (try --help)"),
        }
    }
    if mtls && tls_dir.is_none() {
        bail!("--mtls needs --tls DIR");
    }
    Ok(Args {
        config,
        tls_dir,
        mtls,
    })
}

/// Writes a private key readable by its owner only.
fn write_key(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(pem.as_bytes())?;
    Ok(())
}

/// Generates the CA (and a client identity for `--mtls`) into `dir`; returns what the
/// address line reports.
fn tls(
    dir: &std::path::Path,
    mtls: bool,
    config: &mut FleetConfig,
) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pki = Pki::generate("mallgate partner-sim CA")?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pki.ca_pem()).with_context(|| format!("writing {}", ca.display()))?;
    let server = pki.server(&Leaf::Good)?;
    let (cert, key) = (dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(&cert, &server.cert_pem)?;
    write_key(&key, &server.key_pem)?;
    let client_ca = mtls.then(|| pki.ca_pem().to_owned());
    config.tls = Some(server_config(&server, client_ca.as_deref(), Alpn::Both)?);
    let mut shown = serde_json::json!({ "ca": ca, "server_certificate": cert, "server_key": key });
    if mtls {
        let client = pki.client("mallgate")?;
        let (cert, key) = (dir.join("client.pem"), dir.join("client-key.pem"));
        std::fs::write(&cert, &client.cert_pem)?;
        write_key(&key, &client.key_pem)?;
        shown["client_certificate"] = serde_json::json!(cert);
        shown["client_key"] = serde_json::json!(key);
    }
    Ok(shown)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        mut config,
        tls_dir,
        mtls,
    } = parse(std::env::args().skip(1))?;
    let shown_tls = match &tls_dir {
        Some(dir) => Some(tls(dir, mtls, &mut config)?),
        None => None,
    };
    let fleet = Fleet::start(config).await?;
    let mut addresses = fleet.addresses();
    if let Some(shown) = shown_tls {
        addresses["tls"] = shown;
    }
    #[allow(clippy::print_stdout)] // the addresses are the program's output
    {
        println!("{addresses}");
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
