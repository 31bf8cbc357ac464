//! Pipeline configuration: typed sections, layered loading and validation.
//!
//! Layers, lowest first: the built-in defaults (`Default` impls), `config/default.toml` (built
//! into the binary), the pipeline file, `DINO_STREAM__SECTION__KEY`
//! environment variables, then `--set section.key=value`. Every problem is reported with its
//! key path and the layer that set it, before anything starts.

pub mod limits;
mod load;
#[cfg(test)]
mod mutation_tests;
mod problems;
pub mod reference;

use serde::{Deserialize, Serialize};

pub use load::{load, load_text, ConfigError, LoadOptions, LoadedConfig, BUILTIN_DEFAULTS};
pub use problems::{Problem, Problems};

use crate::augment::AugmentConfig;
use crate::cache::CacheConfig;
use crate::checkpoint::CheckpointConfig;
use crate::decode::DecodeConfig;
use crate::dist::DistConfig;
use crate::eval::EvalConfig;
use crate::metrics::MetricsConfig;
use crate::model::ModelConfig;
use crate::pipeline::BatcherConfig;
use crate::source::SourceConfig;
use crate::train::TrainConfig;

/// A whole pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    pub source: SourceConfig,
    pub decode: DecodeConfig,
    pub augment: AugmentConfig,
    pub batcher: BatcherConfig,
    pub cache: CacheConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub checkpoint: CheckpointConfig,
    pub eval: EvalConfig,
    pub metrics: MetricsConfig,
    pub dist: DistConfig,
}

impl PipelineConfig {
    /// Checks every section and returns all problems found.
    pub fn validate(&self) -> Problems {
        let mut problems = Problems::new();
        self.source.validate("source", &mut problems);
        self.decode.validate(&mut problems);
        self.augment.validate(&mut problems);
        self.batcher.validate(&mut problems);
        self.cache.validate(&mut problems);
        self.model.validate(&mut problems);
        self.train.validate(&mut problems);
        self.checkpoint.validate(&mut problems);
        self.eval.validate(&mut problems);
        self.metrics.validate(&mut problems);
        self.dist.validate(&mut problems);
        limits::check(self, &mut problems);
        if self.train.steps_per_epoch.is_none() && !self.source.has_known_length() {
            problems.push(
                "train.steps_per_epoch",
                format!(
                    "required for a {} source, whose length is unknown",
                    self.source.kind_name()
                ),
            );
        }
        problems
    }

    /// The resolved configuration as TOML (saved with checkpoints and printed by `validate`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }
}
