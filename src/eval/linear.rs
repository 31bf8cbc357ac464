//! DINO's linear protocol (eval_linear.py) on frozen features: one linear layer (weights
//! N(0, 0.01), zero bias) trained with SGD (momentum 0.9, no weight decay, lr scaled by
//! batch / 256) under a per-epoch cosine schedule down to 0, cross-entropy, top-1 and top-5 on
//! the evaluation view (resize to size / 0.875, centre crop).
//!
//! Features for a ViT are the CLS tokens of the last `n_last_blocks` blocks (each after the final
//! norm) concatenated, optionally with the average of the last block's patch tokens (official:
//! n = 4 for ViT-S, n = 1 + avgpool for ViT-B). The official script concatenates the pooled
//! tokens by interleaving; the order of inputs is immaterial to a linear layer trained from
//! scratch, so they are appended here.
//!
//! Two modes: `augment` (the official recipe: every epoch sees a fresh RandomResizedCrop
//! (scale 0.08–1) and horizontal flip of every training image through the frozen backbone) and
//! `features` (features of the evaluation view extracted once, then many cheap epochs).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::Problems;
use crate::source::SourceConfig;

/// `[eval.linear]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LinearConfig {
    /// Labelled training source (default: `eval.knn.train`).
    pub train: Option<SourceConfig>,
    /// Labelled evaluation source (default: `eval.knn.test`).
    pub test: Option<SourceConfig>,
    /// CLS tokens of this many last blocks are concatenated (ViTs).
    pub n_last_blocks: usize,
    /// Append the average-pooled patch tokens of the last block.
    pub avgpool_patchtokens: bool,
    pub epochs: usize,
    /// Learning rate for a batch of 256 (scaled linearly with `batch_size`).
    pub lr: f64,
    pub batch_size: usize,
    pub mode: LinearMode,
    /// Side of the views (default: `augment.global_size`).
    pub image_size: Option<u32>,
    /// Seed of the initialisation, the batch order and the crops.
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LinearMode {
    /// RandomResizedCrop + flip per epoch through the backbone (the official protocol).
    Augment,
    /// Pre-extracted features of the evaluation view (fast).
    Features,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig {
            train: None,
            test: None,
            n_last_blocks: 4,
            avgpool_patchtokens: false,
            epochs: 100,
            lr: 0.001,
            batch_size: 128,
            mode: LinearMode::Augment,
            image_size: None,
            seed: 0,
        }
    }
}

impl LinearConfig {
    pub fn validate(&self, problems: &mut Problems) {
        for (key, src) in [
            ("eval.linear.train", &self.train),
            ("eval.linear.test", &self.test),
        ] {
            if let Some(src) = src {
                src.validate(key, problems);
                problems.check(src.has_known_length(), &format!("{key}.type"), || {
                    format!(
                        "the linear probe needs a labelled source of known length, got {}",
                        src.kind_name()
                    )
                });
            }
        }
        problems.check(self.n_last_blocks >= 1, "eval.linear.n_last_blocks", || {
            "must be >= 1".into()
        });
        problems.check(self.epochs >= 1, "eval.linear.epochs", || {
            "must be >= 1".into()
        });
        problems.positive("eval.linear.lr", self.lr);
        problems.check(self.batch_size >= 1, "eval.linear.batch_size", || {
            "must be >= 1".into()
        });
    }
}

/// A trained linear classifier.
pub struct Classifier {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Classifier {
    pub fn logits(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias))
    }
}

/// The optimiser of the protocol, stepped by the caller once per batch.
pub struct Trainer {
    pub classifier: Classifier,
    momentum_w: Tensor,
    momentum_b: Tensor,
    base_lr: f64,
    epochs: usize,
}

impl Trainer {
    /// `lr` is per 256 samples, as in the official script.
    pub fn new(
        dim: i64,
        classes: i64,
        lr: f64,
        batch_size: usize,
        epochs: usize,
        seed: u64,
    ) -> Self {
        tch::manual_seed(seed as i64);
        let weight = (Tensor::randn([classes, dim], (Kind::Float, tch::Device::Cpu)) * 0.01)
            .set_requires_grad(true);
        let bias =
            Tensor::zeros([classes], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        Trainer {
            momentum_w: Tensor::zeros_like(&weight),
            momentum_b: Tensor::zeros_like(&bias),
            classifier: Classifier { weight, bias },
            base_lr: lr * batch_size as f64 / 256.0,
            epochs,
        }
    }

    /// `CosineAnnealingLR(epochs, eta_min=0)` stepped once per epoch.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.base_lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * epoch as f64 / self.epochs as f64).cos())
    }

    /// One SGD step (momentum 0.9, dampening 0, no weight decay) on a batch; returns the loss.
    pub fn step(&mut self, x: &Tensor, y: &Tensor, lr: f64) -> f64 {
        let c = &mut self.classifier;
        c.weight.zero_grad();
        c.bias.zero_grad();
        let loss = c.logits(x).cross_entropy_for_logits(y);
        loss.backward();
        tch::no_grad(|| {
            for (p, buf) in [
                (&c.weight, &mut self.momentum_w),
                (&c.bias, &mut self.momentum_b),
            ] {
                let g = p.grad();
                let _ = buf.g_mul_scalar_(0.9).g_add_(&g);
                let _ = p.shallow_clone().g_sub_(&(&*buf * lr));
            }
        });
        loss.double_value(&[])
    }
}

/// Trains on fixed features `[n, d]` with labels `[n]` (the fast mode, and the test of the
/// optimiser): shuffled batches per epoch, seeded.
pub fn train_on_features(
    features: &Tensor,
    labels: &Tensor,
    classes: i64,
    cfg: &LinearConfig,
) -> Classifier {
    let n = features.size()[0];
    let mut trainer = Trainer::new(
        features.size()[1],
        classes,
        cfg.lr,
        cfg.batch_size,
        cfg.epochs,
        cfg.seed,
    );
    let bs = cfg.batch_size as i64;
    for epoch in 0..cfg.epochs {
        let lr = trainer.lr_at(epoch);
        let mut order: Vec<i64> = (0..n).collect();
        crate::rng::Rng::keyed(&[cfg.seed, epoch as u64, 0x11_4EA2]).shuffle(&mut order);
        let order = Tensor::from_slice(&order);
        let mut start = 0;
        while start < n {
            let idx = order.narrow(0, start, bs.min(n - start));
            trainer.step(
                &features.index_select(0, &idx),
                &labels.index_select(0, &idx),
                lr,
            );
            start += bs;
        }
    }
    trainer.classifier
}

/// Top-1 and top-5 accuracy (top-k capped at the class count) of `logits` `[n, C]`.
pub fn topk_accuracy(logits: &Tensor, labels: &Tensor) -> (f64, f64) {
    let n = logits.size()[0] as f64;
    let classes = logits.size()[1];
    let (_, top) = logits.topk(5.min(classes), 1, true, true);
    let hits = top.eq_tensor(&labels.unsqueeze(1));
    let top1 = hits.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]) as f64 / n;
    let top5 = hits.any_dim(1, false).sum(Kind::Int64).int64_value(&[]) as f64 / n;
    (top1, top5)
}

/// The protocol's features from a ViT's last blocks: CLS of each of the last `n` (oldest
/// first), then the mean patch token of the last when `avgpool`.
pub fn vit_features(layers: &[Tensor], avgpool: bool) -> Tensor {
    let mut parts: Vec<Tensor> = layers.iter().map(|t| t.select(1, 0)).collect();
    if avgpool {
        let last = layers.last().expect("at least one block");
        let n = last.size()[1];
        parts.push(
            last.narrow(1, 1, n - 1)
                .mean_dim([1i64].as_slice(), false, Kind::Float),
        );
    }
    Tensor::cat(&parts, 1)
}
