//! The few layers the networks need, holding tensors registered in a [`Params`].

use tch::Tensor;

use super::init;
use super::params::Params;

/// `nn.Linear` (weight `[out, in]`).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// timm/DINO `_init_weights`: trunc_normal(.02) weight, zero bias.
    pub fn new(p: &mut Params, name: &str, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let dev = p.device();
        let weight = p.param(
            &format!("{name}.weight"),
            init::trunc_normal(&[out_dim, in_dim], 0.02, dev),
            true,
        );
        let bias = bias.then(|| {
            p.param(
                &format!("{name}.bias"),
                Tensor::zeros([out_dim], (tch::Kind::Float, dev)),
                true,
            )
        });
        Linear { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `nn.LayerNorm` over the last dimension.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    pub fn new(p: &mut Params, name: &str, dim: i64, eps: f64) -> Self {
        let dev = p.device();
        let weight = p.param(
            &format!("{name}.weight"),
            Tensor::ones([dim], (tch::Kind::Float, dev)),
            true,
        );
        let bias = p.param(
            &format!("{name}.bias"),
            Tensor::zeros([dim], (tch::Kind::Float, dev)),
            true,
        );
        LayerNorm {
            weight,
            bias,
            dim,
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// `nn.BatchNorm1d/2d` in training mode (batch statistics, running stats updated with
/// momentum 0.1), or eval mode (running statistics).
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

impl BatchNorm {
    pub fn new(p: &mut Params, name: &str, dim: i64) -> Self {
        let dev = p.device();
        let f = (tch::Kind::Float, dev);
        BatchNorm {
            weight: p.param(&format!("{name}.weight"), Tensor::ones([dim], f), true),
            bias: p.param(&format!("{name}.bias"), Tensor::zeros([dim], f), true),
            running_mean: p.buffer(&format!("{name}.running_mean"), Tensor::zeros([dim], f)),
            running_var: p.buffer(&format!("{name}.running_var"), Tensor::ones([dim], f)),
            num_batches_tracked: p.buffer(
                &format!("{name}.num_batches_tracked"),
                Tensor::zeros([], (tch::Kind::Int64, dev)),
            ),
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
            });
        }
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            true,
        )
    }
}
