//! `mallgate-connector check [--owner operator|partner:ID] FILE...`: validates connector
//! documents offline, printing each problem as `FILE:LINE:COLUMN: POINTER: REASON`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use mallgate_connectors::{ConnectorError, ConnectorSpec, Format, Owner};

const USAGE: &str = "usage: mallgate-connector check [--owner operator|partner:ID] FILE...";

fn parse_owner(text: &str) -> anyhow::Result<Owner> {
    match text {
        "operator" => Ok(Owner::Operator),
        other => match other.strip_prefix("partner:") {
            Some(id) if !id.is_empty() => Ok(Owner::Partner(id.to_owned())),
            _ => bail!("--owner takes `operator` or `partner:ID`, not `{other}`"),
        },
    }
}

fn check(path: &Path, owner: &Owner) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("yaml" | "yml") => Format::Yaml,
        _ => Format::sniff(&text),
    };
    match ConnectorSpec::load(&text, format, owner) {
        Ok(spec) => {
            let capabilities: Vec<&str> = spec.capabilities.keys().map(|c| c.name()).collect();
            println!(
                "ok {}: connector `{}` of partner `{}` ({:?}, {} endpoint(s); {})",
                path.display(),
                spec.id,
                spec.partner,
                spec.kind,
                spec.endpoints.len(),
                capabilities.join(", ")
            );
            Ok(true)
        }
        Err(ConnectorError::InvalidSpec { problems }) => {
            for p in problems {
                let at = match (p.line, p.column) {
                    (Some(line), Some(column)) => format!("{}:{line}:{column}", path.display()),
                    _ => path.display().to_string(),
                };
                let pointer = if p.pointer.is_empty() {
                    "(document)"
                } else {
                    &p.pointer
                };
                println!("{at}: {pointer}: {}", p.reason);
            }
            Ok(false)
        }
        Err(other) => Err(other.into()),
    }
}

fn run() -> anyhow::Result<bool> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("check") => {}
        _ => bail!(USAGE),
    }
    let mut owner = Owner::Operator;
    let mut files = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--owner" {
            owner = parse_owner(&args.next().context("--owner needs a value")?)?;
        } else {
            files.push(arg);
        }
    }
    if files.is_empty() {
        bail!(USAGE);
    }
    let mut all_ok = true;
    for file in files {
        all_ok &= check(Path::new(&file), &owner)?;
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mallgate-connector: {e:#}");
            ExitCode::from(2)
        }
    }
}
