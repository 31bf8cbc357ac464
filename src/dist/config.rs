//! `[dist]`: the knobs of data-parallel training (the launch itself comes from torchrun's or
//! Slurm's environment, never from the file).

use serde::{Deserialize, Serialize};

use crate::config::Problems;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    /// Longest wait, in seconds, for the rendezvous and for any collective: a rank that died or
    /// hangs makes the others fail after at most this long, with an error naming it.
    pub timeout_seconds: f64,
    /// Compare a checksum of the teacher's weights across ranks every this many steps (0 =
    /// never); a mismatch stops the run.
    pub check_every: u64,
    /// Gradient all-reduce bucket size in MiB (PyTorch DDP's `bucket_cap_mb` default is 25).
    pub bucket_mb: f64,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig {
            timeout_seconds: 300.0,
            check_every: 100,
            bucket_mb: 25.0,
        }
    }
}

impl DistConfig {
    pub fn validate(&self, problems: &mut Problems) {
        problems.check(
            self.timeout_seconds.is_finite() && self.timeout_seconds >= 1.0,
            "dist.timeout_seconds",
            || format!("must be at least 1, got {}", self.timeout_seconds),
        );
        problems.check(
            self.bucket_mb.is_finite() && self.bucket_mb > 0.0,
            "dist.bucket_mb",
            || format!("must be > 0, got {}", self.bucket_mb),
        );
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.timeout_seconds.max(1.0))
    }
}
