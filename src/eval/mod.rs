//! Evaluation of learned features without labels in training: weighted k-NN.

pub mod composite;
pub mod knn;
pub mod linear;
pub mod loader;
pub mod online;
pub mod segment;

use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::source::SourceConfig;

/// `[eval]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Weighted k-NN between a labelled train and test source; run after training when set
    /// and `enabled`.
    pub knn: Option<KnnConfig>,
    /// The linear protocol (`dino-stream eval linear`).
    pub linear: Option<linear::LinearConfig>,
}

/// `[eval.knn]`: DINO's weighted k-NN protocol.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnnConfig {
    /// Run the evaluation after training (`run --no-eval` switches it off for one run).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Labelled source of the feature bank.
    pub train: SourceConfig,
    /// Labelled source to classify.
    pub test: SourceConfig,
    /// Neighbours that vote.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Votes are weighted by exp(similarity / temperature).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Side of the evaluation view (shorter side resized to size/0.875, centre crop); defaults
    /// to `augment.global_size`.
    #[serde(default)]
    pub image_size: Option<u32>,
    /// Images per feature-extraction forward pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Evaluate the untrained network too, for comparison, after `run`.
    #[serde(default = "default_true")]
    pub compare_untrained: bool,
    /// Online k-NN during training every N steps on the subsets below (0: off). Its time is
    /// capped at 5% of the training time (evaluations are skipped beyond that).
    #[serde(default)]
    pub every_steps: u64,
    /// Size of the online bank (spread evenly over `train`).
    #[serde(default = "default_online_bank")]
    pub online_bank: usize,
    /// Number of online queries (spread evenly over `test`).
    #[serde(default = "default_online_queries")]
    pub online_queries: usize,
}

fn default_online_bank() -> usize {
    2000
}
fn default_online_queries() -> usize {
    500
}

fn default_k() -> usize {
    20
}
fn default_temperature() -> f64 {
    0.07
}
fn default_batch() -> usize {
    256
}
fn default_true() -> bool {
    true
}

impl EvalConfig {
    pub fn validate(&self, problems: &mut Problems) {
        if let Some(lin) = &self.linear {
            lin.validate(problems);
        }
        if let Some(knn) = &self.knn {
            knn.train.validate("eval.knn.train", problems);
            knn.test.validate("eval.knn.test", problems);
            problems.check(knn.k > 0, "eval.knn.k", || "must be > 0".into());
            problems.positive("eval.knn.temperature", knn.temperature);
            problems.check(knn.batch_size > 0, "eval.knn.batch_size", || {
                "must be > 0".into()
            });
            if knn.every_steps > 0 {
                problems.check(
                    knn.online_bank > 0 && knn.online_queries > 0,
                    "eval.knn.online_bank",
                    || "online_bank and online_queries must be > 0".into(),
                );
            }
            for (key, src) in [("eval.knn.train", &knn.train), ("eval.knn.test", &knn.test)] {
                problems.check(src.has_known_length(), &format!("{key}.type"), || {
                    format!(
                        "k-NN needs a labelled source of known length, got {}",
                        src.kind_name()
                    )
                });
            }
        }
    }
}
