//! Reading shards: records are read with `pread` into owned buffers (the default) or handed
//! out as slices of a memory map (`io = "mmap"`).
//!
//! Why `pread` by default: a mapped file that is truncated or rewritten in place while mapped
//! (another `cache build` over the directory with a tool that does not rename, `truncate`, a
//! full disk on a network filesystem) turns the next touch of a vanished page into SIGBUS, which
//! kills the whole run without a checkpoint. A `pread` of a vanished range is a short read: the
//! sample is reported and skipped like any unreadable file. It costs one copy of each record
//! (from the page cache into the frame), measured in docs/ARCHITECTURE.md against the map.
//! JPEG records are handed to the decode stage as encoded bytes (libjpeg-turbo, crop-aware
//! reduced decoding included), so they are copied either way.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::format::{parse_table, table_end, Record, RecordKind, ShardHeader, HEADER_LEN};
use super::order::{quasi_random, ReadOrder};
use super::{CacheError, Manifest, FORMAT_VERSION, MANIFEST};
use crate::frame::{Frame, Pixels};
use crate::source::{IndexedSource, Payload, SourceError};

/// How records are read from shard files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadIo {
    /// `pread` into an owned buffer: a shard truncated while in use is a skipped sample.
    #[default]
    Pread,
    /// Slices of a memory map, no copy of raw records; a shard truncated while mapped raises
    /// SIGBUS and kills the process.
    Mmap,
}

/// How a cache source reads (the `[source]` keys of `type = "cache"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadOptions {
    pub limit: Option<u64>,
    pub order: ReadOrder,
    pub window: u64,
    pub lanes: u64,
    pub verify: bool,
    pub io: ReadIo,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            limit: None,
            order: ReadOrder::Random,
            window: 64,
            lanes: 8,
            verify: false,
            io: ReadIo::Pread,
        }
    }
}

/// How far a `pread` cache source reads ahead of the workers (see `read_ahead_bytes`).
pub const READ_AHEAD_BYTES: u64 = 16 << 20;

struct Shard {
    path: PathBuf,
    file: File,
    map: Option<Arc<Mmap>>,
    records: Vec<Record>,
}

/// An indexed source over a cache directory.
pub struct CacheSource {
    shards: Vec<Shard>,
    /// (shard, record) for each sample id of the cache.
    index: Vec<(u32, u32)>,
    /// Records per shard after `limit`: the layout `quasi_random` orders.
    shard_records: Vec<u64>,
    classes: Option<u32>,
    options: ReadOptions,
    /// One bit per record: its checksum was checked (with `verify`).
    verified: Vec<AtomicU64>,
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, CacheError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(CacheError::io(&path))?;
    parse_manifest(&text).map_err(|message| CacheError::Corrupt { path, message })
}

/// Parses `manifest.json`: its version must be this build's, and shard names must be plain file
/// names inside the cache directory (a crafted manifest must not make a reader open files
/// elsewhere: `../x`, `/etc/passwd` and `a/b` are refused).
pub(crate) fn parse_manifest(text: &str) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_str(text).map_err(
        |e| match serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("version")?.as_u64())
        {
            Some(v) if v != FORMAT_VERSION as u64 => version_message(v),
            _ => e.to_string(),
        },
    )?;
    if manifest.version != FORMAT_VERSION {
        return Err(version_message(manifest.version as u64));
    }
    for shard in &manifest.shards {
        let plain = Path::new(&shard.file)
            .components()
            .map(|c| matches!(c, std::path::Component::Normal(_)))
            .collect::<Vec<_>>()
            == [true];
        if !plain {
            return Err(format!(
                "shard name {:?} is not a file name inside the cache directory",
                shard.file
            ));
        }
    }
    Ok(manifest)
}

fn version_message(v: u64) -> String {
    format!(
        "cache format version {v}, this build reads only version {FORMAT_VERSION}: rebuild the \
         cache with this dino-stream (`dino-stream cache build PIPELINE --out NEW_DIR`)"
    )
}

/// Opens a shard and checks its header and table against the file's length (read with `pread`,
/// so nothing is mapped before the table is trusted).
fn open_shard(path: &Path, io: ReadIo) -> Result<Shard, CacheError> {
    let file = File::open(path).map_err(CacheError::io(path))?;
    let corrupt = |message: String| CacheError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let file_len = file.metadata().map_err(CacheError::io(path))?.len();
    let mut head = vec![0u8; HEADER_LEN.min(file_len as usize)];
    file.read_exact_at(&mut head, 0)
        .map_err(CacheError::io(path))?;
    let header = ShardHeader::decode(&head).map_err(corrupt)?;
    let end = table_end(header.records)
        .filter(|&e| e as u64 <= file_len)
        .ok_or_else(|| {
            corrupt(format!(
                "truncated offset table ({} records)",
                header.records
            ))
        })?;
    let mut table = vec![0u8; end];
    file.read_exact_at(&mut table, 0)
        .map_err(CacheError::io(path))?;
    let records = parse_table(&table, file_len).map_err(corrupt)?;
    let map = match io {
        ReadIo::Pread => None,
        // SAFETY: shards are immutable once renamed into place; a shard truncated in place
        // while mapped raises SIGBUS, which is why `pread` is the default.
        ReadIo::Mmap => Some(Arc::new(
            unsafe { Mmap::map(&file) }.map_err(CacheError::io(path))?,
        )),
    };
    Ok(Shard {
        path: path.to_path_buf(),
        file,
        map,
        records,
    })
}

impl CacheSource {
    pub fn open(dir: &Path, limit: Option<u64>) -> Result<Self, SourceError> {
        Self::open_with(
            dir,
            &ReadOptions {
                limit,
                ..Default::default()
            },
        )
    }

    pub fn open_with(dir: &Path, options: &ReadOptions) -> Result<Self, SourceError> {
        let to_source = |e: CacheError| SourceError::Open {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        let manifest = read_manifest(dir).map_err(to_source)?;
        if !manifest.complete {
            tracing::warn!(cache = %dir.display(), "cache build did not finish; using its {} complete shards", manifest.shards.len());
        }
        let mut shards = Vec::new();
        let mut index = Vec::new();
        let mut shard_records = Vec::new();
        let mut max_label = -1i32;
        let limit = options.limit.unwrap_or(u64::MAX);
        for (s, entry) in manifest.shards.iter().enumerate() {
            let shard = open_shard(&dir.join(&entry.file), options.io).map_err(to_source)?;
            let before = index.len();
            for (r, rec) in shard.records.iter().enumerate() {
                if index.len() as u64 >= limit {
                    break;
                }
                index.push((s as u32, r as u32));
                max_label = max_label.max(rec.label);
            }
            shard_records.push((index.len() - before) as u64);
            shards.push(shard);
        }
        if index.is_empty() {
            return Err(SourceError::Open {
                path: dir.to_path_buf(),
                message: "cache holds no records".into(),
            });
        }
        let verified = if options.verify {
            (0..index.len().div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        } else {
            Vec::new()
        };
        Ok(CacheSource {
            shards,
            index,
            shard_records,
            classes: (max_label >= 0).then_some(max_label as u32 + 1),
            options: *options,
            verified,
        })
    }

    fn record(&self, id: u64) -> (&Shard, &Record) {
        let (s, r) = self.index[id as usize];
        let shard = &self.shards[s as usize];
        (shard, &shard.records[r as usize])
    }

    /// Checks the record's checksum the first time it is read (with `verify`).
    fn check_once(
        &self,
        id: u64,
        shard: &Shard,
        rec: &Record,
        bytes: &[u8],
    ) -> Result<(), SourceError> {
        let Some(word) = self.verified.get(id as usize / 64) else {
            return Ok(());
        };
        let bit = 1u64 << (id % 64);
        if word.load(Ordering::Relaxed) & bit != 0 {
            return Ok(());
        }
        if crc32fast::hash(bytes) != rec.crc {
            return Err(SourceError::Corrupt {
                path: shard.path.display().to_string(),
                message: format!(
                    "record at byte {} (id {}): checksum mismatch",
                    rec.offset, rec.id
                ),
            });
        }
        word.fetch_or(bit, Ordering::Relaxed);
        Ok(())
    }
}

impl IndexedSource for CacheSource {
    fn len(&self) -> u64 {
        self.index.len() as u64
    }

    fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<u64> {
        match self.options.order {
            ReadOrder::Random => crate::source::epoch_order(seed, epoch, self.len()),
            ReadOrder::QuasiRandom => quasi_random(
                seed,
                epoch,
                &self.shard_records,
                self.options.window,
                self.options.lanes,
            ),
        }
    }

    /// With `pread`, every record read ahead is a fresh buffer: measured on 500×375 raw
    /// records (one augment worker, AMD EPYC), 512 MiB in flight (the default
    /// `decode.channel_bytes`) ran at 36-58 images/s, 128 MiB at 55, 64 MiB at 230 and 16 MiB
    /// at 374 (the map: 338-353), so a pread cache reads at most 16 MiB ahead.
    fn read_ahead_bytes(&self) -> Option<u64> {
        (self.options.io == ReadIo::Pread).then_some(READ_AHEAD_BYTES)
    }

    fn read(&self, id: u64) -> Result<Payload, SourceError> {
        let (shard, rec) = self.record(id);
        let range = rec.offset as usize..(rec.offset + rec.len) as usize;
        let pixels = match &shard.map {
            Some(map) => {
                self.check_once(id, shard, rec, &map[range.clone()])?;
                if rec.kind == RecordKind::Jpeg {
                    return Ok(Payload::Encoded(map[range].to_vec()));
                }
                Pixels::Mapped {
                    map: map.clone(),
                    range,
                }
            }
            None => {
                let mut buf = vec![0u8; rec.len as usize];
                shard
                    .file
                    .read_exact_at(&mut buf, rec.offset)
                    .map_err(|e| SourceError::Corrupt {
                        path: shard.path.display().to_string(),
                        message: match e.kind() {
                            std::io::ErrorKind::UnexpectedEof => format!(
                                "record at byte {} (id {}) lies past the end of the file: \
                                 the shard was truncated or rewritten while in use",
                                rec.offset, rec.id
                            ),
                            _ => format!("reading record at byte {}: {e}", rec.offset),
                        },
                    })?;
                self.check_once(id, shard, rec, &buf)?;
                if rec.kind == RecordKind::Jpeg {
                    return Ok(Payload::Encoded(buf));
                }
                Pixels::Owned(buf)
            }
        };
        Ok(Payload::Decoded(Frame {
            width: rec.width,
            height: rec.height,
            pixels,
        }))
    }

    fn label(&self, id: u64) -> Option<u32> {
        let (_, rec) = self.record(id);
        (rec.label >= 0).then_some(rec.label as u32)
    }

    fn num_classes(&self) -> Option<u32> {
        self.classes
    }

    fn describe(&self, id: u64) -> String {
        let (shard, rec) = self.record(id);
        format!("{}@{}", shard.path.display(), rec.offset)
    }
}

impl CacheSource {
    /// Every record's (shard file, table entry), in id order: for export and info.
    pub fn records(&self) -> impl Iterator<Item = (&Path, &Record)> {
        self.index.iter().map(|&(s, r)| {
            let shard = &self.shards[s as usize];
            (shard.path.as_path(), &shard.records[r as usize])
        })
    }

    /// The stored bytes of record `id` (the JPEG file of a JPEG record, RGB8 of a raw one).
    pub fn stored_bytes(&self, id: u64) -> Result<Vec<u8>, SourceError> {
        let (shard, rec) = self.record(id);
        let mut buf = vec![0u8; rec.len as usize];
        shard
            .file
            .read_exact_at(&mut buf, rec.offset)
            .map_err(|source| SourceError::Io {
                path: shard.path.clone(),
                source,
            })?;
        Ok(buf)
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub shards: usize,
    pub records: u64,
    /// One line per problem: file and what is wrong.
    pub problems: Vec<String>,
}

/// Checks every shard's header, table checksum and every record's checksum.
pub fn verify(dir: &Path) -> Result<VerifyReport, CacheError> {
    let manifest = read_manifest(dir)?;
    let mut report = VerifyReport::default();
    if !manifest.complete {
        report.problems.push(format!(
            "{}: build did not finish",
            dir.join(MANIFEST).display()
        ));
    }
    for entry in &manifest.shards {
        let path = dir.join(&entry.file);
        report.shards += 1;
        let shard = match open_shard(&path, ReadIo::Pread) {
            Ok(s) => s,
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        };
        if shard.records.len() as u64 != entry.records {
            report.problems.push(format!(
                "{}: {} records, manifest says {}",
                path.display(),
                shard.records.len(),
                entry.records
            ));
        }
        let mut buf = Vec::new();
        for (i, rec) in shard.records.iter().enumerate() {
            report.records += 1;
            buf.resize(rec.len as usize, 0);
            let ok = shard.file.read_exact_at(&mut buf, rec.offset).is_ok()
                && crc32fast::hash(&buf) == rec.crc;
            if !ok {
                report.problems.push(format!(
                    "{}: record {i} (id {}) checksum mismatch",
                    path.display(),
                    rec.id
                ));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
