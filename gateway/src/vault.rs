//! Partner secrets at rest: each value sealed with XChaCha20-Poly1305 under the operator's
//! master key (a 256-bit key given by reference, `env:VAR` or `file:PATH`, never in the
//! config file), with a fresh random 192-bit nonce per seal and the secret's place
//! (partner and name) as associated data, so a sealed file copied to another partner's
//! name does not open.
//!
//! Rotation: the new key becomes `secrets.master_key` and the old one moves to
//! `secrets.previous_keys`; at startup every value sealed under a previous key is opened
//! and sealed again under the current one (and the old key can then be dropped). Each
//! sealed value names its key by a short id derived from the key, never the key.

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::GatewayError;

/// The format version of a sealed value.
const FORMAT: u8 = 1;

/// One master key: its id (as sealed values name it) and its cipher.
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    /// 64 hex digits or the standard base64 of exactly 32 bytes.
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| e.to_string())?
        } else {
            B64.decode(text)
                .map_err(|_| "a master key is 64 hex digits or base64 of 32 bytes".to_owned())?
        };
        if bytes.len() != 32 {
            return Err(format!(
                "a master key is 32 bytes (256 bits), this one is {}",
                bytes.len()
            ));
        }
        let mut hasher = Sha256::new();
        hasher.update(b"mallgate master key id\0");
        hasher.update(&bytes);
        let digest = hasher.finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(Self { id, cipher })
    }
}

/// A sealed secret value, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// The format version (1).
    pub v: u8,
    /// The id of the master key it is sealed under.
    pub key: String,
    /// The 24-byte nonce, base64.
    pub nonce: String,
    /// The ciphertext and its 16-byte tag, base64.
    pub ciphertext: String,
    /// When the value was set (RFC 3339); a re-seal keeps it.
    pub updated_at: String,
}

/// Why a sealed value did not open (never anything of the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unopened {
    /// Sealed under a key that is neither the current nor a previous one.
    UnknownKey(String),
    /// Altered, truncated, or sealed for another place.
    Invalid(String),
}

impl std::fmt::Display for Unopened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKey(id) => write!(
                f,
                "sealed under key {id}, which is neither secrets.master_key nor one of secrets.previous_keys"
            ),
            Self::Invalid(reason) => f.write_str(reason),
        }
    }
}

/// The master keys: the current one seals, every one opens.
pub struct Vault {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("current", &self.current.id)
            .field("previous", &self.previous.len())
            .finish()
    }
}

/// `N` random bytes from the operating system's generator (tokens, keys, nonces).
pub fn random<const N: usize>() -> Result<[u8; N], GatewayError> {
    let mut bytes = [0u8; N];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| GatewayError::Startup(format!("the OS random generator failed: {e}")))?;
    Ok(bytes)
}

/// The associated data binding a sealed value to its place.
fn place(partner: &str, name: &str) -> Vec<u8> {
    format!("mallgate/secret/v{FORMAT}\0{partner}\0{name}").into_bytes()
}

impl Vault {
    /// The vault of `secrets.master_key` (and `previous_keys`), each resolved with
    /// `resolve`; errors name the field, never a key.
    pub fn resolve(
        master_key: &str,
        previous: &[String],
        resolve: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Self, GatewayError> {
        let key = |field: String, reference: &str| {
            resolve(reference)
                .and_then(|text| Key::parse(&text))
                .map_err(|reason| GatewayError::Config {
                    path: field.into(),
                    reason,
                })
        };
        Ok(Self {
            current: key("secrets.master_key".into(), master_key)?,
            previous: previous
                .iter()
                .enumerate()
                .map(|(i, r)| key(format!("secrets.previous_keys[{i}]"), r))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A vault of one key given as text (tests).
    pub fn from_key(text: &str) -> Result<Self, GatewayError> {
        Self::resolve("key", &[], |_| Ok(text.to_owned()))
    }

    /// The id of the current key.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `value` as partner `partner`'s secret `name`, under the current key.
    pub fn seal(
        &self,
        partner: &str,
        name: &str,
        value: &str,
        updated_at: String,
    ) -> Result<Sealed, GatewayError> {
        let nonce: [u8; 24] = random()?;
        let aad = place(partner, name);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| GatewayError::Startup("the secret could not be sealed".into()))?;
        Ok(Sealed {
            v: FORMAT,
            key: self.current.id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
            updated_at,
        })
    }

    /// Whether `sealed` is sealed under the current key.
    pub fn is_current(&self, sealed: &Sealed) -> bool {
        sealed.key == self.current.id
    }

    /// Opens a sealed value of partner `partner`'s secret `name`. The error says why
    /// (unknown key, or it does not authenticate), never anything of the value.
    pub fn open(&self, partner: &str, name: &str, sealed: &Sealed) -> Result<String, Unopened> {
        let invalid = |r: &str| Unopened::Invalid(r.to_owned());
        if sealed.v != FORMAT {
            return Err(Unopened::Invalid(format!(
                "sealed in an unknown format (v{})",
                sealed.v
            )));
        }
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == sealed.key)
            .ok_or_else(|| Unopened::UnknownKey(sealed.key.clone()))?;
        let nonce = B64
            .decode(&sealed.nonce)
            .ok()
            .filter(|n| n.len() == 24)
            .ok_or_else(|| invalid("its nonce is not 24 bytes of base64"))?;
        let ciphertext = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| invalid("its ciphertext is not base64"))?;
        let aad = place(partner, name);
        let clear = key
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                invalid("it does not authenticate (altered, or sealed for another partner or name)")
            })?;
        String::from_utf8(clear).map_err(|_| invalid("it is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KEY_B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // the same bytes, base64

    #[test]
    fn a_value_seals_and_opens_only_in_its_place() {
        let vault = Vault::from_key(KEY_A).expect("key");
        let sealed = vault
            .seal("globex", "api-key", "s3cr3t-value", "t".into())
            .expect("seal");
        assert!(!sealed.ciphertext.contains("s3cr3t"));
        assert_eq!(
            vault.open("globex", "api-key", &sealed).as_deref(),
            Ok("s3cr3t-value")
        );
        assert!(vault.open("initech", "api-key", &sealed).is_err());
        assert!(vault.open("globex", "other", &sealed).is_err());
        let again = vault.seal("globex", "api-key", "s3cr3t-value", "t".into());
        assert_ne!(again.expect("seal").nonce, sealed.nonce, "a nonce per seal");
        let mut altered = sealed.clone();
        altered.ciphertext = B64.encode(b"0123456789abcdef0123456789");
        assert!(vault.open("globex", "api-key", &altered).is_err());
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_old_keys_still_open() {
        let hex = Vault::from_key(KEY_A).expect("hex");
        let b64 = Vault::from_key(KEY_B).expect("base64");
        assert_eq!(hex.key_id(), b64.key_id(), "the same key, the same id");
        assert!(Vault::from_key("short").is_err());
        assert!(Vault::from_key(&"ab".repeat(31)).is_err());
        let old = hex.seal("p", "n", "v", "t".into()).expect("seal");
        let new_key = "ff".repeat(32);
        let rotated = Vault::resolve("new", &["old".into()], |r| {
            Ok(if r == "new" {
                new_key.clone()
            } else {
                KEY_A.into()
            })
        })
        .expect("rotated");
        assert!(!rotated.is_current(&old));
        assert_eq!(rotated.open("p", "n", &old).as_deref(), Ok("v"));
        let resealed = rotated
            .seal("p", "n", "v", old.updated_at.clone())
            .expect("seal");
        assert!(rotated.is_current(&resealed));
        let only_new = Vault::from_key(&new_key).expect("new");
        let err = only_new.open("p", "n", &old).expect_err("unknown key");
        assert_eq!(err, Unopened::UnknownKey(old.key.clone()));
    }
}
