//! The shard cache: decoded RGB8 images in memory-mapped files, so training skips decode.
//!
//! A cache directory holds `shard-NNNNN.dsc` files and a `manifest.json` listing the complete
//! ones. Every file is written under a temporary name and renamed into place, so a crash leaves
//! either the old state or the new one; an interrupted build resumes after the last complete
//! shard.

mod format;
mod reader;
mod writer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

pub use format::{Record, ShardHeader, FORMAT_VERSION, MAGIC};
pub use reader::{verify, CacheSource, VerifyReport};
pub use writer::{build, BuildReport, ShardWriter};

/// `[cache]`: how `cache build` writes shards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Largest shard file, in bytes; a record larger than this gets a shard of its own.
    pub shard_bytes: u64,
    /// Default output directory for `cache build` when `--out` is not given.
    pub dir: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            shard_bytes: 256 * 1024 * 1024,
            dir: None,
        }
    }
}

impl CacheConfig {
    pub fn validate(&self, problems: &mut Problems) {
        problems.check(self.shard_bytes >= 4096, "cache.shard_bytes", || {
            format!("must be >= 4096, got {}", self.shard_bytes)
        });
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

/// `manifest.json`: the complete shards of a cache, in order.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub shards: Vec<ManifestShard>,
    /// Source samples consumed so far (including skipped ones): where a resumed build goes on.
    pub consumed: u64,
    /// True once the whole source has been written.
    pub complete: bool,
    pub skipped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestShard {
    pub file: String,
    pub records: u64,
}

pub const MANIFEST: &str = "manifest.json";
