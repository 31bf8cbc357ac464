//! One loader for every evaluation and picture: a checkpoint directory of this crate (the
//! network rebuilt from the checkpoint's own config) or an imported weights file (official DINO
//! `.pth`, timm `.pth`/`.safetensors`, `dino-stream export` output), giving the teacher
//! backbone in eval mode with the normalisation it was trained with.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::config::PipelineConfig;
use crate::model::vit::{VisionTransformer, VitDims};
use crate::model::{Arch, Backbone, DinoNet, ModelConfig, Params, Pass};
use crate::weights::{self, Which};

/// ImageNet statistics: what official DINO and timm ViTs expect.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Weights(#[from] weights::WeightsError),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How to open weights.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    pub which: Which,
    /// Attention heads of an imported ViT (default: width / 64).
    pub heads: Option<i64>,
    pub device: Device,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            which: Which::Teacher,
            heads: None,
            device: Device::Cpu,
        }
    }
}

/// How the network was made, so that a freshly initialised twin can be built.
enum Origin {
    Run(Box<ModelConfig>, i64),
    Imported(VitDims),
}

/// A backbone ready for feature extraction.
pub struct FeatureModel {
    _params: Params,
    pub backbone: Backbone,
    mean: Tensor,
    std: Tensor,
    device: Device,
    origin: Origin,
    /// What was loaded, for messages.
    pub description: String,
}

impl FeatureModel {
    /// Opens `path`: a checkpoint directory (`…/step-N` with `state.json`), a run directory
    /// (its newest checkpoint), or a weights file.
    pub fn open(path: &Path, opts: OpenOptions) -> Result<Self, LoadError> {
        if path.is_dir() {
            let dir = if path.join("state.json").is_file() {
                path.to_path_buf()
            } else {
                checkpoint::latest(path).ok_or_else(|| LoadError::Invalid {
                    path: path.to_path_buf(),
                    message: "neither a checkpoint (no state.json) nor a run directory with one"
                        .into(),
                })?
            };
            return Self::from_checkpoint(&dir, opts);
        }
        let tensors = weights::read_file(path)?;
        let imported = weights::select(path, tensors, opts.which)?;
        let dims = weights::infer_dims(path, &imported.backbone, opts.heads)?;
        let mut params = Params::new(opts.device);
        let vit = VisionTransformer::new(&mut params, "", dims, 0.0);
        weights::load_into(path, &mut params, "", &imported, None)?;
        Ok(FeatureModel {
            _params: params,
            backbone: Backbone::Vit(vit),
            mean: stats(IMAGENET_MEAN, opts.device),
            std: stats(IMAGENET_STD, opts.device),
            device: opts.device,
            origin: Origin::Imported(dims),
            description: format!(
                "{} ({}: ViT width {} depth {} heads {} patch {})",
                path.display(),
                imported.layout,
                dims.embed_dim,
                dims.depth,
                dims.heads,
                dims.patch_size
            ),
        })
    }

    fn from_checkpoint(dir: &Path, opts: OpenOptions) -> Result<Self, LoadError> {
        let meta = checkpoint::load_meta(dir)?;
        let cfg: PipelineConfig = toml::from_str(&meta.config).map_err(|e| LoadError::Invalid {
            path: dir.join("state.json"),
            message: format!("the saved configuration does not parse: {e}"),
        })?;
        let img = cfg.augment.global_size as i64;
        let net = DinoNet::new(&cfg.model, img, 0.0, opts.device);
        let mut params = net.params;
        let prefix = match opts.which {
            Which::Teacher => "teacher.",
            Which::Student => "student.",
        };
        let tensors: std::collections::HashMap<String, Tensor> =
            checkpoint::load_tensors(dir)?.into_iter().collect();
        params
            .load(prefix, &tensors)
            .map_err(|message| LoadError::Invalid {
                path: dir.to_path_buf(),
                message,
            })?;
        Ok(FeatureModel {
            _params: params,
            backbone: net.backbone,
            mean: stats(cfg.train.normalize_mean, opts.device),
            std: stats(cfg.train.normalize_std, opts.device),
            device: opts.device,
            origin: Origin::Run(Box::new(cfg.model.clone()), img),
            description: format!("{} (step {})", dir.display(), meta.step),
        })
    }

    /// The same architecture and normalisation, freshly initialised from `seed` (the
    /// random-init baseline of the segmentation and linear evaluations).
    pub fn random_twin(&self, seed: u64) -> FeatureModel {
        tch::manual_seed(seed as i64);
        let (params, backbone) = match &self.origin {
            Origin::Run(model, img) => {
                let net = DinoNet::new(model, *img, 0.0, self.device);
                (net.params, net.backbone)
            }
            Origin::Imported(dims) => {
                let mut params = Params::new(self.device);
                let vit = VisionTransformer::new(&mut params, "", *dims, 0.0);
                (params, Backbone::Vit(vit))
            }
        };
        FeatureModel {
            _params: params,
            backbone,
            mean: self.mean.shallow_clone(),
            std: self.std.shallow_clone(),
            device: self.device,
            origin: match &self.origin {
                Origin::Run(m, i) => Origin::Run(m.clone(), *i),
                Origin::Imported(d) => Origin::Imported(*d),
            },
            description: format!("random init (seed {seed}) of {}", self.description),
        }
    }

    /// The ViT, or an error naming the file for a ResNet (no attention, no tokens).
    pub fn vit(&self) -> Result<&VisionTransformer, LoadError> {
        match &self.backbone {
            Backbone::Vit(v) => Ok(v),
            Backbone::Resnet(_) => Err(LoadError::Invalid {
                path: PathBuf::from(&self.description),
                message: "this needs a ViT backbone, the checkpoint holds a ResNet".into(),
            }),
        }
    }

    /// The side the position embedding was trained at (a ResNet: 224).
    pub fn native_size(&self) -> i64 {
        match (&self.backbone, &self.origin) {
            (Backbone::Vit(v), _) => v.dims.img_size,
            (_, Origin::Run(m, img)) if m.arch != Arch::Vit => *img,
            _ => 224,
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// u8 RGB `[n, h, w, 3]` → normalised float `[n, 3, h, w]` on the model's device.
    pub fn normalize(&self, nhwc_u8: &Tensor) -> Tensor {
        let x = nhwc_u8
            .to_device(self.device)
            .permute([0, 3, 1, 2])
            .contiguous()
            .to_kind(Kind::Float)
            / 255.0;
        (x - &self.mean) / &self.std
    }

    /// CLS features in fp32 on the CPU, `[n, D]`.
    pub fn features(&self, nhwc_u8: &Tensor) -> Tensor {
        let x = self.normalize(nhwc_u8);
        tch::no_grad(|| self.backbone.forward(&x, &mut Pass::eval()))
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
    }
}

fn stats(v: [f64; 3], device: Device) -> Tensor {
    Tensor::from_slice(&v.map(|x| x as f32))
        .reshape([1, 3, 1, 1])
        .to_device(device)
}
