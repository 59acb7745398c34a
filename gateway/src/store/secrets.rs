//! Partner secrets, sealed (see [`crate::vault`]): one file per secret, never a value in
//! clear. The store only keeps what the vault sealed; it never sees a key.

use std::path::PathBuf;

use super::{Store, encode, safe_id};
use crate::GatewayError;
use crate::vault::Sealed;

/// A secret name safe as a file name: letters, digits, `-` and `_`, at most 64.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Store {
    fn secret_key(partner: &str, name: &str) -> Result<String, GatewayError> {
        if !valid_secret_name(name) {
            return Err(GatewayError::Config {
                path: PathBuf::from("secret name"),
                reason: format!("`{name}` is not a secret name"),
            });
        }
        Ok(format!("secrets/{}/{name}.json", safe_id(partner)?))
    }

    /// Every sealed secret: (partner, name, sealed value), in order. A record that does not
    /// parse is an error naming it.
    pub fn sealed_secrets(&self) -> Result<Vec<(String, String, Sealed)>, GatewayError> {
        let mut out = Vec::new();
        for key in self.backend.keys("secrets/")? {
            let Some((partner, file)) =
                key.strip_prefix("secrets/").and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let Some(name) = file.strip_suffix(".json") else {
                continue;
            };
            if safe_id(partner).is_err() || !valid_secret_name(name) {
                continue;
            }
            let Some(bytes) = self.backend.get(&key)? else {
                continue;
            };
            let sealed: Sealed =
                serde_json::from_slice(&bytes).map_err(|e| GatewayError::Config {
                    path: PathBuf::from(format!("{}: {key}", self.describe())),
                    reason: format!("a sealed secret that does not read: {e}"),
                })?;
            out.push((partner.to_owned(), name.to_owned(), sealed));
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    /// Writes a sealed secret (owner-only in a state directory).
    pub fn put_sealed(
        &self,
        partner: &str,
        name: &str,
        sealed: &Sealed,
    ) -> Result<(), GatewayError> {
        let key = Self::secret_key(partner, name)?;
        self.backend.put(&key, &encode(&key, sealed)?)
    }

    /// Removes a sealed secret; `false` when there was none.
    pub fn remove_sealed(&self, partner: &str, name: &str) -> Result<bool, GatewayError> {
        self.backend.delete(&Self::secret_key(partner, name)?)
    }
}
