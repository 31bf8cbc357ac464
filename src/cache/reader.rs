//! Reading shards through memmap2: a record is handed out as a slice of the map, no copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::format::{parse_table, Record};
use super::{CacheError, Manifest, MANIFEST};
use crate::frame::{Frame, Pixels};
use crate::source::{IndexedSource, Payload, SourceError};

struct Shard {
    path: PathBuf,
    map: Arc<Mmap>,
    records: Vec<Record>,
}

/// An indexed source over a cache directory.
pub struct CacheSource {
    shards: Vec<Shard>,
    /// (shard, record) for each sample id of the cache.
    index: Vec<(u32, u32)>,
    classes: Option<u32>,
}

fn read_manifest(dir: &Path) -> Result<Manifest, CacheError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(CacheError::io(&path))?;
    parse_manifest(&text).map_err(|message| CacheError::Corrupt { path, message })
}

/// Parses `manifest.json`; shard names must be plain file names inside the cache directory
/// (a crafted manifest must not make a reader map files elsewhere).
pub(crate) fn parse_manifest(text: &str) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
    for shard in &manifest.shards {
        let plain = Path::new(&shard.file)
            .components()
            .map(|c| matches!(c, std::path::Component::Normal(_)))
            .collect::<Vec<_>>()
            == [true];
        if !plain {
            return Err(format!("shard name {:?} is not a file name", shard.file));
        }
    }
    Ok(manifest)
}

fn map_shard(path: &Path) -> Result<Shard, CacheError> {
    let file = std::fs::File::open(path).map_err(CacheError::io(path))?;
    // SAFETY: shards are immutable once renamed into place; nothing writes to a mapped file.
    let map = unsafe { Mmap::map(&file) }.map_err(CacheError::io(path))?;
    let records = parse_table(&map).map_err(|message| CacheError::Corrupt {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(Shard {
        path: path.to_path_buf(),
        map: Arc::new(map),
        records,
    })
}

impl CacheSource {
    pub fn open(dir: &Path, limit: Option<u64>) -> Result<Self, SourceError> {
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
        let mut max_label = -1i32;
        for (s, entry) in manifest.shards.iter().enumerate() {
            let shard = map_shard(&dir.join(&entry.file)).map_err(to_source)?;
            for (r, rec) in shard.records.iter().enumerate() {
                index.push((s as u32, r as u32));
                max_label = max_label.max(rec.label);
            }
            shards.push(shard);
        }
        if let Some(l) = limit {
            index.truncate(l as usize);
        }
        if index.is_empty() {
            return Err(SourceError::Open {
                path: dir.to_path_buf(),
                message: "cache holds no records".into(),
            });
        }
        Ok(CacheSource {
            shards,
            index,
            classes: (max_label >= 0).then_some(max_label as u32 + 1),
        })
    }

    fn record(&self, id: u64) -> (&Shard, &Record) {
        let (s, r) = self.index[id as usize];
        let shard = &self.shards[s as usize];
        (shard, &shard.records[r as usize])
    }
}

impl IndexedSource for CacheSource {
    fn len(&self) -> u64 {
        self.index.len() as u64
    }

    fn read(&self, id: u64) -> Result<Payload, SourceError> {
        let (shard, rec) = self.record(id);
        let range = rec.offset as usize..(rec.offset + rec.len) as usize;
        Ok(Payload::Decoded(Frame {
            width: rec.width,
            height: rec.height,
            pixels: Pixels::Mapped {
                map: shard.map.clone(),
                range,
            },
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
        let shard = match map_shard(&path) {
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
        for (i, rec) in shard.records.iter().enumerate() {
            report.records += 1;
            let bytes = &shard.map[rec.offset as usize..(rec.offset + rec.len) as usize];
            if crc32fast::hash(bytes) != rec.crc {
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
mod tests {
    use super::*;
    use crate::cache::ShardWriter;

    fn frame(seed: u8, w: u32, h: u32) -> Frame {
        Frame::from_rgb(
            w,
            h,
            (0..w * h * 3)
                .map(|i| (i as u8).wrapping_mul(seed))
                .collect(),
        )
    }

    #[test]
    fn round_trip_across_shards_reads_mapped_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::open(dir.path(), 4096).unwrap();
        for i in 0..10u8 {
            w.push(i as u64, Some(i as u32 % 3), frame(i + 1, 20, 10))
                .unwrap();
        }
        let m = w.finish().unwrap();
        assert!(m.shards.len() > 1, "small shard size must split: {m:?}");
        let src = CacheSource::open(dir.path(), None).unwrap();
        assert_eq!(src.len(), 10);
        assert_eq!(src.num_classes(), Some(3));
        for i in 0..10u8 {
            let Payload::Decoded(f) = src.read(i as u64).unwrap() else {
                panic!()
            };
            assert!(matches!(f.pixels, Pixels::Mapped { .. }));
            assert_eq!(f.data(), frame(i + 1, 20, 10).data());
            assert_eq!(src.label(i as u64), Some(i as u32 % 3));
        }
        let report = verify(dir.path()).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.records, 10);
    }

    #[test]
    fn verify_finds_a_flipped_bit_in_any_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::open(dir.path(), 1 << 20).unwrap();
        for i in 0..4u8 {
            w.push(i as u64, None, frame(i + 3, 8, 8)).unwrap();
        }
        w.finish().unwrap();
        let shard = dir.path().join("shard-00000.dsc");
        let mut bytes = std::fs::read(&shard).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0x10;
        std::fs::write(&shard, bytes).unwrap();
        let report = verify(dir.path()).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].contains("record 3") && report.problems[0].contains("checksum"));
    }

    #[test]
    fn an_interrupted_build_resumes_after_the_last_complete_shard() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::open(dir.path(), 4096).unwrap();
        for i in 0..7u8 {
            w.push(i as u64, None, frame(i + 1, 20, 10)).unwrap();
        }
        // Dropped without finish(): a crash. Complete shards are in the manifest, the rest is lost.
        let done = w.manifest().consumed;
        drop(w);
        std::fs::write(dir.path().join("shard-00009.dsc.tmp"), b"half-written").unwrap();
        let w = ShardWriter::open(dir.path(), 4096).unwrap();
        assert_eq!(w.manifest().consumed, done);
        assert!(done > 0 && done < 7, "consumed {done}");
        assert!(!dir.path().join("shard-00009.dsc.tmp").exists());
    }

    /// Arbitrary and mutated manifests: errors, never panics, never a path outside the cache.
    #[test]
    fn mutated_manifests_never_panic_or_escape() {
        let good = br#"{"version":1,"shards":[{"file":"shard-00000.dsc","records":3}],"consumed":3,"complete":true,"skipped":0}"#;
        assert!(parse_manifest(std::str::from_utf8(good).unwrap()).is_ok());
        let escape = String::from_utf8_lossy(good).replace("shard-00000.dsc", "../../etc/passwd");
        assert!(parse_manifest(&escape)
            .unwrap_err()
            .contains("not a file name"));
        let mut rng = crate::rng::Rng::keyed(&[13, 9]);
        for round in 0..5000u64 {
            let bytes = crate::testing::mutate(good, &mut rng, round);
            if let Ok(m) = parse_manifest(&String::from_utf8_lossy(&bytes)) {
                assert!(m.shards.iter().all(|s| !s.file.contains('/')));
            }
        }
    }
}
