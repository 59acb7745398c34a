//! The operator's `resilience:` section: the breaker, ejection, retry-budget and
//! health-check defaults of every partner stack (DESIGN §7). A connector's own `policies`
//! (timeouts, retries, hedging, limits) sit on top; these are the operator's alone.
//!
//! ```yaml
//! resilience:
//!   breaker_failures: 5        # consecutive failed exchanges that open an endpoint's breaker
//!   breaker_open_ms: 2000      # how long an open breaker refuses before one probe goes
//!   eject_failures: 2          # consecutive refused connections or failed probes that eject
//!   eject_base_ms: 1000        # the first ejection; each further one doubles it...
//!   eject_max_ms: 30000        # ...up to this
//!   retry_budget_percent: 10   # retries and hedges as a share of exchanges (connector default)
//!   retry_reserve_per_s: 1     # retries always allowed per second, whatever the budget says
//!   health_interval_s: 10      # health-check defaults for checks that do not say
//!   health_timeout_ms: 1000
//! ```

use std::time::Duration;

use serde::Deserialize;

/// The `resilience:` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
    pub eject_failures: u32,
    pub eject_base_ms: u64,
    pub eject_max_ms: u64,
    pub retry_budget_percent: u32,
    pub retry_reserve_per_s: u32,
    pub health_interval_s: u64,
    pub health_timeout_ms: u64,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        let runtime = mallgate_connectors::runtime::resilience::ResilienceSettings::default();
        let ms = |d: Duration| d.as_millis() as u64;
        Self {
            breaker_failures: runtime.breaker_failures,
            breaker_open_ms: ms(runtime.breaker_open),
            eject_failures: runtime.eject_failures,
            eject_base_ms: ms(runtime.eject_base),
            eject_max_ms: ms(runtime.eject_max),
            retry_budget_percent: runtime.retry_budget_percent,
            retry_reserve_per_s: runtime.retry_reserve_per_s,
            health_interval_s: runtime.health_interval.as_secs(),
            health_timeout_ms: ms(runtime.health_timeout),
        }
    }
}

impl ResilienceConfig {
    /// The runtime's form.
    pub fn runtime(&self) -> mallgate_connectors::runtime::resilience::ResilienceSettings {
        mallgate_connectors::runtime::resilience::ResilienceSettings {
            breaker_failures: self.breaker_failures,
            breaker_open: Duration::from_millis(self.breaker_open_ms),
            eject_failures: self.eject_failures,
            eject_base: Duration::from_millis(self.eject_base_ms),
            eject_max: Duration::from_millis(self.eject_max_ms),
            retry_reserve_per_s: self.retry_reserve_per_s,
            retry_budget_percent: self.retry_budget_percent,
            health_interval: Duration::from_secs(self.health_interval_s),
            health_timeout: Duration::from_millis(self.health_timeout_ms),
        }
    }

    /// Every field within its range, named by its path when it is not.
    pub fn check(&self) -> Result<(), String> {
        let within = |name: &str, value: u64, low: u64, high: u64| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "resilience.{name} must be between {low} and {high} (it is {value})"
                ))
            }
        };
        within("breaker_failures", self.breaker_failures.into(), 1, 1000)?;
        within("breaker_open_ms", self.breaker_open_ms, 10, 600_000)?;
        within("eject_failures", self.eject_failures.into(), 1, 100)?;
        within("eject_base_ms", self.eject_base_ms, 10, 600_000)?;
        within(
            "eject_max_ms",
            self.eject_max_ms,
            self.eject_base_ms,
            3_600_000,
        )?;
        within(
            "retry_budget_percent",
            self.retry_budget_percent.into(),
            0,
            100,
        )?;
        within(
            "retry_reserve_per_s",
            self.retry_reserve_per_s.into(),
            0,
            1000,
        )?;
        within("health_interval_s", self.health_interval_s, 1, 3600)?;
        within("health_timeout_ms", self.health_timeout_ms, 1, 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_runtime_defaults_and_ranges_are_checked() {
        let config = ResilienceConfig::default();
        assert_eq!(
            config.runtime(),
            mallgate_connectors::runtime::resilience::ResilienceSettings::default()
        );
        assert!(config.check().is_ok());
        let bad = ResilienceConfig {
            eject_max_ms: 500,
            ..config
        };
        let reason = bad.check().expect_err("max below base");
        assert!(reason.contains("resilience.eject_max_ms"), "{reason}");
        let bad = ResilienceConfig {
            retry_budget_percent: 101,
            ..config
        };
        assert!(bad.check().is_err());
    }
}
