//! Checks across sections for values that each section accepts on its own but that would abort
//! or panic later: a plan whose schedules cannot be allocated, channels that preallocate more
//! than a machine has, crops smaller than a ViT patch, a `resnet_small` pooling grid finer than
//! a crop's last map, and crop buffers over the byte budget.
//! They run inside `validate`, so they fail before anything starts.

use super::{PipelineConfig, Problems};
use crate::augment::AugmentConfig;
use crate::model::Arch;
use crate::train::Plan;

/// The most steps a plan may span: schedules are precomputed per step (four f64 vectors, so
/// 1.6 GB at this size); DINO's longest ImageNet recipe is ~16 M steps.
pub const MAX_PLAN_STEPS: u64 = 50_000_000;
/// The largest channel capacity (in items) and batch size accepted.
pub const MAX_ITEMS: usize = 1 << 16;

/// Steps of a plan, or why it cannot run.
pub fn plan_steps(plan: &Plan) -> Result<u64, String> {
    plan.steps_per_epoch
        .checked_mul(plan.epochs)
        .filter(|&t| t <= MAX_PLAN_STEPS)
        .ok_or_else(|| {
            format!(
                "{} epochs × {} steps exceed the {MAX_PLAN_STEPS} steps a plan may span (train.epochs)",
                plan.epochs, plan.steps_per_epoch
            )
        })
}

/// Crop bytes one sample holds once augmented.
pub fn sample_bytes(augment: &AugmentConfig) -> u64 {
    (AugmentConfig::GLOBAL_CROPS * augment.global_bytes()
        + augment.local_crops * augment.local_bytes()) as u64
}

pub fn check(cfg: &PipelineConfig, problems: &mut Problems) {
    for (key, n) in [
        ("decode.channel_capacity", cfg.decode.channel_capacity),
        ("augment.channel_capacity", cfg.augment.channel_capacity),
        ("batcher.channel_capacity", cfg.batcher.channel_capacity),
        ("train.batch_size", cfg.train.batch_size),
    ] {
        problems.check(n <= MAX_ITEMS, key, || {
            format!("must be <= {MAX_ITEMS}, got {n}")
        });
    }
    if let Some(steps) = cfg.train.steps_per_epoch {
        let plan = Plan {
            steps_per_epoch: steps,
            epochs: cfg.train.epochs,
        };
        if let Err(e) = plan_steps(&plan) {
            problems.push("train.epochs", e);
        }
    } else {
        problems.check(cfg.train.epochs <= MAX_PLAN_STEPS, "train.epochs", || {
            format!("must be <= {MAX_PLAN_STEPS}, got {}", cfg.train.epochs)
        });
    }
    let vit = !cfg.model.arch.is_resnet();
    if vit {
        let p = cfg.model.patch_size;
        for (key, side) in [
            ("augment.global_size", cfg.augment.global_size),
            ("augment.local_size", cfg.augment.local_size),
        ] {
            problems.check(i64::from(side) >= p, key, || {
                format!("{side} is smaller than model.patch_size {p}: a crop would hold no patch")
            });
        }
    }
    if cfg.model.arch == Arch::ResnetSmall {
        // Two stride-2 stages halve a crop twice (rounding up); a finer grid than that map would
        // only repeat its cells.
        let g = cfg.model.resnet_pool_grid;
        for (key, side) in [
            ("augment.global_size", cfg.augment.global_size),
            ("augment.local_size", cfg.augment.local_size),
        ] {
            let map = i64::from(side.div_ceil(4));
            problems.check(g <= map, "model.resnet_pool_grid", || {
                format!("{g} is finer than the {map}x{map} last map of a {side}-pixel crop ({key})")
            });
        }
    }
    let per_sample = sample_bytes(&cfg.augment);
    let batches = (cfg.batcher.channel_capacity as u64 + 2)
        .checked_mul(cfg.train.batch_size as u64)
        .and_then(|n| n.checked_mul(per_sample));
    let budget = cfg.batcher.buffer_bytes;
    problems.check(
        batches.is_some_and(|b| b.saturating_add(per_sample) <= budget),
        "batcher.buffer_bytes",
        || {
            format!(
                "{budget} bytes cannot hold {} queued batches of {} samples ({per_sample} crop bytes each) and one sample in flight; raise it or lower batcher.channel_capacity / train.batch_size",
                cfg.batcher.channel_capacity + 2,
                cfg.train.batch_size
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_would_fail_later_are_problems_now() {
        let mut cfg = PipelineConfig::default();
        assert!(cfg.validate().is_empty(), "{}", cfg.validate());
        cfg.train.epochs = u64::MAX;
        cfg.train.steps_per_epoch = Some(1000);
        cfg.augment.channel_capacity = usize::MAX;
        cfg.augment.local_size = 8; // patch 16
        cfg.batcher.buffer_bytes = 1 << 20;
        cfg.decode.channel_bytes = 0;
        let text = cfg.validate().to_string();
        for key in [
            "train.epochs",
            "augment.channel_capacity",
            "augment.local_size",
            "batcher.buffer_bytes",
            "decode.channel_bytes",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        let mut small = PipelineConfig::default();
        small.model.arch = Arch::ResnetSmall;
        small.augment.local_size = 14; // last map 4x4
        small.model.resnet_pool_grid = 4;
        assert!(small.validate().is_empty(), "{}", small.validate());
        small.model.resnet_pool_grid = 5;
        let text = small.validate().to_string();
        assert!(
            text.contains("model.resnet_pool_grid") && text.contains("14-pixel crop"),
            "{text}"
        );
        assert!(plan_steps(&Plan {
            steps_per_epoch: u64::MAX,
            epochs: 2
        })
        .is_err());
        assert_eq!(
            plan_steps(&Plan {
                steps_per_epoch: 10,
                epochs: 3
            }),
            Ok(30)
        );
    }
}
