//! Recorded sample replies: the last good reply of each capability of a partner, kept so
//! that a candidate version can be run on what the partner really sends before it is
//! accepted (DESIGN §5, first line of defence). One small reply per capability, refreshed
//! at most once a minute: recording costs one copy of a reply now and then, never a copy
//! per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::spec::Capability;

/// Largest reply kept as a sample.
pub const MAX_SAMPLE_BYTES: usize = 256 * 1024;

/// One recorded reply and the query that asked for it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub body: Arc<Vec<u8>>,
    pub query: Value,
}

/// A partner's samples, by capability.
#[derive(Debug)]
pub struct SampleBook {
    samples: Mutex<HashMap<Capability, (Instant, Sample)>>,
    /// A sample is replaced by a newer reply at most this often.
    refresh: Duration,
}

impl SampleBook {
    pub fn new(refresh: Duration) -> Self {
        Self {
            samples: Mutex::new(HashMap::new()),
            refresh,
        }
    }

    /// Whether a reply of `capability` would be kept now (checked before copying it).
    pub fn wants(&self, capability: Capability, len: usize) -> bool {
        len <= MAX_SAMPLE_BYTES
            && self
                .samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&capability)
                .is_none_or(|(at, _)| at.elapsed() >= self.refresh)
    }

    pub fn record(&self, capability: Capability, body: &[u8], query: &Value) {
        if !self.wants(capability, body.len()) {
            return;
        }
        let sample = Sample {
            body: Arc::new(body.to_vec()),
            query: query.clone(),
        };
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(capability, (Instant::now(), sample));
    }

    /// Every recorded sample, by capability.
    pub fn all(&self) -> Vec<(Capability, Sample)> {
        let mut out: Vec<_> = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(c, (_, s))| (*c, s.clone()))
            .collect();
        out.sort_by_key(|(c, _)| *c);
        out
    }
}
