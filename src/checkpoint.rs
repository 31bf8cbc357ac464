//! Checkpoints: a directory per step, written under a temporary name and renamed into place, so
//! a crash leaves either the previous checkpoint or the new one, never half of one.
//!
//! ```text
//! checkpoint.dir/step-000001200/tensors.safetensors   student.*, teacher.*, optim.*, loss.center
//! checkpoint.dir/step-000001200/state.json            step, data cursor, plan, seed, resolved config
//! ```
//! Every random stream in a run is keyed by (seed, epoch, sample id) or (seed, step), so the
//! seed, step and cursor are the whole RNG state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::batch::Cursor;
use crate::config::Problems;
use crate::train::Plan;

/// `[checkpoint]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Run directory: checkpoints are written here, `--resume` reads the latest one.
    pub dir: PathBuf,
    /// Write a checkpoint every N steps (0: only at the end).
    pub every_steps: u64,
    /// Keep the last K checkpoints.
    pub keep: usize,
    /// Start a fresh run from these weights (continued pretraining): an official DINO `.pth`
    /// (teacher taken), a timm ViT `.pth`/`.safetensors`, or `dino-stream export` output.
    /// `[model]` must describe the same ViT. Ignored when resuming.
    pub init_from: Option<PathBuf>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: PathBuf::from("runs/default"),
            every_steps: 1000,
            keep: 3,
            init_from: None,
        }
    }
}

impl CheckpointConfig {
    pub fn validate(&self, problems: &mut Problems) {
        problems.check(!self.dir.as_os_str().is_empty(), "checkpoint.dir", || {
            "must not be empty".into()
        });
        problems.check(self.keep >= 1, "checkpoint.keep", || "must be >= 1".into());
        if let Some(p) = &self.init_from {
            problems.check(p.is_file(), "checkpoint.init_from", || {
                format!("{}: no such file", p.display())
            });
        }
    }
}

pub const FORMAT: u32 = 1;
const TENSORS: &str = "tensors.safetensors";
const STATE: &str = "state.json";

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    pub format: u32,
    /// Steps done.
    pub step: u64,
    /// Where the data stream resumes.
    pub cursor: Cursor,
    pub plan: Plan,
    pub seed: u64,
    pub loss: f64,
    pub created_unix: u64,
    /// The resolved configuration of the run, as TOML.
    pub config: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Torch {
        path: PathBuf,
        source: tch::TchError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn step_dir_name(step: u64) -> String {
    format!("step-{step:09}")
}

fn fsync_dir(path: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Writes a checkpoint atomically and prunes old ones; returns its directory.
pub fn save(
    run_dir: &Path,
    meta: &CheckpointMeta,
    tensors: &[(String, Tensor)],
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    let final_dir = run_dir.join(step_dir_name(meta.step));
    if final_dir.join(STATE).exists() {
        return Ok(final_dir); // this step is already saved (e.g. stopped right after a resume)
    }
    let tmp = run_dir.join(format!(
        ".tmp-{}-{}",
        step_dir_name(meta.step),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let tensor_path = tmp.join(TENSORS);
    Tensor::write_safetensors(tensors, &tensor_path).map_err(|source| CheckpointError::Torch {
        path: tensor_path.clone(),
        source,
    })?;
    std::fs::File::open(&tensor_path)
        .and_then(|f| f.sync_all())
        .map_err(io(&tensor_path))?;
    let state_path = tmp.join(STATE);
    let text = serde_json::to_string_pretty(meta).expect("meta serialises");
    std::fs::write(&state_path, text).map_err(io(&state_path))?;
    std::fs::File::open(&state_path)
        .and_then(|f| f.sync_all())
        .map_err(io(&state_path))?;
    fsync_dir(&tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?; // a leftover without state.json
    }
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    fsync_dir(run_dir)?;
    prune(run_dir, keep)?;
    Ok(final_dir)
}

/// Complete checkpoints in a run directory, oldest first.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            let path = e.path();
            path.join(STATE).is_file().then_some((step, path))
        })
        .collect();
    found.sort();
    found
}

/// The newest complete checkpoint, if any.
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    list(run_dir).pop().map(|(_, p)| p)
}

fn prune(run_dir: &Path, keep: usize) -> Result<(), CheckpointError> {
    let all = list(run_dir);
    if all.len() > keep {
        for (_, path) in &all[..all.len() - keep] {
            std::fs::remove_dir_all(path).map_err(io(path))?;
        }
    }
    Ok(())
}

pub fn load_meta(dir: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let meta: CheckpointMeta =
        serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if meta.format != FORMAT {
        return Err(CheckpointError::Invalid {
            path,
            message: format!(
                "checkpoint format {}, this build reads {FORMAT}",
                meta.format
            ),
        });
    }
    Ok(meta)
}

pub fn load_tensors(dir: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    let path = dir.join(TENSORS);
    Tensor::read_safetensors(&path).map_err(|source| CheckpointError::Torch { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(step: u64) -> CheckpointMeta {
        CheckpointMeta {
            format: FORMAT,
            step,
            cursor: Cursor {
                epoch: 1,
                position: step * 2,
            },
            plan: Plan {
                steps_per_epoch: 10,
                epochs: 2,
            },
            seed: 3,
            loss: 1.5,
            created_unix: 0,
            config: String::new(),
        }
    }

    #[test]
    fn save_load_latest_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        for step in [5u64, 10, 15, 20] {
            save(
                dir.path(),
                &meta(step),
                &[("a".to_string(), t.shallow_clone())],
                2,
            )
            .unwrap();
        }
        let all = list(dir.path());
        assert_eq!(
            all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![15, 20]
        );
        let latest = latest(dir.path()).unwrap();
        assert_eq!(load_meta(&latest).unwrap(), meta(20));
        let tensors = load_tensors(&latest).unwrap();
        assert_eq!(tensors[0].0, "a");
        assert!(tensors[0].1.equal(&t));
    }

    #[test]
    fn a_half_written_checkpoint_is_never_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::from_slice(&[1.0f32]);
        save(dir.path(), &meta(5), &[("a".to_string(), t)], 3).unwrap();
        // A crash mid-write leaves a temporary directory and maybe a step dir without state.json.
        std::fs::create_dir_all(dir.path().join(".tmp-step-000000010-1")).unwrap();
        std::fs::create_dir_all(dir.path().join("step-000000010")).unwrap();
        assert_eq!(load_meta(&latest(dir.path()).unwrap()).unwrap().step, 5);
    }
}
