//! Checkpoints: a directory per step, written under a temporary name and renamed into place, so
//! a crash leaves either the previous checkpoint or the new one, never half of one.
//!
//! ```text
//! checkpoint.dir/step-000001200/tensors.safetensors   student.*, teacher.*, optim.*, loss.center
//! checkpoint.dir/step-000001200/state.json            step, data cursor, plan, seed, resolved config
//! ```
//! Every random stream in a run is keyed by (seed, epoch, sample id) or (seed, step), so the
//! seed, step and cursor are the whole RNG state.
//!
//! `state.json` carries a CRC32 of every tensor's bytes in `tensors.safetensors`; loading checks
//! them, so a damaged checkpoint is refused by name and `--resume` can fall back to an older one
//! ([`latest_good`]). A save that fails removes its temporary directory; temporary directories
//! left by a killed writer are removed by [`remove_stale_temps`] once the run directory's lock
//! is held (the lock proves their writer is gone).

use std::collections::BTreeMap;
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
    /// Loss of the last step; NaN (`null` in JSON) when no step was taken.
    #[serde(deserialize_with = "nan_from_null")]
    pub loss: f64,
    pub created_unix: u64,
    /// The resolved configuration of the run, as TOML.
    pub config: String,
    /// Size and per-tensor CRC32 of `tensors.safetensors` (absent in older checkpoints, which
    /// load unchecked). Filled in by [`save`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<TensorSums>,
}

/// Checksums of a checkpoint's tensor file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TensorSums {
    /// File size in bytes.
    pub bytes: u64,
    /// CRC32 of each tensor's bytes, by tensor name.
    pub crc32: BTreeMap<String, u32>,
}

/// serde_json writes a NaN loss (a run that took no step) as `null`; read it back as NaN.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
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

/// Prefix of the temporary directory a checkpoint is written in.
const TMP_PREFIX: &str = ".tmp-";

/// Writes a checkpoint atomically and prunes old ones; returns its directory. On any error the
/// temporary directory is removed (a full disk stays as full as it was before the save).
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
        "{TMP_PREFIX}{}-{}",
        step_dir_name(meta.step),
        std::process::id()
    ));
    let written = write_into(&tmp, meta, tensors);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let placed = (|| {
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?; // a leftover without state.json
        }
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    fsync_dir(run_dir)?;
    prune(run_dir, keep)?;
    Ok(final_dir)
}

/// Writes tensors and state (with the tensors' checksums) into `tmp`, each fsynced.
fn write_into(
    tmp: &Path,
    meta: &CheckpointMeta,
    tensors: &[(String, Tensor)],
) -> Result<(), CheckpointError> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(io(tmp))?;
    }
    std::fs::create_dir_all(tmp).map_err(io(tmp))?;
    let tensor_path = tmp.join(TENSORS);
    Tensor::write_safetensors(tensors, &tensor_path).map_err(|source| CheckpointError::Torch {
        path: tensor_path.clone(),
        source,
    })?;
    std::fs::File::open(&tensor_path)
        .and_then(|f| f.sync_all())
        .map_err(io(&tensor_path))?;
    // The sums are taken from the file as written, so they also cover what reached the disk.
    let sums = checksum_file(&tensor_path)?;
    let meta = CheckpointMeta {
        tensors: Some(sums),
        ..meta.clone()
    };
    let state_path = tmp.join(STATE);
    let text = serde_json::to_string_pretty(&meta).expect("meta serialises");
    std::fs::write(&state_path, text).map_err(io(&state_path))?;
    std::fs::File::open(&state_path)
        .and_then(|f| f.sync_all())
        .map_err(io(&state_path))?;
    fsync_dir(tmp)
}

fn map_file(path: &Path) -> Result<memmap2::Mmap, CheckpointError> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    // SAFETY: checkpoint files are written once under a temporary name and never modified in
    // place; a concurrent writer would have to hold the run directory's lock.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))
}

fn checksum_file(path: &Path) -> Result<TensorSums, CheckpointError> {
    let map = map_file(path)?;
    let ranges = safetensors_ranges(&map).map_err(|message| CheckpointError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(TensorSums {
        bytes: map.len() as u64,
        crc32: ranges
            .into_iter()
            .map(|(name, r)| (name, crc32fast::hash(&map[r])))
            .collect(),
    })
}

/// Checks `dir`'s tensor file against the checksums in `meta` (nothing to check for
/// checkpoints written before checksums existed).
pub fn verify_tensors(dir: &Path, meta: &CheckpointMeta) -> Result<(), CheckpointError> {
    let Some(expected) = &meta.tensors else {
        return Ok(());
    };
    let path = dir.join(TENSORS);
    let invalid = |message: String| CheckpointError::Invalid {
        path: path.clone(),
        message,
    };
    let map = map_file(&path)?;
    if map.len() as u64 != expected.bytes {
        return Err(invalid(format!(
            "{} bytes, state.json says {} (truncated or replaced)",
            map.len(),
            expected.bytes
        )));
    }
    let ranges = safetensors_ranges(&map).map_err(&invalid)?;
    let names: Vec<&String> = ranges.iter().map(|(n, _)| n).collect();
    if names.len() != expected.crc32.len() || names.iter().any(|n| !expected.crc32.contains_key(*n))
    {
        return Err(invalid(
            "its tensors are not the ones state.json lists".into(),
        ));
    }
    for (name, range) in ranges {
        if crc32fast::hash(&map[range]) != expected.crc32[&name] {
            return Err(invalid(format!(
                "tensor {name}: checksum mismatch (damaged file)"
            )));
        }
    }
    Ok(())
}

/// The byte range of every tensor in a safetensors file (8-byte little-endian header length,
/// a JSON header of `name: {dtype, shape, data_offsets}`, then the data). Every size comes from
/// the file, so every one is checked: a crafted header gets an error, never a panic.
pub fn safetensors_ranges(bytes: &[u8]) -> Result<Vec<(String, std::ops::Range<usize>)>, String> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("too short for a safetensors header")?;
    let header_len = usize::try_from(u64::from_le_bytes(len_bytes))
        .map_err(|_| "header length does not fit in memory")?;
    let data_start = header_len
        .checked_add(8)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format!("header length {header_len} runs past the end of the file"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..data_start]).map_err(|e| format!("header: {e}"))?;
    let data_len = bytes.len() - data_start;
    let mut out = Vec::with_capacity(header.len());
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let offsets = entry
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
            .ok_or_else(|| format!("tensor {name}: no valid data_offsets"))?;
        let (begin, end) = (
            usize::try_from(offsets.0).map_err(|_| format!("tensor {name}: offset too large"))?,
            usize::try_from(offsets.1).map_err(|_| format!("tensor {name}: offset too large"))?,
        );
        if begin > end || end > data_len {
            return Err(format!(
                "tensor {name}: bytes {begin}..{end} lie outside the {data_len} data bytes"
            ));
        }
        out.push((name, data_start + begin..data_start + end));
    }
    out.sort_by_key(|(_, r)| r.start);
    Ok(out)
}

/// Removes temporary directories left by saves that never finished. Call it only while holding
/// the run directory's lock: the lock proves that their writer has exited.
pub fn remove_stale_temps(run_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
        .map(|e| e.path())
        .filter(|p| std::fs::remove_dir_all(p).is_ok())
        .collect()
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

/// The newest checkpoint whose state and tensor checksums are intact, with the damaged newer
/// ones it passed over (each with why), newest first.
pub fn latest_good(run_dir: &Path) -> (Option<(PathBuf, CheckpointMeta)>, Vec<CheckpointError>) {
    let mut damaged = Vec::new();
    for (_, dir) in list(run_dir).into_iter().rev() {
        match load_meta(&dir).and_then(|meta| verify_tensors(&dir, &meta).map(|()| meta)) {
            Ok(meta) => return (Some((dir, meta)), damaged),
            Err(e) => damaged.push(e),
        }
    }
    (None, damaged)
}

/// A checkpoint named by the user: a checkpoint directory itself, or a run directory (its
/// newest checkpoint). When there is none, the error lists the checkpoints that do exist next
/// to the path given, so a mistyped step number is easy to fix.
pub fn find(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join(STATE).is_file() {
        return Ok(path.to_path_buf());
    }
    if let Some(newest) = latest(path) {
        return Ok(newest);
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let near = list(parent);
    let what = if path.is_dir() {
        "is neither a checkpoint (no state.json) nor a run directory with checkpoints"
    } else {
        "no such checkpoint"
    };
    let message = if near.is_empty() {
        format!("{what}; {} holds no checkpoint either", parent.display())
    } else {
        let names: Vec<String> = near.iter().map(|(_, p)| p.display().to_string()).collect();
        format!("{what}; the checkpoints there are: {}", names.join(", "))
    };
    Err(CheckpointError::Invalid {
        path: path.to_path_buf(),
        message,
    })
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

/// The tensors of a checkpoint, after checking them against the checksums in its state.json.
pub fn load_tensors(dir: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    verify_tensors(dir, &load_meta(dir)?)?;
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
            tensors: None,
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
        let loaded = load_meta(&latest).unwrap();
        assert_eq!(
            CheckpointMeta {
                tensors: None,
                ..loaded.clone()
            },
            meta(20)
        );
        let le: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(loaded.tensors.unwrap().crc32["a"], crc32fast::hash(&le));
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

    fn two_tensors() -> Vec<(String, Tensor)> {
        vec![
            ("a".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0])),
            ("b".to_string(), Tensor::from_slice(&[7i64, 8])),
        ]
    }

    #[test]
    fn a_flipped_bit_is_refused_by_name_and_resume_falls_back_to_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        for step in [1u64, 2] {
            save(dir.path(), &meta(step), &two_tensors(), 3).unwrap();
        }
        let newest = latest(dir.path()).unwrap();
        let file = newest.join(TENSORS);
        let mut bytes = std::fs::read(&file).unwrap();
        let ranges = safetensors_ranges(&bytes).unwrap();
        let b = ranges.iter().find(|(n, _)| n == "b").unwrap().1.clone();
        bytes[b.start + 3] ^= 0x10;
        std::fs::write(&file, bytes).unwrap();
        let err = load_tensors(&newest).unwrap_err().to_string();
        assert!(
            err.contains("step-000000002") && err.contains("tensor b: checksum mismatch"),
            "{err}"
        );
        let (good, damaged) = latest_good(dir.path());
        let (good_dir, good_meta) = good.unwrap();
        assert_eq!(good_meta.step, 1);
        assert_eq!(load_tensors(&good_dir).unwrap().len(), 2);
        assert_eq!(damaged.len(), 1);
        assert!(damaged[0].to_string().contains("step-000000002"));

        // A truncated file and an unreadable state.json are damaged too.
        std::fs::write(good_dir.join(STATE), "{").unwrap();
        let (none, damaged) = latest_good(dir.path());
        assert!(none.is_none());
        assert_eq!(damaged.len(), 2);
    }

    #[test]
    fn a_checkpoint_of_zero_steps_with_a_null_loss_loads() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointMeta {
            loss: f64::NAN,
            ..meta(0)
        };
        let saved = save(dir.path(), &m, &two_tensors(), 3).unwrap();
        let text = std::fs::read_to_string(saved.join(STATE)).unwrap();
        assert!(text.contains("\"loss\": null"), "{text}");
        let loaded = load_meta(&saved).unwrap();
        assert!(loaded.loss.is_nan());
        assert_eq!(load_tensors(&saved).unwrap().len(), 2);
    }

    #[test]
    fn stale_temporary_directories_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &meta(1), &two_tensors(), 3).unwrap();
        let stale = dir.path().join(".tmp-step-000000002-4242");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join(TENSORS), [0u8; 64]).unwrap();
        assert_eq!(remove_stale_temps(dir.path()), vec![stale.clone()]);
        assert!(!stale.exists());
        assert_eq!(list(dir.path()).len(), 1, "complete checkpoints stay");
    }

    #[test]
    fn a_failed_save_leaves_no_temporary_directory() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &meta(1), &two_tensors(), 3).unwrap();
        // The final name is taken by a file, so the rename fails after everything was written.
        std::fs::write(dir.path().join("step-000000002"), "in the way").unwrap();
        assert!(save(dir.path(), &meta(2), &two_tensors(), 3).is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(TMP_PREFIX)),
            "{names:?}"
        );
        assert_eq!(load_meta(&latest(dir.path()).unwrap()).unwrap().step, 1);
    }

    /// Arbitrary and mutated bytes into the safetensors header parser and the state.json reader:
    /// errors, never panics, and never a range outside the input.
    #[test]
    fn parsers_never_panic_on_mutated_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let saved = save(dir.path(), &meta(3), &two_tensors(), 3).unwrap();
        let tensors = std::fs::read(saved.join(TENSORS)).unwrap();
        let state = std::fs::read(saved.join(STATE)).unwrap();
        let mut rng = crate::rng::Rng::keyed(&[13, 7]);
        for round in 0..4000u64 {
            for (seed, reader) in [(&tensors, 0), (&state, 1)] {
                let bytes = crate::testing::mutate(seed, &mut rng, round);
                if reader == 0 {
                    if let Ok(ranges) = safetensors_ranges(&bytes) {
                        assert!(ranges.iter().all(|(_, r)| r.end <= bytes.len()));
                    }
                } else {
                    let _ = serde_json::from_slice::<CheckpointMeta>(&bytes);
                }
            }
        }
    }
}
