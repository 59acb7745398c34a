//! The sandbox pool of the gateway: worker processes that run every partner-owned jq
//! program (DESIGN §5), started as this executable's `sandbox-worker` subcommand.

use std::path::PathBuf;

use mallgate_connectors::mapping::isolated::{IsolatedPool, IsolationConfig};

use crate::GatewayError;
use crate::config::SandboxConfig;

/// The executable that serves as a sandbox child or worker: the configured one, else this
/// one.
pub fn sandbox_program(configured: Option<&PathBuf>) -> Result<PathBuf, GatewayError> {
    match configured {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe()
            .map_err(|e| GatewayError::Startup(format!("cannot find this executable: {e}"))),
    }
}

/// The pool as configured (its program: `sandbox.program`, else the dry-runs' `admin`
/// one, else this executable); its workers start on first use.
pub fn sandbox_pool(
    config: &SandboxConfig,
    dry_run_program: Option<&PathBuf>,
) -> Result<IsolatedPool, GatewayError> {
    let mut isolation = IsolationConfig::new(
        sandbox_program(config.program.as_ref().or(dry_run_program))?,
        vec!["sandbox-worker".into()],
        config.workers,
    );
    isolation.address_space_bytes = config.address_space_mib * 1024 * 1024;
    isolation.max_run = std::time::Duration::from_millis(config.run_timeout_ms);
    IsolatedPool::start(isolation).map_err(|e| GatewayError::Startup(format!("sandbox pool: {e}")))
}
