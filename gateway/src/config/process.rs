//! The process's life: where its pid and upgrade socket are, how long it drains.
//!
//! ```yaml
//! process:
//!   pid_file: /run/mallgate/mallgate.pid   # written once the listeners are this process's
//!   upgrade_sock: /run/mallgate/upgrade.sock  # `serve --upgrade` waits here for the sockets
//!   drain_delay_s: 5          # SIGTERM: /readyz 503 with the listeners still open
//!   idle_close_ms: 1000       # a keep-alive connection quiet this long may be closed
//!   grace_period_s: 30        # the longest in-flight requests get once listeners close
//!   graceful_shutdown_timeout_s: 5  # then the runtimes get this long to stop
//! ```

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Where the process writes its pid once it owns the listeners (a new instance after an
    /// upgrade overwrites it); absent: no pid file. Daemon mode needs one.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// The Unix socket the listening sockets pass through on an upgrade (`serve
    /// --upgrade` waits there; the running instance sends on SIGQUIT). Idle keep-alive
    /// connections follow through `<upgrade_sock>.conns`. Absent: `upgrade.sock` in the
    /// state directory, else in the temporary directory.
    #[serde(default)]
    pub upgrade_sock: Option<PathBuf>,
    /// SIGTERM: how long `/readyz` answers 503 `draining` while the listeners stay open,
    /// so that a load balancer stops sending before connections close.
    #[serde(default = "drain_delay_s")]
    pub drain_delay_s: u64,
    /// While draining with no successor, an idle keep-alive connection is closed once it
    /// has been quiet this long (and the drain delay is over); a request that arrives
    /// before is answered with `Connection: close`.
    #[serde(default = "idle_close_ms")]
    pub idle_close_ms: u64,
    /// Once the listeners stop accepting, the longest the process waits for its requests
    /// and connections to finish; it exits as soon as they have.
    #[serde(default = "grace_period_s")]
    pub grace_period_s: u64,
    /// After the grace period, how long the runtimes get to stop.
    #[serde(default = "graceful_shutdown_timeout_s")]
    pub graceful_shutdown_timeout_s: u64,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            pid_file: None,
            upgrade_sock: None,
            drain_delay_s: drain_delay_s(),
            idle_close_ms: idle_close_ms(),
            grace_period_s: grace_period_s(),
            graceful_shutdown_timeout_s: graceful_shutdown_timeout_s(),
        }
    }
}

impl ProcessConfig {
    /// The upgrade socket, given the state directory.
    pub fn upgrade_sock(&self, state_dir: Option<&std::path::Path>) -> PathBuf {
        match (&self.upgrade_sock, state_dir) {
            (Some(path), _) => path.clone(),
            (None, Some(dir)) => dir.join("upgrade.sock"),
            (None, None) => std::env::temp_dir().join("mallgate-upgrade.sock"),
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.drain_delay_s > 3600 {
            return Err("process.drain_delay_s must be at most 3600".into());
        }
        if !(10..=600_000).contains(&self.idle_close_ms) {
            return Err("process.idle_close_ms must be between 10 and 600000".into());
        }
        if !(1..=3600).contains(&self.grace_period_s) {
            return Err("process.grace_period_s must be between 1 and 3600".into());
        }
        if !(1..=600).contains(&self.graceful_shutdown_timeout_s) {
            return Err("process.graceful_shutdown_timeout_s must be between 1 and 600".into());
        }
        Ok(())
    }
}

fn drain_delay_s() -> u64 {
    5
}

fn idle_close_ms() -> u64 {
    1000
}

fn grace_period_s() -> u64 {
    30
}

fn graceful_shutdown_timeout_s() -> u64 {
    5
}

#[cfg(test)]
mod tests {
    use crate::GatewayConfig;

    /// The deployment examples are configs this gateway accepts, as they are.
    #[test]
    fn the_deployment_examples_load_and_check() {
        for name in ["systemd.yaml", "kubernetes.yaml"] {
            let path = format!("{}/../ops/examples/{name}", env!("CARGO_MANIFEST_DIR"));
            let config = GatewayConfig::load(std::path::Path::new(&path))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            config.check().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.process.drain_delay_s, 5, "{name}");
        }
    }

    #[test]
    fn process_limits_are_checked_and_the_socket_has_a_home() {
        let err = GatewayConfig::parse("process: {idle_close_ms: 1}").expect_err("refused");
        assert!(err.contains("process.idle_close_ms"), "{err}");
        let unknown = GatewayConfig::parse("process: {grace: 3}").expect_err("refused");
        assert!(unknown.contains("grace"), "{unknown}");
        let config = GatewayConfig::parse("state_dir: /var/lib/mg").expect("parses");
        assert_eq!(
            config
                .process
                .upgrade_sock(config.state_dir.as_deref())
                .to_str(),
            Some("/var/lib/mg/upgrade.sock")
        );
    }
}
