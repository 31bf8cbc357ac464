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
        linear(x, &self.weight, self.bias.as_ref())
    }
}

/// Input size above which libtorch runs a batch-1 1x1 convolution with oneDNN (its
/// `ConvParams::use_mkldnn` heuristic).
const ONEDNN_MIN_NUMEL: i64 = 20480;
/// Smallest weight (in·out) sent to oneDNN. Measured fwd+bwd at 4352 rows, 2 threads: 64→64 is
/// 3.4x slower through oneDNN, 64→192 is even (noise either way), 64→256, 128→128 and wider are
/// 0.2-0.9x the time of `linear`.
const ONEDNN_MIN_WEIGHT: usize = 128 * 128;
static HAS_MKLDNN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// `x·Wᵀ + b` over the last dimension of `x` (`F.linear`), on the CPU through oneDNN when
/// libtorch runs more than one thread.
///
/// Why: libtorch's `linear`/`addmm` on the CPU calls MKL's sgemm, and MKL takes a slow generic
/// path on non-Intel CPUs; oneDNN (which libtorch ships for convolutions) picks its kernels by
/// instruction set. A linear layer is a 1x1 convolution over the rows seen as a channels-last
/// `[1, in, rows, 1]` image: a free view in, a free view out, the same sums (in another order,
/// so results differ by float rounding only), and autograd goes through oneDNN's convolution
/// backward too. Measured on the 2-thread AMD EPYC (AVX-512) development machine: forward +
/// backward of the ViT's layers about twice as fast as `linear`, the whole DINO step 0.68x.
/// libtorch hands such a convolution to its native kernel instead of oneDNN when it runs one
/// thread or the input has at most 20480 elements, and oneDNN loses on narrow layers (see
/// `ONEDNN_MIN_WEIGHT`); there (and on other devices) this is plain `linear`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let shape = x.size();
    let in_dim = *shape.last().expect("linear input has a feature dimension");
    let rows = shape[..shape.len() - 1].iter().product::<i64>();
    let onednn = x.device() == tch::Device::Cpu
        && rows * in_dim > ONEDNN_MIN_NUMEL
        && weight.numel() >= ONEDNN_MIN_WEIGHT
        && tch::get_num_threads() > 1
        && *HAS_MKLDNN.get_or_init(tch::utils::has_mkldnn);
    if onednn {
        conv_linear(x, weight, bias)
    } else {
        x.linear(weight, bias)
    }
}

/// `F.linear` as a 1x1 convolution over the channels-last `[1, in, rows, 1]` view of `x`.
fn conv_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let mut shape = x.size();
    let in_dim = *shape.last().expect("linear input has a feature dimension");
    let rows = shape[..shape.len() - 1].iter().product::<i64>();
    let out_dim = weight.size()[0];
    let image = x.reshape([1, rows, 1, in_dim]).permute([0, 3, 1, 2]);
    let y = image.conv2d(
        &weight.reshape([out_dim, in_dim, 1, 1]),
        bias,
        [1, 1],
        [0, 0],
        [1, 1],
        1,
    );
    *shape.last_mut().expect("non-empty shape") = out_dim;
    y.permute([0, 2, 3, 1]).reshape(shape)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn assert_close(got: &Tensor, want: &Tensor) {
        assert_eq!(got.size(), want.size());
        let err = (got - want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]).max(1.0);
        assert!(err <= 1e-5 * scale, "max error {err}, scale {scale}");
    }

    /// The convolution route computes `F.linear`: same outputs and gradients up to float
    /// rounding, for 3-D and 2-D inputs, with and without bias, at sizes where libtorch hands
    /// the convolution to oneDNN (with more than one thread: tests run concurrently and
    /// `set_num_threads` is process-wide, so a test elsewhere may check libtorch's native
    /// convolution instead; the maths checked is the same).
    #[test]
    fn onednn_linear_matches_linear_with_gradients() {
        tch::set_num_threads(2);
        let opts = (Kind::Float, Device::Cpu);
        for (shape, with_bias) in [(vec![8i64, 37, 96], true), (vec![300, 96], false)] {
            let x = Tensor::randn(shape.as_slice(), opts).set_requires_grad(true);
            let w = (Tensor::randn([80, 96], opts) * 0.1).set_requires_grad(true);
            let b = Tensor::randn([80], opts).set_requires_grad(true);
            let bias = with_bias.then_some(&b);
            let mut inputs = vec![&x, &w];
            inputs.extend(bias);
            let mut out_shape = shape.clone();
            *out_shape.last_mut().unwrap() = 80;
            let g = Tensor::randn(out_shape.as_slice(), opts);
            let grads = |y: &Tensor| {
                Tensor::run_backward(&[(y * &g).sum(Kind::Float)], &inputs, false, false)
            };
            let want = x.linear(&w, bias);
            let got = conv_linear(&x, &w, bias);
            assert_close(&got, &want);
            for (a, b) in grads(&got).iter().zip(grads(&want).iter()) {
                assert_close(a, b);
            }
        }
    }
}
