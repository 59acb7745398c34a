//! Paging cursors: an opaque, signed `{window, offset, expires}`. The window is the merged,
//! sorted list a search built once; every page of one walk is cut from it, so walking all
//! pages yields each product exactly once even while partners change underneath.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub window: u64,
    pub offset: usize,
    /// Unix seconds after which the cursor is refused.
    pub expires: i64,
}

/// Why a cursor is refused (answered as a 400 naming `cursor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    Malformed,
    BadSignature,
    Expired,
}

impl CursorError {
    pub fn detail(self) -> &'static str {
        match self {
            Self::Malformed => "not a cursor this gateway issued",
            Self::BadSignature => "the cursor's signature does not match",
            Self::Expired => "the cursor has expired; start the walk again without a cursor",
        }
    }
}

/// Signs and checks cursors with one key.
#[derive(Clone)]
pub struct CursorKey(Vec<u8>);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(***)")
    }
}

impl CursorKey {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self(key.into())
    }

    /// A random key for this process.
    pub fn random() -> Self {
        let mut key = Vec::with_capacity(32);
        for _ in 0..4 {
            key.extend_from_slice(&random_u64().to_le_bytes());
        }
        Self(key)
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable_key(),
        };
        mac.update(payload);
        mac.finalize().into_bytes()[..16].to_vec()
    }

    pub fn sign(&self, cursor: Cursor) -> String {
        let payload = format!("{}.{}.{}", cursor.window, cursor.offset, cursor.expires);
        let sig = self.mac(payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    pub fn open(&self, text: &str, now_s: i64) -> Result<Cursor, CursorError> {
        let (payload, sig) = text.split_once('.').ok_or(CursorError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CursorError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| CursorError::Malformed)?;
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable_key(),
        };
        mac.update(&payload);
        mac.verify_truncated_left(&sig)
            .map_err(|_| CursorError::BadSignature)?;
        let text = std::str::from_utf8(&payload).map_err(|_| CursorError::Malformed)?;
        let mut parts = text.split('.');
        let mut next = || parts.next().ok_or(CursorError::Malformed);
        let cursor = Cursor {
            window: next()?.parse().map_err(|_| CursorError::Malformed)?,
            offset: next()?.parse().map_err(|_| CursorError::Malformed)?,
            expires: next()?.parse().map_err(|_| CursorError::Malformed)?,
        };
        if cursor.expires < now_s {
            return Err(CursorError::Expired);
        }
        Ok(cursor)
    }
}

#[cold]
fn unreachable_key() -> ! {
    panic!("HMAC accepts keys of every length")
}

/// A random 64-bit value from the standard library's randomly seeded hasher.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_tampering_and_age() {
        let key = CursorKey::new(b"k".to_vec());
        let c = Cursor {
            window: 7,
            offset: 40,
            expires: 1000,
        };
        let text = key.sign(c);
        assert_eq!(key.open(&text, 999), Ok(c));
        assert_eq!(key.open(&text, 1001), Err(CursorError::Expired));
        let forged = key.sign(Cursor { offset: 0, ..c });
        let (payload, _) = forged.split_once('.').expect("two parts");
        let (_, sig) = text.split_once('.').expect("two parts");
        assert_eq!(
            key.open(&format!("{payload}.{sig}"), 0),
            Err(CursorError::BadSignature)
        );
        assert_eq!(key.open("garbage", 0), Err(CursorError::Malformed));
        assert_eq!(
            CursorKey::new(b"other".to_vec()).open(&text, 0),
            Err(CursorError::BadSignature)
        );
    }
}
