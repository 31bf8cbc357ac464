//! A DINO network: backbone + head, with the multi-crop forward of DINO's `MultiCropWrapper`.

use tch::{Device, Tensor};

use super::head::{DinoHead, HeadDims};
use super::params::Params;
use super::vit::{VisionTransformer, VitDims};
use super::{ModelConfig, Pass};

/// The feature extractor.
pub enum Backbone {
    Vit(VisionTransformer),
    Resnet(super::resnet::ResNet),
}

impl Backbone {
    pub fn forward(&self, x: &Tensor, pass: &mut Pass) -> Tensor {
        match self {
            Backbone::Vit(v) => v.forward(x, pass),
            Backbone::Resnet(r) => r.forward(x, pass.train),
        }
    }

    pub fn embed_dim(&self) -> i64 {
        match self {
            Backbone::Vit(v) => v.dims.embed_dim,
            Backbone::Resnet(r) => r.out_dim(),
        }
    }
}

/// Backbone and head with their parameters. Names: `backbone.*`, `head.*` (DINO checkpoints).
pub struct DinoNet {
    pub params: Params,
    pub backbone: Backbone,
    pub head: DinoHead,
}

impl DinoNet {
    /// Builds a freshly initialised network (uses libtorch's global RNG: seed it first).
    /// `drop_path` is 0 for the teacher; `img_size` is the global crop side.
    pub fn new(cfg: &ModelConfig, img_size: i64, drop_path: f64, device: Device) -> Self {
        let mut params = Params::new(device);
        let backbone = match cfg.arch {
            arch if arch.is_resnet() => {
                Backbone::Resnet(super::resnet::ResNet::new(&mut params, "backbone.", cfg))
            }
            _ => {
                let (embed_dim, depth, heads) = cfg.vit_dims();
                let dims = VitDims {
                    embed_dim,
                    depth,
                    heads,
                    patch_size: cfg.patch_size,
                    mlp_ratio: cfg.mlp_ratio,
                    img_size,
                };
                Backbone::Vit(VisionTransformer::new(
                    &mut params,
                    "backbone.",
                    dims,
                    drop_path,
                ))
            }
        };
        let hd = HeadDims {
            in_dim: backbone.embed_dim(),
            out_dim: cfg.out_dim,
            hidden: cfg.head_hidden,
            bottleneck: cfg.head_bottleneck,
            layers: cfg.head_layers,
            bn: cfg.head_bn,
            norm_last_layer: cfg.norm_last_layer,
        };
        let head = DinoHead::new(&mut params, "head.", hd);
        DinoNet {
            params,
            backbone,
            head,
        }
    }

    /// One backbone pass per resolution group (each `[n_i, 3, H_i, W_i]`), the head on the
    /// concatenated features: logits `[Σ n_i, out_dim]` in group order.
    pub fn forward_groups(&self, groups: &[&Tensor], pass: &mut Pass) -> Tensor {
        let feats: Vec<Tensor> = groups
            .iter()
            .map(|g| self.backbone.forward(g, pass))
            .collect();
        self.head.forward(&Tensor::cat(&feats, 0), pass.train)
    }
}
