//! Secret resolution. A connector names its secrets by reference (`secret:NAME` in its own
//! partner's namespace; `env:VAR` and `file:PATH` for operator connectors only) and the
//! runtime resolves them at call time through a [`SecretStore`]. Resolved values live in
//! [`Secret`], whose `Debug` and `Display` never show them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::RwLock;

use crate::error::ConnectorError;
use crate::spec::{Owner, SecretSource};

/// A secret value. It prints as `Secret(***)`; read it with [`Secret::expose`] only where
/// it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where partner secrets live. The admin API writes them; connectors only hold references.
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// The secret `name` of `partner`, if set.
    fn get(&self, partner: &str, name: &str) -> Option<Secret>;
}

/// The in-memory view every call reads; the gateway fills it from its config and from the
/// sealed secrets of its state directory, and the admin API keeps both in step.
#[derive(Default)]
pub struct MemorySecretStore {
    values: RwLock<BTreeMap<(String, String), Secret>>,
}

impl fmt::Debug for MemorySecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .values
            .read()
            .map(|v| v.keys().map(|(p, n)| format!("{p}/{n}")).collect())
            .unwrap_or_default();
        f.debug_struct("MemorySecretStore")
            .field("names", &names)
            .finish()
    }
}

impl MemorySecretStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or replaces) a partner's secret.
    pub fn set(&self, partner: &str, name: &str, value: impl Into<String>) {
        if let Ok(mut values) = self.values.write() {
            values.insert((partner.to_owned(), name.to_owned()), Secret::new(value));
        }
    }

    /// Removes a partner's secret; `false` when it was not set.
    pub fn remove(&self, partner: &str, name: &str) -> bool {
        self.values
            .write()
            .map(|mut v| v.remove(&(partner.to_owned(), name.to_owned())).is_some())
            .unwrap_or(false)
    }

    /// The names of a partner's secrets (never their values), in order.
    pub fn names(&self, partner: &str) -> Vec<String> {
        self.values
            .read()
            .map(|v| {
                v.keys()
                    .filter(|(p, _)| p == partner)
                    .map(|(_, n)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl SecretStore for MemorySecretStore {
    fn get(&self, partner: &str, name: &str) -> Option<Secret> {
        self.values
            .read()
            .ok()?
            .get(&(partner.to_owned(), name.to_owned()))
            .cloned()
    }
}

fn refused(reference: &str, reason: impl Into<String>) -> ConnectorError {
    ConnectorError::Secret {
        reference: reference.to_owned(),
        reason: reason.into(),
    }
}

/// Resolves a field that holds a reference (or, where the spec allows, a literal).
/// `partner` is the connector's own partner: `secret:` never reaches another namespace.
pub fn resolve(
    text: &str,
    partner: &str,
    owner: &Owner,
    store: &dyn SecretStore,
) -> Result<Secret, ConnectorError> {
    let Some((source, name)) = crate::spec::SecretRef::parse(text) else {
        return Ok(Secret::new(text));
    };
    match source {
        SecretSource::Partner => store
            .get(partner, name)
            .ok_or_else(|| refused(text, format!("partner `{partner}` has no secret `{name}`"))),
        SecretSource::Env | SecretSource::File if *owner != Owner::Operator => Err(refused(
            text,
            "env: and file: references are for operator connectors only",
        )),
        SecretSource::Env => std::env::var(name)
            .map(Secret::new)
            .map_err(|_| refused(text, "the environment variable is not set")),
        SecretSource::File => std::fs::read_to_string(name)
            .map(|v| Secret::new(v.trim_end_matches(['\r', '\n'])))
            .map_err(|e| refused(text, format!("cannot read the file: {}", e.kind()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_in_the_partners_namespace_only() {
        let store = MemorySecretStore::new();
        store.set("acme", "key", "s3cret-value");
        store.set("other", "key", "not-yours");
        let partner = Owner::Partner("acme".into());
        let got = resolve("secret:key", "acme", &partner, &store).expect("resolves");
        assert_eq!(got.expose(), "s3cret-value");
        assert_eq!(format!("{got:?} {got}"), "Secret(***) ***");
        assert!(!format!("{store:?}").contains("s3cret"));
        let missing = resolve("secret:nope", "acme", &partner, &store).expect_err("missing");
        assert!(missing.to_string().contains("secret:nope"));
        let env = resolve("env:HOME", "acme", &partner, &store).expect_err("not operator");
        assert!(env.to_string().contains("operator"));
        assert_eq!(
            resolve("literal-id", "acme", &partner, &store)
                .expect("literal")
                .expose(),
            "literal-id"
        );
    }
}
