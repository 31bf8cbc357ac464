//! `cache info DIR`: what a cache holds and how it was built, from its manifest alone (no shard
//! is read, so it answers at once for a cache of any size).

use std::fmt;
use std::path::Path;

use super::reader::read_manifest;
use super::{CacheError, Manifest};

/// A cache's summary.
#[derive(Debug, Clone)]
pub struct CacheInfo {
    pub manifest: Manifest,
}

/// Reads `DIR/manifest.json` (its version and shard names checked as for reading).
pub fn info(dir: &Path) -> Result<CacheInfo, CacheError> {
    Ok(CacheInfo {
        manifest: read_manifest(dir)?,
    })
}

impl CacheInfo {
    pub fn records(&self) -> u64 {
        self.manifest.shards.iter().map(|s| s.records).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.manifest.shards.iter().map(|s| s.bytes).sum()
    }

    pub fn jpeg_records(&self) -> u64 {
        self.manifest.shards.iter().map(|s| s.jpeg).sum()
    }
}

impl fmt::Display for CacheInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        let (records, bytes, jpeg) = (self.records(), self.bytes(), self.jpeg_records());
        writeln!(
            f,
            "format:   version {}, {}",
            m.version,
            if m.complete {
                "complete".to_string()
            } else {
                format!("build not finished ({} samples consumed)", m.consumed)
            }
        )?;
        writeln!(
            f,
            "records:  {records} in {} shards ({} skipped while building)",
            m.shards.len(),
            m.skipped
        )?;
        writeln!(
            f,
            "bytes:    {bytes} ({:.1} MiB, {} per record)",
            bytes as f64 / (1 << 20) as f64,
            bytes.checked_div(records).unwrap_or(0)
        )?;
        writeln!(
            f,
            "kinds:    {} raw, {jpeg} jpeg",
            records - jpeg.min(records)
        )?;
        let Some(s) = &m.settings else {
            return writeln!(f, "settings: not recorded");
        };
        let r = &s.records;
        let side = |v: Option<u32>| v.map_or("full size".to_string(), |v| v.to_string());
        writeln!(
            f,
            "encoding: {:?} (quality {}, auto_ratio {})",
            r.encoding, r.quality, r.auto_ratio
        )?;
        writeln!(
            f,
            "resize:   max_side {}, short_side {}",
            side(r.max_side),
            side(r.short_side)
        )?;
        writeln!(f, "shards:   at most {} bytes each", s.shard_bytes)?;
        writeln!(f, "source:   {}", s.source)?;
        if let Some(seed) = s.seed {
            writeln!(f, "seed:     {seed}")?;
        }
        writeln!(f, "decode:   max_pixels {}", s.max_pixels)
    }
}
