//! The shard cache: decoded (optionally resized, optionally JPEG-compressed) images in shard
//! files, so training skips most of decoding.
//!
//! A cache directory holds `shard-NNNNN.dsc` files and a `manifest.json` listing the complete
//! ones with the settings the cache was built with. Every file is written under a temporary
//! name, fsynced, renamed into place and the directory fsynced, so a crash leaves either the old
//! state or the new one; an interrupted build resumes after the last complete shard, and only
//! with the same settings and source.

mod build;
mod encoding;
mod export;
mod format;
mod info;
mod order;
mod reader;
#[cfg(turbojpeg)]
mod turbo_encode;
mod writer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

pub use build::{build, BuildOptions, BuildReport};
pub use encoding::{encode_jpeg, encode_record, stored_size, Encoded, Encoding, RecordSettings};
pub use export::{export_webdataset, ExportReport};
pub use format::{Record, RecordKind, ShardHeader, FORMAT_VERSION, MAGIC};
pub use info::{info, CacheInfo};
pub use order::{quasi_random, ReadOrder};
pub use reader::{verify, CacheSource, ReadIo, ReadOptions, VerifyReport};
pub use writer::ShardWriter;

/// `[cache]`: how `cache build` writes shards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Largest shard file, in bytes; a record larger than this gets a shard of its own.
    pub shard_bytes: u64,
    /// Default output directory for `cache build` when `--out` is not given.
    pub dir: Option<PathBuf>,
    /// How records are stored: `raw` (RGB8, nothing to decode on read), `jpeg` (at `quality`,
    /// decoded with libjpeg-turbo on read, ~10x fewer bytes) or `auto` (raw where the raw record
    /// is at most `auto_ratio` times its JPEG, JPEG otherwise).
    pub encoding: Encoding,
    /// JPEG quality (1-100) of `jpeg` and `auto` records.
    pub quality: u8,
    /// `auto`: keep a record raw while raw bytes ≤ this × the JPEG's bytes.
    pub auto_ratio: f64,
    /// Resize on write so that the longer side is at most this many pixels (the augment stage's
    /// bicubic; never enlarges). FFCV's `max_resolution`.
    pub max_side: Option<u32>,
    /// Resize on write so that the shorter side is at most this many pixels (never enlarges).
    pub short_side: Option<u32>,
    /// Threads that decode, resize and encode during `cache build` (0: one per core). Records
    /// are written in source order whatever the count.
    pub workers: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            shard_bytes: 256 * 1024 * 1024,
            dir: None,
            encoding: Encoding::Raw,
            quality: 90,
            auto_ratio: 6.0,
            max_side: None,
            short_side: None,
            workers: 0,
        }
    }
}

impl CacheConfig {
    pub fn validate(&self, problems: &mut Problems) {
        problems.check(self.shard_bytes >= 4096, "cache.shard_bytes", || {
            format!("must be >= 4096, got {}", self.shard_bytes)
        });
        problems.check((1..=100).contains(&self.quality), "cache.quality", || {
            format!("must be 1..=100, got {}", self.quality)
        });
        problems.check(
            self.auto_ratio.is_finite() && self.auto_ratio > 0.0,
            "cache.auto_ratio",
            || format!("must be > 0, got {}", self.auto_ratio),
        );
        for (key, v) in [
            ("cache.max_side", self.max_side),
            ("cache.short_side", self.short_side),
        ] {
            problems.check(v != Some(0), key, || {
                "must be > 0 (leave it out to keep the full size)".into()
            });
        }
        problems.check(self.workers <= 1024, "cache.workers", || {
            format!("must be <= 1024, got {}", self.workers)
        });
    }

    /// The part of this config that shapes each record.
    pub fn record_settings(&self) -> RecordSettings {
        RecordSettings {
            encoding: self.encoding,
            quality: self.quality,
            auto_ratio: self.auto_ratio,
            max_side: self.max_side,
            short_side: self.short_side,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl CacheError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CacheError {
        let path = path.into();
        move |source| CacheError::Io { path, source }
    }
}

/// `manifest.json`: the complete shards of a cache, in order, and how it was built.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub shards: Vec<ManifestShard>,
    /// Source samples consumed so far (including skipped ones): where a resumed build goes on.
    pub consumed: u64,
    /// True once the whole source has been written.
    pub complete: bool,
    pub skipped: u64,
    /// The settings and source of the build; a resumed build must match them.
    pub settings: Option<BuildSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestShard {
    pub file: String,
    pub records: u64,
    /// The shard file's size.
    #[serde(default)]
    pub bytes: u64,
    /// Records stored as JPEG (the rest are raw).
    #[serde(default)]
    pub jpeg: u64,
}

/// What a cache was built from and how: `cache info` prints it, and a resumed build with any
/// difference is refused (its records would not be one cache's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildSettings {
    pub records: RecordSettings,
    pub shard_bytes: u64,
    /// `[source]` as configured (its kind, path and options).
    pub source: serde_json::Value,
    /// `train.seed`, for sources whose content depends on it (video frames drawn per seed).
    pub seed: Option<u64>,
    /// `decode.max_pixels`: larger pictures were skipped.
    pub max_pixels: u64,
}

pub const MANIFEST: &str = "manifest.json";

/// Fsyncs a directory, so that a rename inside it survives a crash.
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), CacheError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CacheError::io(dir))
}
