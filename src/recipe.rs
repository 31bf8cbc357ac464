//! A checkpoint carries the resolved configuration it was trained with, and that configuration
//! is the source of truth for the model and the plan: `run --resume` and `eval knn` take the
//! checkpoint's `[model]`, `[train]` and `[augment]` (runtime keys such as `train.device` or
//! `augment.workers` excepted) instead of rebuilding them from today's pipeline file. A key the
//! user set on purpose (`--set` or `DINO_STREAM__…`) to another value than the checkpoint's is an
//! error naming the key, unless `run --resume --allow-config-change` asks for it (never for
//! `[model]`: the weights only fit the model they were trained as).

use std::path::Path;

use crate::checkpoint::CheckpointMeta;
use crate::config::{ConfigError, PipelineConfig};

/// Keys of the adopted sections that may differ from the checkpoint's freely: where and how
/// fast a run computes, not what it computes.
const RUNTIME_KEYS: &[&str] = &[
    "train.device",
    "train.precision",
    "train.threads",
    "train.log_every",
    "train.monitor_every",
    "augment.workers",
    "augment.channel_capacity",
];

/// The sections a checkpoint decides.
const SECTIONS: &[&str] = &["model", "train", "augment"];

/// What the caller is about to do with the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// `run --resume`; `allow_changes` lets explicitly set `[train]`/`[augment]` keys win.
    Resume { allow_changes: bool },
    /// `eval knn`: only the model must match; other explicit keys win.
    Eval,
}

/// The configuration saved in a checkpoint's state.json, presets resolved.
pub fn saved_config(dir: &Path, meta: &CheckpointMeta) -> Result<PipelineConfig, ConfigError> {
    let mut cfg: PipelineConfig = toml::from_str(&meta.config).map_err(|e| {
        ConfigError::Invalid(format!(
            "{}: the configuration saved in state.json does not parse: {}",
            dir.display(),
            e.message()
        ))
    })?;
    cfg.model.resolve_preset();
    Ok(cfg)
}

/// Replaces the recipe sections of `cfg` by those of `saved` (the checkpoint at `dir`).
/// `explicit` lists the keys set by `--set` or the environment. Returns one note per key taken
/// from the checkpoint or kept on request, for the log.
pub fn adopt(
    cfg: &mut PipelineConfig,
    saved: &PipelineConfig,
    explicit: &[String],
    dir: &Path,
    usage: Use,
) -> Result<Vec<String>, ConfigError> {
    let mut current = toml::Value::try_from(&*cfg).expect("config serialises");
    let saved_v = toml::Value::try_from(saved).expect("config serialises");
    let mut notes = Vec::new();
    let mut conflicts = Vec::new();
    for section in SECTIONS {
        let (Some(cur), Some(old)) = (
            current.get_mut(*section).and_then(|v| v.as_table_mut()),
            saved_v.get(*section).and_then(|v| v.as_table()),
        ) else {
            continue;
        };
        let keys: std::collections::BTreeSet<String> =
            cur.keys().chain(old.keys()).cloned().collect();
        for field in keys {
            let key = format!("{section}.{field}");
            let (now, then) = (cur.get(&field), old.get(&field));
            if now == then || RUNTIME_KEYS.contains(&key.as_str()) {
                continue;
            }
            let show = |v: Option<&toml::Value>| v.map_or("(unset)".to_string(), |v| v.to_string());
            let set_on_purpose = explicit
                .iter()
                .any(|e| key == *e || key.starts_with(&format!("{e}.")));
            let may_keep = match usage {
                Use::Resume { allow_changes } => allow_changes && *section != "model",
                Use::Eval => *section != "model",
            };
            if set_on_purpose && may_keep {
                notes.push(format!(
                    "{key} = {} as set (the checkpoint has {})",
                    show(now),
                    show(then)
                ));
                continue;
            }
            if set_on_purpose {
                conflicts.push(format!(
                    "{key}: set to {} but the checkpoint {} was trained with {}",
                    show(now),
                    dir.display(),
                    show(then)
                ));
                continue;
            }
            notes.push(format!(
                "{key} = {} from the checkpoint (the pipeline says {})",
                show(then),
                show(now)
            ));
            match then {
                Some(v) => {
                    cur.insert(field.clone(), v.clone());
                }
                None => {
                    cur.remove(&field);
                }
            }
        }
    }
    if !conflicts.is_empty() {
        let hint = match usage {
            Use::Resume { .. } => {
                "the checkpoint's configuration decides the model and the plan: drop these \
                 overrides, or pass --allow-config-change to resume with changed [train] or \
                 [augment] keys (the schedules then follow the new plan; [model] cannot change)"
            }
            Use::Eval => {
                "the checkpoint's configuration decides the model: drop these overrides \
                 (no --set model.* is needed to evaluate a checkpoint)"
            }
        };
        return Err(ConfigError::Invalid(format!(
            "{}\n{hint}",
            conflicts.join("\n")
        )));
    }
    *cfg = current.try_into().map_err(|e: toml::de::Error| {
        ConfigError::Invalid(format!(
            "{}: the saved configuration does not fit this build: {}",
            dir.display(),
            e.message()
        ))
    })?;
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Arch;

    fn meta_with(cfg: &PipelineConfig) -> CheckpointMeta {
        CheckpointMeta {
            format: crate::checkpoint::FORMAT,
            step: 1,
            cursor: Default::default(),
            plan: crate::train::Plan {
                steps_per_epoch: 1,
                epochs: 1,
            },
            seed: 0,
            loss: 0.0,
            created_unix: 0,
            config: cfg.to_toml(),
            tensors: None,
        }
    }

    #[test]
    fn the_checkpoint_decides_unless_a_key_was_set_on_purpose() {
        let mut trained = PipelineConfig::default();
        trained.model.arch = Arch::VitTiny;
        trained.model.resolve_preset();
        trained.train.batch_size = 64;
        let dir = Path::new("runs/x/step-000000001");
        let saved = saved_config(dir, &meta_with(&trained)).unwrap();

        // A pipeline that forgot the arch and changed the batch size in the file: both come
        // from the checkpoint; the device is a runtime key and stays.
        let mut now = PipelineConfig::default();
        now.train.batch_size = 32;
        now.train.device = crate::train::config::DeviceChoice::Cpu;
        let notes = adopt(
            &mut now,
            &saved,
            &[],
            dir,
            Use::Resume {
                allow_changes: false,
            },
        )
        .unwrap();
        assert_eq!(now.model.arch, Arch::VitTiny);
        assert_eq!(now.model.embed_dim, 192);
        assert_eq!(now.train.batch_size, 64);
        assert_eq!(now.train.device, crate::train::config::DeviceChoice::Cpu);
        assert!(
            notes.iter().any(|n| n.starts_with("train.batch_size = 64")),
            "{notes:?}"
        );

        // The same change made with --set is a conflict that names the key...
        let mut now = PipelineConfig {
            model: trained.model.clone(),
            ..PipelineConfig::default()
        };
        now.train.batch_size = 32;
        let explicit = vec!["train.batch_size".to_string()];
        let err = adopt(
            &mut now.clone(),
            &saved,
            &explicit,
            dir,
            Use::Resume {
                allow_changes: false,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("train.batch_size: set to 32 but the checkpoint"),
            "{err}"
        );
        // ...unless asked for; a model key never may.
        adopt(
            &mut now,
            &saved,
            &explicit,
            dir,
            Use::Resume {
                allow_changes: true,
            },
        )
        .unwrap();
        assert_eq!(now.train.batch_size, 32);
        let mut now = PipelineConfig::default();
        let explicit = vec!["model.arch".to_string()];
        let err = adopt(&mut now, &saved, &explicit, dir, Use::Eval)
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.arch: set to \"vit_small\""), "{err}");
    }
}
