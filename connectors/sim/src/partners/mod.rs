//! The partners' native dialects, one module each.

pub mod voltmart;

use axum::Router;

use crate::server::AppState;
use crate::world::Partner;

/// The dialect a partner speaks, if it is simulated yet.
pub fn router(partner: Partner) -> Option<Router<AppState>> {
    match partner {
        Partner::Voltmart => Some(voltmart::router()),
        _ => None,
    }
}
