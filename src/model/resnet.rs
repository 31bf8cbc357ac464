//! ResNet-18/50 backbones with torchvision parameter names (`conv1`, `bn1`, `layer{1-4}.{j}.…`),
//! classification layer removed as DINO does (`fc = Identity`): output is the pooled features.

use tch::{Kind, Tensor};

use super::init;
use super::layers::BatchNorm;
use super::params::Params;
use super::Arch;

struct Conv {
    weight: Tensor,
    stride: i64,
    padding: i64,
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
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d::<Tensor>(
            &self.weight,
            None,
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }
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
    units: Vec<Unit>,
    out_dim: i64,
}

impl ResNet {
    pub fn new(p: &mut Params, prefix: &str, arch: Arch) -> Self {
        let (bottleneck, counts): (bool, [i64; 4]) = match arch {
            Arch::Resnet50 => (true, [3, 4, 6, 3]),
            _ => (false, [2, 2, 2, 2]),
        };
        let expansion = if bottleneck { 4 } else { 1 };
        let stem = (
            Conv::new(p, &format!("{prefix}conv1"), 3, 64, 7, 2, 3),
            BatchNorm::new(p, &format!("{prefix}bn1"), 64),
        );
        let mut units = Vec::new();
        let mut cin = 64;
        for (li, &count) in counts.iter().enumerate() {
            let width = 64 << li;
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
        ResNet {
            stem,
            units,
            out_dim: cin,
        }
    }

    pub fn out_dim(&self) -> i64 {
        self.out_dim
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.stem.1.forward(&self.stem.0.forward(x), train).relu();
        let mut h = h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for u in &self.units {
            h = u.forward(&h, train);
        }
        h.adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
            .to_kind(Kind::Float)
    }
}
