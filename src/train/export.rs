//! Export of the teacher backbone with timm/torchvision key names.

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
    Tensor::write_safetensors(&sel, out)?;
    Ok(())
}
