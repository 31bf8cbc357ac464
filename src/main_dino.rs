//! The flags of the official DINO `main_dino.py` and the keys that do their job here, for
//! users who come from that script: `docs/CONFIG.md` shows the table, and the command line
//! answers `--epochs 100` with `--set train.epochs=100` instead of clap's generic tip.

/// (`main_dino.py` flag, dino-stream key, note).
pub const FLAGS: &[(&str, &str, &str)] = &[
    ("--arch", "model.arch", "vit_tiny, vit_small, vit_base, resnet18, resnet50, or vit with model.embed_dim/depth/heads"),
    ("--patch_size", "model.patch_size", ""),
    ("--out_dim", "model.out_dim", ""),
    ("--norm_last_layer", "model.norm_last_layer", ""),
    ("--use_bn_in_head", "model.head_bn", ""),
    ("--drop_path_rate", "model.drop_path", ""),
    ("--momentum_teacher", "train.momentum_teacher", ""),
    ("--warmup_teacher_temp", "train.warmup_teacher_temp", ""),
    ("--teacher_temp", "train.teacher_temp", ""),
    ("--warmup_teacher_temp_epochs", "train.warmup_teacher_temp_epochs", ""),
    ("--use_fp16", "train.precision", "\"fp16\" (or \"bf16\"; \"auto\" is bf16 on CUDA); CUDA only"),
    ("--weight_decay", "train.weight_decay", ""),
    ("--weight_decay_end", "train.weight_decay_end", ""),
    ("--clip_grad", "train.clip_grad", ""),
    ("--batch_size_per_gpu", "train.batch_size", "per process"),
    ("--epochs", "train.epochs", ""),
    ("--freeze_last_layer", "train.freeze_last_layer_epochs", ""),
    ("--lr", "train.base_lr", "for a batch of 256, scaled linearly like main_dino.py"),
    ("--warmup_epochs", "train.warmup_epochs", ""),
    ("--min_lr", "train.min_lr", ""),
    ("--optimizer", "train.optimizer", "adamw, sgd, lars"),
    ("--global_crops_scale", "augment.global_scale", "e.g. [0.4, 1.0]"),
    ("--local_crops_number", "augment.local_crops", ""),
    ("--local_crops_scale", "augment.local_scale", "e.g. [0.05, 0.4]"),
    ("--data_path", "source.path", "with source.type = \"image_folder\""),
    ("--output_dir", "checkpoint.dir", ""),
    ("--saveckp_freq", "checkpoint.every_steps", "in steps here, in epochs there"),
    ("--seed", "train.seed", ""),
    ("--num_workers", "augment.workers", "threads, not processes; 0 is one per core"),
];

/// The dino-stream key for a `main_dino.py` flag (`--epochs`, `--epochs=100`).
pub fn key_for(flag: &str) -> Option<&'static str> {
    let name = flag.split('=').next().unwrap_or(flag);
    FLAGS
        .iter()
        .find(|(f, _, _)| *f == name)
        .map(|(_, k, _)| *k)
}

/// The hint for an unknown `flag`: the `--set` that does its job, if it is a main_dino.py flag.
pub fn hint(flag: &str, value: Option<&str>) -> Option<String> {
    let key = key_for(flag)?;
    let value = flag
        .split_once('=')
        .map(|(_, v)| v)
        .or(value)
        .filter(|v| !v.starts_with("--"))
        .unwrap_or("VALUE");
    Some(format!(
        "{} is main_dino.py's flag; here it is the configuration key {key}: --set {key}={value} (dino-stream config lists every key)",
        flag.split('=').next().unwrap_or(flag)
    ))
}

/// The table as Markdown, for docs/CONFIG.md.
pub fn markdown() -> String {
    let mut out = String::from("| main_dino.py | dino-stream | note |\n|---|---|---|\n");
    for (flag, key, note) in FLAGS {
        out.push_str(&format!("| `{flag}` | `--set {key}=…` | {note} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_points_to_train_epochs() {
        assert_eq!(key_for("--epochs=3"), Some("train.epochs"));
        let h = hint("--epochs", Some("100")).unwrap();
        assert!(h.contains("--set train.epochs=100"), "{h}");
        assert!(hint("--bogus", None).is_none());
    }
}
