//! The mall prelude: the tricky normalization rules, owned by native code so connectors
//! state *what* maps and never do money or check-digit arithmetic in jq.
//!
//! These are the Rust functions; the mapping engine exposes them to jq as natives.

pub mod decimal;
pub mod gtin;
pub mod money;
pub mod text;
pub mod time;
pub mod tracking;
pub mod units;

/// A note about a value that was converted, kept with the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub code: &'static str,
    pub message: String,
}
