//! Writing shards: buffer records up to the shard size, then write header, table and pixels to a
//! temporary file, fsync, rename, and only then list the shard in the manifest.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{Record, ShardHeader, ENTRY_LEN, FORMAT_VERSION, HEADER_LEN};
use super::{CacheError, Manifest, ManifestShard, MANIFEST};
use crate::frame::Frame;
use crate::source::{OpenedSource, PassEnd, Payload};

/// Accumulates records for one shard at a time and commits whole shards.
pub struct ShardWriter {
    dir: PathBuf,
    shard_bytes: u64,
    manifest: Manifest,
    pending: Vec<(Record, Frame)>,
    pending_bytes: u64,
    /// Samples consumed (written or skipped) since the last committed shard.
    pending_consumed: u64,
    pending_skipped: u64,
}

impl ShardWriter {
    /// Opens `dir`, resuming after the shards its manifest lists (stray temporary files from an
    /// interrupted build are removed).
    pub fn open(dir: &Path, shard_bytes: u64) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(CacheError::io(dir))?;
        let manifest_path = dir.join(MANIFEST);
        let manifest = if manifest_path.exists() {
            let text =
                std::fs::read_to_string(&manifest_path).map_err(CacheError::io(&manifest_path))?;
            serde_json::from_str(&text).map_err(|e| CacheError::Corrupt {
                path: manifest_path.clone(),
                message: e.to_string(),
            })?
        } else {
            Manifest {
                version: FORMAT_VERSION,
                ..Default::default()
            }
        };
        for entry in std::fs::read_dir(dir)
            .map_err(CacheError::io(dir))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            shard_bytes,
            manifest,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_consumed: 0,
            pending_skipped: 0,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Adds one decoded image (with its source id and label).
    pub fn push(&mut self, id: u64, label: Option<u32>, frame: Frame) -> Result<(), CacheError> {
        let len = frame.data().len() as u64;
        if !self.pending.is_empty() && self.pending_bytes + len > self.shard_bytes {
            self.commit_shard()?;
        }
        let record = Record {
            offset: 0,
            len,
            width: frame.width,
            height: frame.height,
            label: label.map_or(-1, |l| l as i32),
            crc: crc32fast::hash(frame.data()),
            id,
        };
        self.pending.push((record, frame));
        self.pending_bytes += len;
        self.pending_consumed += 1;
        Ok(())
    }

    /// Counts a sample that could not be decoded: consumed, not written.
    pub fn skip(&mut self) {
        self.pending_consumed += 1;
        self.pending_skipped += 1;
    }

    /// Writes the pending records as one shard and records it in the manifest.
    fn commit_shard(&mut self) -> Result<(), CacheError> {
        if self.pending.is_empty() {
            self.write_manifest()?;
            return Ok(());
        }
        let name = format!("shard-{:05}.dsc", self.manifest.shards.len());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut offset = (HEADER_LEN + self.pending.len() * ENTRY_LEN) as u64;
        let mut table = Vec::with_capacity(self.pending.len() * ENTRY_LEN);
        for (record, _) in &mut self.pending {
            record.offset = offset;
            offset += record.len;
            record.encode(&mut table);
        }
        let header = ShardHeader {
            version: FORMAT_VERSION,
            records: self.pending.len() as u32,
            table_crc: crc32fast::hash(&table),
        };
        {
            let file = std::fs::File::create(&tmp).map_err(CacheError::io(&tmp))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            w.write_all(&header.encode())
                .map_err(CacheError::io(&tmp))?;
            w.write_all(&table).map_err(CacheError::io(&tmp))?;
            for (_, frame) in &self.pending {
                w.write_all(frame.data()).map_err(CacheError::io(&tmp))?;
            }
            let file = w.into_inner().map_err(|e| CacheError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(CacheError::io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(CacheError::io(&path))?;
        self.manifest.shards.push(ManifestShard {
            file: name,
            records: self.pending.len() as u64,
        });
        self.pending.clear();
        self.pending_bytes = 0;
        self.write_manifest()
    }

    fn write_manifest(&mut self) -> Result<(), CacheError> {
        self.manifest.consumed += self.pending_consumed;
        self.manifest.skipped += self.pending_skipped;
        self.pending_consumed = 0;
        self.pending_skipped = 0;
        let path = self.dir.join(MANIFEST);
        let tmp = self.dir.join(format!("{MANIFEST}.tmp"));
        let text = serde_json::to_string_pretty(&self.manifest).expect("manifest serialises");
        std::fs::write(&tmp, text).map_err(CacheError::io(&tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(CacheError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(CacheError::io(&path))
    }

    /// Commits what is pending and marks the cache complete.
    pub fn finish(mut self) -> Result<Manifest, CacheError> {
        self.commit_shard()?;
        self.manifest.complete = true;
        self.write_manifest()?;
        Ok(self.manifest)
    }
}

#[derive(Debug, Clone, Default)]
pub struct BuildReport {
    pub written: u64,
    pub skipped: u64,
    pub shards: usize,
    /// Samples already in the cache when this build started (a resumed build).
    pub resumed_from: u64,
}

/// Decodes a whole source, in id order, into shards under `dir`. `decode` turns a payload into a
/// frame or an error message; `on_skip(description, message)` hears about each sample skipped.
/// A stream source (video) is read as its epoch 0 with `seed` and `max_pixels`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    source: OpenedSource,
    dir: &Path,
    shard_bytes: u64,
    seed: u64,
    max_pixels: u64,
    decode: &dyn Fn(Payload) -> Result<Frame, String>,
    on_skip: &mut dyn FnMut(&str, &str),
) -> Result<BuildReport, CacheError> {
    let mut writer = ShardWriter::open(dir, shard_bytes)?;
    let resumed_from = writer.manifest().consumed;
    let mut report = BuildReport {
        resumed_from,
        ..Default::default()
    };
    if writer.manifest().complete {
        report.shards = writer.manifest().shards.len();
        return Ok(report);
    }
    match source {
        OpenedSource::Indexed(src) => {
            for id in resumed_from..src.len() {
                let frame = src.read(id).map_err(|e| e.to_string()).and_then(decode);
                match frame {
                    Ok(f) => {
                        writer.push(id, src.label(id), f)?;
                        report.written += 1;
                    }
                    Err(message) => {
                        on_skip(&src.describe(id), &message);
                        writer.skip();
                        report.skipped += 1;
                    }
                }
            }
        }
        OpenedSource::Stream(mut src) => {
            let mut result = Ok(());
            let mut emit = |pos: u64, frame: Frame| match writer.push(pos, None, frame) {
                Ok(()) => {
                    report.written += 1;
                    true
                }
                Err(e) => {
                    result = Err(e);
                    false
                }
            };
            let pass = crate::source::Pass {
                seed,
                epoch: 0,
                start: resumed_from,
                max_pixels,
            };
            if src.run_pass(&pass, &mut emit, on_skip) == PassEnd::Stopped {
                result?;
            }
        }
    }
    let manifest = writer.finish()?;
    report.shards = manifest.shards.len();
    Ok(report)
}
