//! Partner secrets, sealed (see [`crate::vault`]): one file per secret, never a value in
//! clear. The store only keeps what the vault sealed; it never sees a key.

use std::fs;
use std::path::PathBuf;

use super::{Store, io, remove_durably, safe_id, write_atomic};
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
    fn secret_path(&self, partner: &str, name: &str) -> Result<PathBuf, GatewayError> {
        if !valid_secret_name(name) {
            return Err(GatewayError::Config {
                path: PathBuf::from("secret name"),
                reason: format!("`{name}` is not a secret name"),
            });
        }
        Ok(self
            .root
            .join("secrets")
            .join(safe_id(partner)?)
            .join(format!("{name}.json")))
    }

    /// Every sealed secret: (partner, name, sealed value), in order. A file that does not
    /// parse is an error naming it.
    pub fn sealed_secrets(&self) -> Result<Vec<(String, String, Sealed)>, GatewayError> {
        let root = self.root.join("secrets");
        let partners = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&root)(e)),
        };
        let mut out = Vec::new();
        for dir in partners.flatten() {
            let partner = dir.file_name().to_string_lossy().into_owned();
            if safe_id(&partner).is_err() {
                continue;
            }
            let files = fs::read_dir(dir.path()).map_err(io(&dir.path()))?;
            for file in files.flatten() {
                let file_name = file.file_name().to_string_lossy().into_owned();
                let Some(name) = file_name.strip_suffix(".json") else {
                    continue;
                };
                if !valid_secret_name(name) {
                    continue;
                }
                let path = file.path();
                let bytes = fs::read(&path).map_err(io(&path))?;
                let sealed: Sealed =
                    serde_json::from_slice(&bytes).map_err(|e| GatewayError::Config {
                        path: path.clone(),
                        reason: format!("a sealed secret that does not read: {e}"),
                    })?;
                out.push((partner.clone(), name.to_owned(), sealed));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }

    /// Writes a sealed secret (atomically, owner-only).
    pub fn put_sealed(
        &self,
        partner: &str,
        name: &str,
        sealed: &Sealed,
    ) -> Result<(), GatewayError> {
        let path = self.secret_path(partner, name)?;
        let json = serde_json::to_vec_pretty(sealed).map_err(|e| GatewayError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &json)
    }

    /// Removes a sealed secret; `false` when there was none.
    pub fn remove_sealed(&self, partner: &str, name: &str) -> Result<bool, GatewayError> {
        let path = self.secret_path(partner, name)?;
        if !path.exists() {
            return Ok(false);
        }
        remove_durably(&path)?;
        Ok(true)
    }
}
