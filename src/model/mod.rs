//! Networks: ViT backbones (timm/DINO parameter names) and the DINO projection head.

pub mod head;
pub mod init;
pub mod layers;
pub mod net;
pub mod params;
pub mod resnet;
pub mod vit;

pub use net::{Backbone, DinoNet};

/// How a forward pass runs.
pub struct Pass<'a> {
    /// Training mode: BatchNorm uses (and updates) batch statistics; stochastic depth is on.
    pub train: bool,
    /// Source of stochastic-depth masks. Our own keyed generator rather than libtorch's global
    /// one: masks are then a function of (seed, step) whatever else uses libtorch's RNG (other
    /// threads, tests), and identical on CPU and GPU. `None` disables stochastic depth.
    pub rng: Option<&'a mut crate::rng::Rng>,
}

impl Pass<'_> {
    /// Inference: running statistics, no stochastic depth.
    pub fn eval() -> Pass<'static> {
        Pass {
            train: false,
            rng: None,
        }
    }

    /// Training-mode normalisation without stochastic depth (the teacher, as in DINO).
    pub fn train_no_drop() -> Pass<'static> {
        Pass {
            train: true,
            rng: None,
        }
    }
}
pub use params::Params;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// Backbone architecture. Presets follow the paper; `vit` takes the explicit sizes below.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    VitTiny,
    VitSmall,
    VitBase,
    /// A ViT with `embed_dim`, `depth` and `heads` from the config (small images, tests).
    Vit,
    Resnet18,
    Resnet50,
    /// A CIFAR-style ResNet for small images (28–64 px): a 3x3 stride-1 stem and no max-pool,
    /// so a 28-pixel crop is not cut to 7x7 before the first block, then three stages of
    /// `resnet_width`, 2x and 4x channels with `resnet_blocks` basic blocks each.
    ResnetSmall,
}

impl Arch {
    /// Convolutional backbones: no patches, no attention, BatchNorm.
    pub fn is_resnet(self) -> bool {
        matches!(self, Arch::Resnet18 | Arch::Resnet50 | Arch::ResnetSmall)
    }
}

/// `[model]`: backbone and DINO head.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `vit_tiny`, `vit_small`, `vit_base` (presets that fix embed_dim/depth/heads), `vit` (sizes from the keys below), `resnet18`, `resnet50` or `resnet_small` (sizes from `resnet_width`, `resnet_blocks`).
    pub arch: Arch,
    /// Width of a custom ViT (`arch = "vit"`).
    pub embed_dim: i64,
    /// Blocks of a custom ViT.
    pub depth: i64,
    /// Attention heads of a custom ViT.
    pub heads: i64,
    /// Patch side in pixels.
    pub patch_size: i64,
    /// MLP hidden width as a multiple of the embedding width.
    pub mlp_ratio: f64,
    /// Stochastic depth rate of the last block (rises linearly from 0), student only.
    pub drop_path: f64,
    /// Output dimension K of the DINO head.
    pub out_dim: i64,
    /// Hidden width of the head's MLP.
    pub head_hidden: i64,
    /// Bottleneck width before the weight-normalised last layer.
    pub head_bottleneck: i64,
    /// Linear layers in the head's MLP.
    pub head_layers: i64,
    /// Batch norm inside the head's MLP.
    pub head_bn: bool,
    /// With several ranks, BatchNorm (ResNet backbones, `head_bn`) normalises with the global
    /// batch's statistics (SyncBatchNorm, as the official code converts BN models); `false`
    /// keeps each rank's own and, as DDP's `broadcast_buffers`, gives every rank rank 0's
    /// running statistics after each step.
    pub sync_bn: bool,
    /// Fix the last layer's weight-norm scale at 1.
    pub norm_last_layer: bool,
    /// Channels of the first stage of `resnet_small` (doubled at each of the next two).
    pub resnet_width: i64,
    /// Basic blocks per stage of `resnet_small`.
    pub resnet_blocks: i64,
    /// Side of the grid `resnet_small` average-pools its last feature map to; the features are
    /// the flattened grid (channels × grid², torchvision's `AdaptiveAvgPool2d(grid)` + flatten).
    /// 1 is the paper's global pooling; a grid keeps where in the picture a part is, which
    /// centred 28-pixel garments need (docs/ARCHITECTURE.md, "A spatial readout").
    pub resnet_pool_grid: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: Arch::VitSmall,
            embed_dim: 384,
            depth: 12,
            heads: 6,
            patch_size: 16,
            mlp_ratio: 4.0,
            drop_path: 0.1,
            out_dim: 65536,
            head_hidden: 2048,
            head_bottleneck: 256,
            head_layers: 3,
            head_bn: false,
            sync_bn: true,
            norm_last_layer: true,
            resnet_width: 32,
            resnet_blocks: 1,
            resnet_pool_grid: 1,
        }
    }
}

impl ModelConfig {
    /// (embed_dim, depth, heads) after applying the preset.
    pub fn vit_dims(&self) -> (i64, i64, i64) {
        match self.arch {
            Arch::VitTiny => (192, 12, 3),
            Arch::VitSmall => (384, 12, 6),
            Arch::VitBase => (768, 12, 12),
            _ => (self.embed_dim, self.depth, self.heads),
        }
    }

    /// The preset's name when `arch` fixes the ViT sizes (`vit_tiny`, `vit_small`, `vit_base`).
    pub fn vit_preset(&self) -> Option<&'static str> {
        match self.arch {
            Arch::VitTiny => Some("vit_tiny"),
            Arch::VitSmall => Some("vit_small"),
            Arch::VitBase => Some("vit_base"),
            _ => None,
        }
    }

    /// Writes a preset's sizes into `embed_dim`, `depth` and `heads`, so what `validate --print`
    /// shows and a checkpoint stores is the model that is built.
    pub fn resolve_preset(&mut self) {
        if self.vit_preset().is_some() {
            (self.embed_dim, self.depth, self.heads) = self.vit_dims();
        }
    }

    pub fn validate(&self, problems: &mut Problems) {
        let (dim, depth, heads) = self.vit_dims();
        if self.arch == Arch::Vit {
            problems.check(dim > 0 && depth > 0 && heads > 0, "model.embed_dim", || {
                format!("embed_dim, depth and heads must be > 0, got {dim}, {depth}, {heads}")
            });
            problems.check(heads > 0 && dim % heads == 0, "model.heads", || {
                format!("embed_dim {dim} must be divisible by heads {heads}")
            });
        }
        if self.arch == Arch::ResnetSmall {
            problems.check(self.resnet_width > 0, "model.resnet_width", || {
                format!("must be > 0, got {}", self.resnet_width)
            });
            problems.check(self.resnet_blocks > 0, "model.resnet_blocks", || {
                format!("must be > 0, got {}", self.resnet_blocks)
            });
            problems.check(self.resnet_pool_grid > 0, "model.resnet_pool_grid", || {
                format!("must be > 0, got {}", self.resnet_pool_grid)
            });
        }
        problems.check(self.patch_size > 0, "model.patch_size", || {
            format!("must be > 0, got {}", self.patch_size)
        });
        problems.in_range("model.drop_path", self.drop_path, 0.0, 1.0);
        problems.positive("model.mlp_ratio", self.mlp_ratio);
        problems.check(self.out_dim > 1, "model.out_dim", || {
            format!("must be > 1, got {}", self.out_dim)
        });
        problems.check(self.head_hidden > 0, "model.head_hidden", || {
            "must be > 0".into()
        });
        problems.check(self.head_bottleneck > 0, "model.head_bottleneck", || {
            "must be > 0".into()
        });
        problems.check(self.head_layers >= 1, "model.head_layers", || {
            "must be >= 1".into()
        });
    }
}
