//! `mallgate serve | demo | connector check|push|test|record | drill run | store migrate`
//! (`--help` on each).
//!
//! A thin CLI: everything lives in the library.
#![allow(clippy::print_stdout)] // `mallgate connector` and `drill` print their results

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};
#[cfg(feature = "demo")]
use mallgate::demo::{self, DemoOptions};
use mallgate::server::RunOptions;
use mallgate::telemetry::{self, Mode};
use mallgate::{Gateway, GatewayConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Mallgate: one unified mall API in front of many partner dialects.
#[derive(Debug, Parser)]
#[command(name = "mallgate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the unified API (SIGTERM drains, SIGQUIT hands over to `serve --upgrade`,
    /// SIGINT stops, SIGHUP reloads the connectors).
    Serve(ServeArgs),
    /// The simulated partner fleet (ports 18000-18602, as the example connectors say) and
    /// the gateway, on loopback.
    Demo {
        /// The public listener (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The simulated world's seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// The connectors directory (default: the example connectors).
        #[arg(long)]
        connectors: Option<PathBuf>,
    },
    /// A partner's connector: validate it offline, or register it.
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// Failover drills against a running gateway.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// The admin API's store.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copies a state directory into etcd (an empty prefix), for a fleet.
    Migrate(mallgate::cli::store::MigrateArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The gateway config (YAML).
    #[arg(short, long)]
    config: PathBuf,
    /// Takes the listeners (and idle connections) over from the running instance: start
    /// this, then send the running one SIGQUIT (within 5 s of this one's "waiting" line).
    #[arg(short, long)]
    upgrade: bool,
    /// Runs in the background (the parent returns once this instance serves; systemd's
    /// `Type=forking`). Needs `process.pid_file`.
    #[arg(short, long)]
    daemon: bool,
}

#[derive(Debug, Subcommand)]
enum ConnectorCommand {
    /// Validates offline; with a sample reply, prints the records it maps to.
    Check(mallgate::cli::CheckArgs),
    /// Registers a connector version through the admin API.
    Push(mallgate::cli::PushArgs),
    /// Replays recorded partner replies (a cases directory) and checks the records;
    /// prints a pass/fail table, exit 1 when a case fails.
    Test(mallgate::cli::cases::TestArgs),
    /// Asks the partner's live API once and writes a test case of what the connector maps.
    Record(Box<mallgate::cli::cases::RecordArgs>),
}

#[derive(Debug, Subcommand)]
enum DrillCommand {
    /// Starts a drill, follows it, prints the report; exit 0 passed, 1 failed, 2 error.
    Run(Box<mallgate::cli::drill::RunArgs>),
}

/// The process's own children: the sandbox child and worker take their arguments from the
/// gateway that started them, never from a person.
fn sandbox_entry() {
    let mut args = std::env::args().skip(1);
    let code = match args.next().as_deref() {
        Some("sandbox-child") => mallgate_connectors::mapping::child_main(args),
        Some("sandbox-worker") => mallgate_connectors::mapping::isolated::worker_main(args),
        _ => return,
    };
    std::process::exit(if code == std::process::ExitCode::SUCCESS {
        0
    } else {
        1
    });
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Prints a command's outcome and exits: 0 when it succeeded, 1 when not.
fn finish(outcome: mallgate::cli::Outcome) -> ! {
    println!("{}", outcome.output);
    std::process::exit(if outcome.ok { 0 } else { 1 });
}

fn main() -> anyhow::Result<()> {
    sandbox_entry();
    match Cli::parse().command {
        Command::Connector(ConnectorCommand::Check(args)) => finish(mallgate::cli::check(&args)?),
        Command::Connector(ConnectorCommand::Test(args)) => {
            finish(runtime()?.block_on(mallgate::cli::cases::test(&args))?)
        }
        Command::Connector(ConnectorCommand::Record(args)) => {
            finish(runtime()?.block_on(mallgate::cli::cases::record(&args))?)
        }
        Command::Connector(ConnectorCommand::Push(args)) => {
            finish(runtime()?.block_on(mallgate::cli::push(&args))?)
        }
        Command::Drill(DrillCommand::Run(args)) => {
            match runtime()?.block_on(mallgate::cli::drill::run(&args)) {
                Ok(outcome) => finish(outcome),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            }
        }
        Command::Store(StoreCommand::Migrate(args)) => {
            let done = mallgate::cli::store::migrate(&args)?;
            println!(
                "copied {} keys and {} log lines from {} to {}",
                done.keys,
                done.log_lines,
                args.from.display(),
                args.to
                    .clone()
                    .unwrap_or_else(|| "the config's store".into())
            );
            Ok(())
        }
        Command::Serve(args) => serve(args),
        #[cfg(feature = "demo")]
        Command::Demo {
            listen,
            seed,
            connectors,
        } => demo_main(listen, seed, connectors),
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => bail!("this mallgate was built without the `demo` feature"),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&args.config)?;
    // Before any thread starts: a fork keeps only the thread that forks.
    let ready = if args.daemon {
        if config.process.pid_file.is_none() {
            bail!("--daemon needs process.pid_file in the config (the service manager reads it)");
        }
        Some(daemon()?)
    } else {
        None
    };
    let telemetry = telemetry::init(&config, Mode::Serve)?;
    tracing::info!(
        target: "mallgate::process",
        version = env!("CARGO_PKG_VERSION"),
        listen = %config.listen,
        upgrade = args.upgrade,
        "starting"
    );
    let gateway = Gateway::build(config, std::sync::Arc::default()).inspect_err(
        |e| tracing::error!(target: "mallgate::process", error = %e, "cannot start"),
    )?;
    // Dropped (flushed) by whichever comes first: the early exit once drained, or the
    // end of `run`.
    let telemetry = std::sync::Arc::new(std::sync::Mutex::new(Some(telemetry)));
    let flush = std::sync::Arc::clone(&telemetry);
    let options = RunOptions {
        upgrade: args.upgrade,
        on_ready: ready.map(|mut writer| {
            Box::new(move || {
                use std::io::Write;
                let _ = writer.write_all(b"1");
            }) as Box<dyn FnOnce() + Send>
        }),
        on_exit: Some(Box::new(move || {
            drop(flush.lock().ok().and_then(|mut t| t.take()));
        })),
    };
    let served = gateway.run(options);
    drop(telemetry.lock().ok().and_then(|mut t| t.take()));
    served?;
    Ok(())
}

/// Forks into the background (the working directory and standard streams kept). The
/// parent waits until the daemon serves (it writes a byte once its listeners are its own
/// and the pid file is written) and exits 0, or exits 1 if the daemon died first.
fn daemon() -> anyhow::Result<std::io::PipeWriter> {
    let (mut reader, writer) = std::io::pipe()?;
    let daemonize = daemonize::Daemonize::new()
        .working_directory(std::env::current_dir()?)
        .umask(0o077)
        .stdout(daemonize::Stdio::keep())
        .stderr(daemonize::Stdio::keep());
    match daemonize.execute() {
        daemonize::Outcome::Parent(parent) => {
            parent?;
            drop(writer);
            let mut byte = [0u8; 1];
            let ok = std::io::Read::read(&mut reader, &mut byte).is_ok_and(|n| n == 1);
            if !ok {
                eprintln!("error: the daemon exited before it served (see its log)");
            }
            std::process::exit(if ok { 0 } else { 1 });
        }
        daemonize::Outcome::Child(child) => {
            child?;
            drop(reader);
            Ok(writer)
        }
    }
}

/// `mallgate demo`: the simulated fleet and the gateway, on loopback.
#[cfg(feature = "demo")]
fn demo_main(
    listen: std::net::SocketAddr,
    seed: u64,
    connectors: Option<PathBuf>,
) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!("the demo listens on loopback only, not {listen}");
    }
    let mut options = DemoOptions {
        listen,
        seed,
        ..DemoOptions::default()
    };
    if let Some(dir) = connectors {
        options.connectors_dir = dir;
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
    gateway.run(RunOptions::default())?;
    Ok(())
}
