//! Evaluation of learned features without labels in training: weighted k-NN.

pub mod knn;

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
        if let Some(knn) = &self.knn {
            knn.train.validate("eval.knn.train", problems);
            knn.test.validate("eval.knn.test", problems);
            problems.check(knn.k > 0, "eval.knn.k", || "must be > 0".into());
            problems.positive("eval.knn.temperature", knn.temperature);
            problems.check(knn.batch_size > 0, "eval.knn.batch_size", || {
                "must be > 0".into()
            });
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
