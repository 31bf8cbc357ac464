//! Export of the teacher backbone with timm/torchvision key names.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use super::engine::EngineError;

/// Writes the teacher backbone to a safetensors file with timm key names (`cls_token`,
/// `pos_embed`, `patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`, …), loadable with
/// `timm.create_model("vit_small_patch16_224", num_classes=0).load_state_dict(sd, strict=True)`
/// (ResNets: torchvision names without `fc`).
///
/// `tensors` is either `Engine::state()` (keys `teacher.backbone.*`) or a bare network map
/// (keys `backbone.*`). Tensors are written as contiguous float32 on the CPU.
pub fn export_backbone(tensors: &[(String, Tensor)], out: &Path) -> Result<(), EngineError> {
    export_backbone_with_metadata(tensors, out, &BTreeMap::new())
}

/// [`export_backbone`], with `metadata` in the safetensors header's `__metadata__` (string to
/// string, as the format allows), where `safetensors.safe_open(...).metadata()` reads it.
pub fn export_backbone_with_metadata(
    tensors: &[(String, Tensor)],
    out: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<(), EngineError> {
    let pick = |prefix: &str| -> Vec<(String, Tensor)> {
        tensors
            .iter()
            .filter_map(|(k, t)| {
                k.strip_prefix(prefix).map(|n| {
                    (
                        n.to_string(),
                        t.detach().to_device(tch::Device::Cpu).contiguous(),
                    )
                })
            })
            .collect()
    };
    let mut sel = pick("teacher.backbone.");
    if sel.is_empty() {
        sel = pick("backbone.");
    }
    if sel.is_empty() {
        return Err(EngineError::State(
            "no teacher.backbone.* or backbone.* tensors to export".into(),
        ));
    }
    sel.sort_by(|a, b| a.0.cmp(&b.0));
    write_safetensors(&sel, metadata, out)
        .map_err(|e| EngineError::State(format!("{}: {e}", out.display())))
}

/// A safetensors file of float32 tensors with a `__metadata__` header entry (tch's writer has
/// no metadata). Layout: u64 little-endian header length, the JSON header, then the data.
fn write_safetensors(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
    out: &Path,
) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut meta = metadata.clone();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    header.insert("__metadata__".into(), serde_json::to_value(&meta)?);
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in tensors {
        let t = t.to_kind(tch::Kind::Float).contiguous();
        let values = Vec::<f32>::try_from(t.flatten(0, -1))
            .map_err(|e| std::io::Error::other(format!("{name}: {e}")))?;
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": t.size(),
                "data_offsets": [start, data.len()],
            }),
        );
    }
    let mut text = serde_json::to_vec(&header)?;
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + text.len() + data.len());
    bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(&data);
    std::fs::write(out, bytes)
}

/// What an exported backbone is, for its header and for the Python that loads it.
pub struct Described {
    /// `__metadata__` of the safetensors header.
    pub metadata: BTreeMap<String, String>,
    /// Python statements that build the matching timm/torchvision model (`model = ...`).
    builder: String,
}

/// Describes the backbone that `cfg` builds (a checkpoint's saved configuration).
pub fn describe(cfg: &crate::config::PipelineConfig, step: u64) -> Described {
    use crate::model::Arch;
    let m = &cfg.model;
    let img = cfg.augment.global_size;
    let (dim, depth, heads) = m.vit_dims();
    let arch = serde_json::to_value(m.arch)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let list = |v: [f64; 3]| format!("[{}, {}, {}]", v[0], v[1], v[2]);
    let mut metadata = BTreeMap::new();
    metadata.insert("dino_stream.arch".into(), arch.clone());
    metadata.insert("dino_stream.step".into(), step.to_string());
    metadata.insert("dino_stream.image_size".into(), img.to_string());
    metadata.insert("dino_stream.mean".into(), list(cfg.train.normalize_mean));
    metadata.insert("dino_stream.std".into(), list(cfg.train.normalize_std));
    metadata.insert("dino_stream.config".into(), cfg.to_toml());
    let builder = match m.arch {
        Arch::ResnetSmall => {
            metadata.insert(
                "dino_stream.resnet_width".into(),
                m.resnet_width.to_string(),
            );
            metadata.insert(
                "dino_stream.resnet_blocks".into(),
                m.resnet_blocks.to_string(),
            );
            metadata.insert(
                "dino_stream.resnet_pool_grid".into(),
                m.resnet_pool_grid.to_string(),
            );
            resnet_small_builder(m.resnet_width, m.resnet_blocks, m.resnet_pool_grid)
        }
        Arch::Resnet18 | Arch::Resnet50 => format!(
            "import torch, torchvision\n\
             model = torchvision.models.{arch}(weights=None)\n\
             model.fc = torch.nn.Identity()"
        ),
        _ => {
            metadata.insert("dino_stream.patch_size".into(), m.patch_size.to_string());
            metadata.insert("dino_stream.embed_dim".into(), dim.to_string());
            metadata.insert("dino_stream.depth".into(), depth.to_string());
            metadata.insert("dino_stream.heads".into(), heads.to_string());
            let timm_name = match (m.arch, m.patch_size) {
                (Arch::VitTiny, 16) => Some("vit_tiny_patch16_224"),
                (Arch::VitSmall, 16) => Some("vit_small_patch16_224"),
                (Arch::VitSmall, 8) => Some("vit_small_patch8_224"),
                (Arch::VitBase, 16) => Some("vit_base_patch16_224"),
                (Arch::VitBase, 8) => Some("vit_base_patch8_224"),
                _ => None,
            }
            .filter(|_| m.mlp_ratio == 4.0);
            match timm_name {
                Some(name) => {
                    metadata.insert("dino_stream.timm_model".into(), name.into());
                    let size = if img == 224 {
                        String::new()
                    } else {
                        format!(", img_size={img}")
                    };
                    format!(
                        "import timm\n\
                         model = timm.create_model(\"{name}\", pretrained=False, num_classes=0{size})"
                    )
                }
                None => format!(
                    "import timm\n\
                     model = timm.models.vision_transformer.VisionTransformer(img_size={img}, \
                     patch_size={}, embed_dim={dim}, depth={depth}, num_heads={heads}, \
                     mlp_ratio={:?}, qkv_bias=True, num_classes=0)",
                    m.patch_size, m.mlp_ratio
                ),
            }
        }
    };
    Described { metadata, builder }
}

/// torchvision's ResNet rebuilt as `resnet_small`: a 3x3 stride-1 stem, no max-pool, three
/// stages made by torchvision's own `_make_layer` (same parameter names, same downsample rule).
fn resnet_small_builder(width: i64, blocks: i64, pool_grid: i64) -> String {
    let pool = if pool_grid == 1 {
        String::new()
    } else {
        format!("\nmodel.avgpool = torch.nn.AdaptiveAvgPool2d({pool_grid})")
    };
    format!(
        "import torch\n\
         from torchvision.models.resnet import ResNet, BasicBlock\n\
         model = ResNet(BasicBlock, [1, 1, 1, 1])\n\
         model.inplanes = {width}\n\
         model.conv1 = torch.nn.Conv2d(3, {width}, 3, 1, 1, bias=False)\n\
         model.bn1 = torch.nn.BatchNorm2d({width})\n\
         model.maxpool = torch.nn.Identity()\n\
         model.layer1 = model._make_layer(BasicBlock, {width}, {blocks})\n\
         model.layer2 = model._make_layer(BasicBlock, {w2}, {blocks}, stride=2)\n\
         model.layer3 = model._make_layer(BasicBlock, {w4}, {blocks}, stride=2)\n\
         model.layer4 = torch.nn.Identity()\n\
         model.fc = torch.nn.Identity(){pool}",
        w2 = 2 * width,
        w4 = 4 * width,
    )
}

impl Described {
    /// The Python that loads the file at `path` (strict: every key must match). Inputs are
    /// RGB in [0, 1], normalised with the header's mean and std.
    pub fn python(&self, path: &Path) -> String {
        format!(
            "{}\n\
             from safetensors.torch import load_file\n\
             model.load_state_dict(load_file({:?}), strict=True)\n\
             # inputs: RGB in [0, 1], normalised with mean {} and std {}",
            self.builder,
            path.display().to_string(),
            self.metadata["dino_stream.mean"],
            self.metadata["dino_stream.std"],
        )
    }
}
