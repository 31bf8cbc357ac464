//! Skipped samples: counted per stage, and logged once per file so a corrupt file in a
//! hundred-epoch run is one line, not a hundred.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;

pub struct SkipLog {
    metrics: Arc<Metrics>,
    seen: Mutex<HashSet<String>>,
}

impl SkipLog {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(SkipLog {
            metrics,
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// Counts a skipped sample at `stage`; logs `what` and `why` the first time `what` is seen.
    pub fn skip(&self, stage: &str, what: &str, why: &str) {
        self.metrics.stage_skipped.with_label_values(&[stage]).inc();
        let first = self
            .seen
            .lock()
            .map(|mut s| s.insert(what.to_string()))
            .unwrap_or(true);
        if first {
            tracing::warn!(stage, "skipped {what}: {why}");
        }
    }

    /// Distinct samples skipped so far (a bad file met in every epoch counts once).
    pub fn distinct(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.len())
    }

    pub fn total(&self, stage: &str) -> u64 {
        self.metrics.stage_skipped.with_label_values(&[stage]).get()
    }
}
