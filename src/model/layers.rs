//! The few layers the networks need, holding tensors registered in a [`Params`].

use tch::{Kind, Tensor};

use super::init;
use super::params::{Params, SyncSlot};

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
///
/// With several ranks and `dist.sync_batchnorm` it is `nn.SyncBatchNorm`: the statistics are
/// those of the global batch (every rank's samples), and the backward pass carries every rank's
/// gradient through them, through libtorch's differentiable all-gather.
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
    sync: SyncSlot,
}

const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;

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
            sync: p.sync_slot(),
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
            });
        }
        if let Some(dist) = self.sync.get().filter(|d| train && d.is_distributed()) {
            return self.forward_synced(x, dist);
        }
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }

    /// Training-mode batch norm with the global batch's statistics. Each rank's per-channel
    /// mean, biased variance and count are gathered (differentiably) and combined as
    /// `nn.SyncBatchNorm` does (count-weighted, with the spread of the means), so a rank's
    /// gradient includes what its samples did to every other rank's normalisation.
    fn forward_synced(&self, x: &Tensor, dist: &crate::dist::Dist) -> Tensor {
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let c = xf.size()[1];
        let dims: Vec<i64> = (0..xf.dim() as i64).filter(|&d| d != 1).collect();
        let mut shape = vec![1i64; xf.dim()];
        shape[1] = c;
        let local_mean = xf.mean_dim(dims.as_slice(), true, Kind::Float);
        let local_var = (&xf - &local_mean)
            .square()
            .mean_dim(dims.as_slice(), false, Kind::Float);
        let count = (xf.numel() as i64 / c.max(1)) as f64;
        let counts = Tensor::full([1], count, (Kind::Float, xf.device()));
        let packed = Tensor::cat(&[local_mean.reshape([c]), local_var, counts], 0);
        let all = dist
            .all_gather_autograd(&packed, "SyncBatchNorm statistics")
            .unwrap_or_else(|e| panic!("{e}"));
        let (means, vars, counts) = (
            all.narrow(1, 0, c),
            all.narrow(1, c, c),
            all.narrow(1, 2 * c, 1),
        );
        let total = counts.sum(Kind::Float);
        let mean = (&means * &counts).sum_dim_intlist(0, false, Kind::Float) / &total;
        let var =
            ((vars + (&means - &mean).square()) * &counts).sum_dim_intlist(0, false, Kind::Float)
                / &total;
        tch::no_grad(|| {
            let n = total.double_value(&[]);
            let unbiased = &var * (n / (n - 1.0).max(1.0));
            let _ = self
                .running_mean
                .shallow_clone()
                .g_mul_scalar_(1.0 - BN_MOMENTUM)
                .g_add_(&(mean.detach() * BN_MOMENTUM));
            let _ = self
                .running_var
                .shallow_clone()
                .g_mul_scalar_(1.0 - BN_MOMENTUM)
                .g_add_(&(unbiased * BN_MOMENTUM));
        });
        let scale = (&var + BN_EPS).rsqrt() * &self.weight;
        let y = (xf - mean.reshape(shape.as_slice())) * scale.reshape(shape.as_slice())
            + self.bias.reshape(shape.as_slice());
        y.to_kind(kind)
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
