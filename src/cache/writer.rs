//! Writing shards: buffer records up to the shard size, then write header, table and records to
//! a temporary file, fsync, rename, fsync the directory, and only then list the shard in the
//! manifest.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::encoding::Encoded;
use super::format::{Record, RecordKind, ShardHeader, ENTRY_LEN, FORMAT_VERSION, HEADER_LEN};
use super::reader::parse_manifest;
use super::{sync_dir, BuildSettings, CacheError, Manifest, ManifestShard, MANIFEST};

/// Accumulates records for one shard at a time and commits whole shards.
pub struct ShardWriter {
    dir: PathBuf,
    shard_bytes: u64,
    manifest: Manifest,
    pending: Vec<(Record, Vec<u8>)>,
    pending_bytes: u64,
    /// Samples consumed (written or skipped) since the last committed shard.
    pending_consumed: u64,
    pending_skipped: u64,
}

impl ShardWriter {
    /// Opens `dir`, resuming after the shards its manifest lists (stray temporary files from an
    /// interrupted build are removed). A cache built with other settings or from another source
    /// is refused, naming what differs.
    pub fn open(dir: &Path, settings: &BuildSettings) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(CacheError::io(dir))?;
        let manifest_path = dir.join(MANIFEST);
        let manifest = if manifest_path.exists() {
            let text =
                std::fs::read_to_string(&manifest_path).map_err(CacheError::io(&manifest_path))?;
            let manifest = parse_manifest(&text).map_err(|message| CacheError::Corrupt {
                path: manifest_path.clone(),
                message,
            })?;
            if let Some(diff) = differences(manifest.settings.as_ref(), settings) {
                return Err(CacheError::Corrupt {
                    path: manifest_path,
                    message: format!(
                        "this cache was built with other settings ({diff}); build into a new \
                         directory, or delete this one to rebuild it"
                    ),
                });
            }
            manifest
        } else {
            Manifest {
                version: FORMAT_VERSION,
                settings: Some(settings.clone()),
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
            shard_bytes: settings.shard_bytes,
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

    /// Adds one encoded record (with its source id and label).
    pub fn push(&mut self, id: u64, label: Option<u32>, rec: Encoded) -> Result<(), CacheError> {
        let len = rec.bytes.len() as u64;
        if !self.pending.is_empty() && self.pending_bytes + len > self.shard_bytes {
            self.commit_shard()?;
        }
        let record = Record {
            offset: 0,
            len,
            width: rec.width,
            height: rec.height,
            label: label.map_or(-1, |l| l as i32),
            crc: crc32fast::hash(&rec.bytes),
            id,
            kind: rec.kind,
        };
        self.pending.push((record, rec.bytes));
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
            for (_, bytes) in &self.pending {
                w.write_all(bytes).map_err(CacheError::io(&tmp))?;
            }
            let file = w.into_inner().map_err(|e| CacheError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(CacheError::io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(CacheError::io(&path))?;
        sync_dir(&self.dir)?;
        self.manifest.shards.push(ManifestShard {
            file: name,
            records: self.pending.len() as u64,
            bytes: offset,
            jpeg: self
                .pending
                .iter()
                .filter(|(r, _)| r.kind == RecordKind::Jpeg)
                .count() as u64,
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
        std::fs::rename(&tmp, &path).map_err(CacheError::io(&path))?;
        sync_dir(&self.dir)
    }

    /// Commits what is pending and marks the cache complete.
    pub fn finish(mut self) -> Result<Manifest, CacheError> {
        self.commit_shard()?;
        self.manifest.complete = true;
        self.write_manifest()?;
        Ok(self.manifest)
    }
}

/// What differs between a cache's recorded settings and a new build's, as `key: old -> new`.
fn differences(old: Option<&BuildSettings>, new: &BuildSettings) -> Option<String> {
    let Some(old) = old else {
        return Some("its manifest records no settings".into());
    };
    if old == new {
        return None;
    }
    let flat = |s: &BuildSettings| {
        let mut out = Vec::new();
        flatten(
            "",
            &serde_json::to_value(s).expect("settings serialise"),
            &mut out,
        );
        out
    };
    let (a, b) = (flat(old), flat(new));
    let mut diffs: Vec<String> = b
        .iter()
        .filter_map(|(k, v)| {
            let was = a.iter().find(|(ka, _)| ka == k).map(|(_, v)| v.as_str());
            (was != Some(v.as_str())).then(|| format!("{k}: {} -> {v}", was.unwrap_or("unset")))
        })
        .collect();
    diffs.extend(
        a.iter()
            .filter(|(k, _)| !b.iter().any(|(kb, _)| kb == k))
            .map(|(k, v)| format!("{k}: {v} -> unset")),
    );
    Some(diffs.join(", "))
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}
