//! ResNet-18/50 backbones with torchvision parameter names (`conv1`, `bn1`, `layer{1-4}.{j}.…`),
//! classification layer removed as DINO does (`fc = Identity`): output is the pooled features.
//! `resnet_small` is the same network cut for small images: a 3x3 stride-1 stem, no max-pool and
//! three stages (`layer1-3`), as torchvision builds it with `_make_layer` (see `train::export`).

use tch::{Kind, Tensor};

use super::init;
use super::layers::BatchNorm;
use super::params::Params;
use super::{Arch, ModelConfig};

struct Conv {
    weight: Tensor,
    stride: i64,
    padding: i64,
    /// NHWC kernels (`resnet_small` only: measured there; ResNet-18/50 keep the NCHW path that
    /// tests/engine_reference.rs checks against PyTorch's).
    channels_last: bool,
}

impl Conv {
    fn new(
        p: &mut Params,
        name: &str,
        cin: i64,
        cout: i64,
        k: i64,
        stride: i64,
        padding: i64,
    ) -> Self {
        let dev = p.device();
        let weight = p.param(
            &format!("{name}.weight"),
            init::kaiming_normal_fan_out(&[cout, cin, k, k], dev),
            true,
        );
        Conv {
            weight,
            stride,
            padding,
            channels_last: false,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d::<Tensor>(
            &if self.channels_last {
                channels_last(&self.weight)
            } else {
                self.weight.shallow_clone()
            },
            None,
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }
}

/// The same tensor with NHWC strides (PyTorch's `channels_last`; tch has no memory-format API,
/// and a permuted copy permuted back is exactly that layout). A convolution whose weight is
/// channels-last runs oneDNN's NHWC kernels and keeps its output NHWC, so the batch norms and
/// the next convolution need no reorders: 1.17-1.47x per training step of `resnet_small` (width
/// 16, `dino-stream bench train`, see docs/ARCHITECTURE.md). Gradients flow through the copy; the stored
/// parameter keeps its ordinary layout, so checkpoints and the optimizer see no difference.
fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

struct Unit {
    convs: Vec<(Conv, BatchNorm)>,
    downsample: Option<(Conv, BatchNorm)>,
}

impl Unit {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        let n = self.convs.len();
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            h = bn.forward(&c.forward(&h), train);
            if i + 1 < n {
                h = h.relu();
            }
        }
        let identity = match &self.downsample {
            Some((c, bn)) => bn.forward(&c.forward(x), train),
            None => x.shallow_clone(),
        };
        (h + identity).relu()
    }
}

pub struct ResNet {
    stem: (Conv, BatchNorm),
    /// The ImageNet stem's 3x3 stride-2 max-pool (not in `resnet_small`).
    max_pool: bool,
    units: Vec<Unit>,
    /// Side of the grid the last map is average-pooled to (1: global pooling).
    pool_grid: i64,
    out_dim: i64,
}

impl ResNet {
    pub fn new(p: &mut Params, prefix: &str, cfg: &ModelConfig) -> Self {
        let (bottleneck, counts, base): (bool, Vec<i64>, i64) = match cfg.arch {
            Arch::Resnet50 => (true, vec![3, 4, 6, 3], 64),
            Arch::ResnetSmall => (false, vec![cfg.resnet_blocks; 3], cfg.resnet_width),
            _ => (false, vec![2, 2, 2, 2], 64),
        };
        let small = cfg.arch == Arch::ResnetSmall;
        let pool_grid = if small { cfg.resnet_pool_grid } else { 1 };
        let expansion = if bottleneck { 4 } else { 1 };
        let (k, stride, pad) = if small { (3, 1, 1) } else { (7, 2, 3) };
        let mut stem = (
            Conv::new(p, &format!("{prefix}conv1"), 3, base, k, stride, pad),
            BatchNorm::new(p, &format!("{prefix}bn1"), base),
        );
        let mut units = Vec::new();
        let mut cin = base;
        for (li, &count) in counts.iter().enumerate() {
            let width = base << li;
            for j in 0..count {
                let stride = if li > 0 && j == 0 { 2 } else { 1 };
                let n = format!("{prefix}layer{}.{j}.", li + 1);
                let cout = width * expansion;
                let convs = if bottleneck {
                    vec![
                        (
                            Conv::new(p, &format!("{n}conv1"), cin, width, 1, 1, 0),
                            BatchNorm::new(p, &format!("{n}bn1"), width),
                        ),
                        (
                            Conv::new(p, &format!("{n}conv2"), width, width, 3, stride, 1),
                            BatchNorm::new(p, &format!("{n}bn2"), width),
                        ),
                        (
                            Conv::new(p, &format!("{n}conv3"), width, cout, 1, 1, 0),
                            BatchNorm::new(p, &format!("{n}bn3"), cout),
                        ),
                    ]
                } else {
                    vec![
                        (
                            Conv::new(p, &format!("{n}conv1"), cin, width, 3, stride, 1),
                            BatchNorm::new(p, &format!("{n}bn1"), width),
                        ),
                        (
                            Conv::new(p, &format!("{n}conv2"), width, width, 3, 1, 1),
                            BatchNorm::new(p, &format!("{n}bn2"), width),
                        ),
                    ]
                };
                let downsample = (stride != 1 || cin != cout).then(|| {
                    (
                        Conv::new(p, &format!("{n}downsample.0"), cin, cout, 1, stride, 0),
                        BatchNorm::new(p, &format!("{n}downsample.1"), cout),
                    )
                });
                units.push(Unit { convs, downsample });
                cin = cout;
            }
        }
        let convs = units
            .iter_mut()
            .flat_map(|u| u.convs.iter_mut().chain(u.downsample.as_mut()));
        for (c, _) in std::iter::once(&mut stem).chain(convs) {
            c.channels_last = small;
        }
        ResNet {
            stem,
            max_pool: !small,
            units,
            pool_grid,
            out_dim: cin * pool_grid * pool_grid,
        }
    }

    pub fn out_dim(&self) -> i64 {
        self.out_dim
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.stem.1.forward(&self.stem.0.forward(x), train).relu();
        let mut h = if self.max_pool {
            h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
        } else {
            h
        };
        for u in &self.units {
            h = u.forward(&h, train);
        }
        // The flatten is channel-major whatever the memory format, as torchvision's.
        h.adaptive_avg_pool2d([self.pool_grid, self.pool_grid])
            .flatten(1, -1)
            .to_kind(Kind::Float)
    }
}
