//! DINO's projection head (`DINOHead`): MLP → L2 normalise → weight-normalised linear layer.

use tch::{Kind, Tensor};

use super::init;
use super::layers::{self, BatchNorm, Linear};
use super::params::Params;

/// Head sizes (see `ModelConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadDims {
    pub in_dim: i64,
    pub out_dim: i64,
    pub hidden: i64,
    pub bottleneck: i64,
    pub layers: i64,
    pub bn: bool,
    pub norm_last_layer: bool,
}

enum Layer {
    Linear(Linear),
    Bn(BatchNorm),
    Gelu,
}

pub struct DinoHead {
    pub dims: HeadDims,
    mlp: Vec<Layer>,
    weight_g: Tensor,
    weight_v: Tensor,
}

impl DinoHead {
    /// Names follow DINO: `mlp.{i}` indices of the `nn.Sequential` (Linear, [BatchNorm1d,] GELU,
    /// …) or plain `mlp` for a single layer; `last_layer.weight_g/weight_v`. `weight_g` is
    /// filled with 1 and, when `norm_last_layer`, frozen (DINO sets `requires_grad = False`).
    pub fn new(p: &mut Params, prefix: &str, dims: HeadDims) -> Self {
        let mut mlp = Vec::new();
        let layers = dims.layers.max(1);
        if layers == 1 {
            mlp.push(Layer::Linear(Linear::new(
                p,
                &format!("{prefix}mlp"),
                dims.in_dim,
                dims.bottleneck,
                true,
            )));
        } else {
            let mut idx = 0;
            let mut push = |p: &mut Params,
                            mlp: &mut Vec<Layer>,
                            make: &dyn Fn(&mut Params, &str) -> Layer| {
                mlp.push(make(p, &format!("{prefix}mlp.{idx}")));
                idx += 1;
            };
            for l in 0..layers {
                let in_d = if l == 0 { dims.in_dim } else { dims.hidden };
                let out_d = if l == layers - 1 {
                    dims.bottleneck
                } else {
                    dims.hidden
                };
                push(p, &mut mlp, &|p, n| {
                    Layer::Linear(Linear::new(p, n, in_d, out_d, true))
                });
                if l < layers - 1 {
                    if dims.bn {
                        push(p, &mut mlp, &|p, n| {
                            Layer::Bn(BatchNorm::new(p, n, dims.hidden))
                        });
                    }
                    push(p, &mut mlp, &|_, _| Layer::Gelu);
                }
            }
        }
        let dev = p.device();
        let weight_g = p.param(
            &format!("{prefix}last_layer.weight_g"),
            Tensor::ones([dims.out_dim, 1], (Kind::Float, dev)),
            !dims.norm_last_layer,
        );
        let weight_v = p.param(
            &format!("{prefix}last_layer.weight_v"),
            init::linear_default(dims.out_dim, dims.bottleneck, dev),
            true,
        );
        DinoHead {
            dims,
            mlp,
            weight_g,
            weight_v,
        }
    }

    /// Backbone features `[N, in_dim]` → logits `[N, out_dim]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for layer in &self.mlp {
            x = match layer {
                Layer::Linear(l) => l.forward(&x),
                Layer::Bn(bn) => bn.forward(&x, train),
                Layer::Gelu => x.gelu("none"),
            };
        }
        // F.normalize(x, dim=-1, p=2, eps=1e-12)
        let denom = x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
        let x = x / denom;
        let w = Tensor::internal_weight_norm(&self.weight_v, &self.weight_g, 0);
        layers::linear(&x, &w, None)
    }
}
