//! Weights from elsewhere: official DINO checkpoints and timm ViTs, as `.pth` or
//! `.safetensors`, turned into a ViT backbone this crate can run, evaluate and train from.
//!
//! Accepted layouts (all found by key names, never by file name):
//! - a bare backbone state dict (`cls_token`, `pos_embed`, `blocks.0.attn.qkv.weight`, …): the
//!   official `dino_vits16_pretrain.pth` files, timm's `vit_*` weights (a classifier `head.*`
//!   is dropped);
//! - DINO's full training checkpoint, `{"student": {...}, "teacher": {...}, ...}` with
//!   `module.` (DDP) and `backbone.` / `head.` prefixes; the teacher is taken unless told
//!   otherwise, and its DINO head comes along for continued pretraining;
//! - this crate's own export (`dino-stream export`), which is the timm layout.
//!
//! The architecture is read off the tensor shapes (width, depth, patch size, MLP ratio, the
//! position grid); the head count is not in the weights, so it defaults to width / 64 (every
//! DINO and timm ViT: tiny 3, small 6, base 12) and can be given.

pub mod pth;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::model::vit::VitDims;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Pth(#[from] pth::PthError),
    #[error("{path}: {source}")]
    Safetensors {
        path: PathBuf,
        source: tch::TchError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Layout { path: PathBuf, message: String },
}

/// Which network of a DINO training checkpoint to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    #[default]
    Teacher,
    Student,
}

/// Every tensor of a `.pth` (zip) or `.safetensors` file, as float32-or-original CPU tensors.
pub fn read_file(path: &Path) -> Result<Vec<(String, Tensor)>, WeightsError> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = f.read(&mut magic).map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    if &magic == b"PK\x03\x04" {
        Ok(pth::read(path)?)
    } else {
        Tensor::read_safetensors(path).map_err(|source| WeightsError::Safetensors {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A ViT backbone (timm names, no prefix) and, when the file had one, a DINO head
/// (`mlp.*`, `last_layer.*` names, no prefix).
pub struct Imported {
    pub backbone: HashMap<String, Tensor>,
    pub head: HashMap<String, Tensor>,
    /// What was taken, for messages: "teacher of a DINO checkpoint", "backbone state dict".
    pub layout: String,
    /// Keys left out (a classifier head, optimiser state), for messages.
    pub ignored: usize,
}

/// Picks the backbone (and DINO head) out of a file's tensors, whatever its layout.
pub fn select(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    which: Which,
) -> Result<Imported, WeightsError> {
    let layout_err = |message: String| WeightsError::Layout {
        path: path.to_path_buf(),
        message,
    };
    let total = tensors.len();
    let net = match which {
        Which::Teacher => "teacher",
        Which::Student => "student",
    };
    let has = |p: &str| tensors.iter().any(|(k, _)| k.starts_with(p));
    // Our own checkpoints and DINO's full checkpoints keep both networks side by side.
    let (scope, layout) = if has(&format!("{net}.")) {
        (format!("{net}."), format!("the {net} of a DINO checkpoint"))
    } else if has("teacher.") || has("student.") {
        return Err(layout_err(format!(
            "no {net}.* tensors in a student/teacher checkpoint"
        )));
    } else {
        (String::new(), "a backbone state dict".to_string())
    };
    let mut scoped: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(scope.as_str()).map(|k| (k.to_string(), t)))
        .collect();
    for (k, _) in scoped.iter_mut() {
        if let Some(rest) = k.strip_prefix("module.") {
            *k = rest.to_string();
        }
    }
    let wrapped = scoped.iter().any(|(k, _)| k.starts_with("backbone."));
    let mut backbone = HashMap::new();
    let mut head = HashMap::new();
    for (k, t) in scoped {
        let t = if t.is_floating_point() {
            t.to_kind(Kind::Float)
        } else {
            t
        };
        if wrapped {
            if let Some(b) = k.strip_prefix("backbone.") {
                backbone.insert(b.to_string(), t);
            } else if let Some(h) = k.strip_prefix("head.") {
                // torch >= 2.1 `parametrizations.weight_norm` names for weight_g / weight_v.
                let h = h
                    .replace("parametrizations.weight.original0", "weight_g")
                    .replace("parametrizations.weight.original1", "weight_v");
                head.insert(h, t);
            }
        } else if !k.starts_with("head.") && !k.starts_with("fc_norm.") {
            // A bare timm ViT: `head.*` is its classifier, not a DINO head.
            backbone.insert(k, t);
        }
    }
    if !backbone.contains_key("cls_token") {
        return Err(layout_err(format!(
            "no ViT backbone found ({} tensors; expected cls_token, pos_embed, blocks.N.* with \
             an optional teacher./student., module. and backbone. prefix)",
            total
        )));
    }
    let ignored = total - backbone.len() - head.len();
    Ok(Imported {
        backbone,
        head,
        layout,
        ignored,
    })
}

/// The ViT sizes a backbone state dict implies; `heads` defaults to width / 64.
pub fn infer_dims(
    path: &Path,
    backbone: &HashMap<String, Tensor>,
    heads: Option<i64>,
) -> Result<VitDims, WeightsError> {
    let err = |message: String| WeightsError::Layout {
        path: path.to_path_buf(),
        message,
    };
    let shape = |k: &str| {
        backbone
            .get(k)
            .map(|t| t.size())
            .ok_or_else(|| err(format!("missing tensor {k}")))
    };
    let cls = shape("cls_token")?;
    let embed_dim = *cls
        .last()
        .ok_or_else(|| err("cls_token has no shape".into()))?;
    let patch = shape("patch_embed.proj.weight")?;
    if patch.len() != 4 || patch[2] != patch[3] || patch[1] != 3 {
        return Err(err(format!(
            "patch_embed.proj.weight has shape {patch:?}, expected [D, 3, P, P]"
        )));
    }
    let pos = shape("pos_embed")?;
    let grid_tokens = pos.get(1).copied().unwrap_or(0) - 1;
    let side = (grid_tokens as f64).sqrt().round() as i64;
    if side * side != grid_tokens {
        return Err(err(format!(
            "pos_embed has shape {pos:?}: {grid_tokens} patch positions are not a square grid \
             (ViTs with register tokens or no CLS position are not supported)"
        )));
    }
    let depth = (0..)
        .take_while(|i| backbone.contains_key(&format!("blocks.{i}.norm1.weight")))
        .count() as i64;
    if depth == 0 {
        return Err(err("no blocks.N.* tensors".into()));
    }
    let fc1 = shape("blocks.0.mlp.fc1.weight")?;
    let heads = heads.unwrap_or((embed_dim / 64).max(1));
    if embed_dim % heads != 0 {
        return Err(err(format!(
            "width {embed_dim} is not divisible by {heads} heads"
        )));
    }
    Ok(VitDims {
        embed_dim,
        depth,
        heads,
        patch_size: patch[2],
        mlp_ratio: fc1[0] as f64 / embed_dim as f64,
        img_size: side * patch[2],
    })
}

/// Copies an imported backbone into `params` (whose names are `prefix` + timm names), and the
/// DINO head into `head_prefix` entries when given and present. Strict: every backbone entry of
/// `params` must be in the file with its shape, and every backbone tensor of the file must be
/// used (a ViT with layer scale or register tokens is refused rather than half loaded). A
/// missing `qkv` bias is a zero bias (DINO's `qkv_bias=False`). Returns the tensors loaded.
pub fn load_into(
    path: &Path,
    params: &mut crate::model::Params,
    prefix: &str,
    imported: &Imported,
    head_prefix: Option<&str>,
) -> Result<usize, WeightsError> {
    let err = |message: String| WeightsError::Layout {
        path: path.to_path_buf(),
        message,
    };
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (k, t) in &imported.backbone {
        map.insert(format!("{prefix}{k}"), t.shallow_clone());
    }
    for e in params.entries() {
        if let Some(name) = e.name.strip_prefix(prefix) {
            if name.ends_with("attn.qkv.bias") && !map.contains_key(&e.name) {
                map.insert(
                    e.name.clone(),
                    Tensor::zeros_like(&e.tensor).to_device(tch::Device::Cpu),
                );
            }
        }
    }
    let wanted: std::collections::HashSet<&str> = params
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| n.starts_with(prefix))
        .collect();
    let mut unused: Vec<&String> = imported
        .backbone
        .keys()
        .filter(|k| !wanted.contains(format!("{prefix}{k}").as_str()))
        .collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(err(format!(
            "backbone tensors this ViT has no place for: {}",
            unused
                .iter()
                .take(8)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut loaded = 0;
    let mut head_loaded = false;
    if let Some(hp) = head_prefix.filter(|_| !imported.head.is_empty()) {
        for (k, t) in &imported.head {
            map.insert(format!("{hp}{k}"), t.shallow_clone());
        }
        head_loaded = true;
    }
    tch::no_grad(|| {
        for e in params.entries() {
            let in_head = head_prefix.is_some_and(|hp| e.name.starts_with(hp));
            if !(e.name.starts_with(prefix) || (in_head && head_loaded)) {
                continue;
            }
            let src = map
                .get(&e.name)
                .ok_or_else(|| err(format!("missing tensor {}", e.name)))?;
            if src.size() != e.tensor.size() {
                return Err(err(format!(
                    "{}: shape {:?} in the file, {:?} in the model",
                    e.name,
                    src.size(),
                    e.tensor.size()
                )));
            }
            e.tensor
                .shallow_clone()
                .copy_(&src.to_device(e.tensor.device()).to_kind(e.tensor.kind()));
            loaded += 1;
        }
        Ok(loaded)
    })
}
