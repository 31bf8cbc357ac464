//! The keyframe index of one video file: every frame's presentation timestamp and the keyframe
//! (group of pictures) it belongs to. Random sampling needs it to know how many frames a file
//! has and where to seek; it is built once by demuxing the file (no decoding) and cached on disk,
//! keyed by the file's path, size and modification time.

use std::path::{Path, PathBuf};

use ffmpeg::packet::Ref as _;
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

use super::inputs::{open_input, OpenError};

/// Bumped when the layout or the way it is built changes; older cache files are rebuilt.
const VERSION: u32 = 2;

/// One group of pictures: a keyframe and the frames shown from it up to the next keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gop {
    /// The keyframe's presentation timestamp (stream time base).
    pub key_pts: i64,
    /// The keyframe packet's decoding timestamp (its presentation timestamp when it has
    /// none): demuxers without an index (MPEG-TS) search on decoding timestamps, and seeking
    /// there to the presentation timestamp lands on the packet after the keyframe.
    pub key_dts: i64,
    /// Index (in presentation order) of the GOP's first frame in `FileIndex::pts`.
    pub first: u32,
}

/// What the cache file is keyed by: a change to any of these rebuilds the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey {
    pub path: String,
    pub size: u64,
    pub mtime_ns: u128,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileIndex {
    pub version: u32,
    pub key: FileKey,
    /// The video stream's time base, `num/den` seconds per tick.
    pub time_base: (i32, i32),
    /// Coded size of the stream (the first frames; a file may change size midway).
    pub width: u32,
    pub height: u32,
    /// Presentation timestamps of every frame, sorted, from the first keyframe on.
    pub pts: Vec<i64>,
    /// Keyframes in presentation order; `gops[0].first == 0`.
    pub gops: Vec<Gop>,
}

impl FileIndex {
    pub fn frames(&self) -> usize {
        self.pts.len()
    }

    /// The GOP that frame `i` belongs to.
    pub fn gop_of(&self, i: u32) -> u32 {
        (self.gops.partition_point(|g| g.first <= i) - 1) as u32
    }

    /// Seconds from the first frame to frame `i`.
    pub fn seconds(&self, i: u32) -> f64 {
        let (num, den) = self.time_base;
        (self.pts[i as usize] - self.pts[0]) as f64 * num as f64 / den.max(1) as f64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("no video stream")]
    NoVideoStream,
    #[error("no keyframe with a timestamp (cannot seek)")]
    NoKeyframe,
}

/// Where index files go when `source.index_cache` is not set: `$XDG_CACHE_HOME/dino-stream/
/// video-index`, else `~/.cache/dino-stream/video-index`, else the system temp directory.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("dino-stream").join("video-index")
}

fn file_key(path: &Path) -> Result<FileKey, IndexError> {
    let meta = std::fs::metadata(path)?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let path = std::fs::canonicalize(path)?;
    Ok(FileKey {
        path: path.to_string_lossy().into_owned(),
        size: meta.len(),
        mtime_ns,
    })
}

/// FNV-1a: a stable name for the cache file (the key inside it is compared in full).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `load` found the index in the cache or demuxed the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cached,
    Built,
}

/// The index of `path`, from `cache_dir` when a file there has the same key, else built by
/// demuxing and written there (a failed write only costs a rebuild next time).
pub fn load(path: &Path, cache_dir: &Path) -> Result<(FileIndex, Origin), IndexError> {
    let key = file_key(path)?;
    let cache_file = cache_dir.join(format!(
        "{:016x}.json",
        fnv(&format!("{}|{}|{}", key.path, key.size, key.mtime_ns))
    ));
    if let Ok(text) = std::fs::read(&cache_file) {
        if let Ok(index) = serde_json::from_slice::<FileIndex>(&text) {
            if index.version == VERSION && index.key == key {
                return Ok((index, Origin::Cached));
            }
        }
    }
    let index = build(path, key)?;
    if let Err(e) = write_atomic(&cache_file, &index) {
        tracing::warn!(
            "cannot cache the keyframe index of {} in {}: {e}",
            path.display(),
            cache_dir.display()
        );
    }
    Ok((index, Origin::Built))
}

fn write_atomic(file: &Path, index: &FileIndex) -> std::io::Result<()> {
    let dir = file.parent().expect("cache file has a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        file.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(
        &tmp,
        serde_json::to_vec(index).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, file)
}

/// Demuxes every packet of the best video stream (no decoding): timestamps and key flags.
fn build(path: &Path, key: FileKey) -> Result<FileIndex, IndexError> {
    let mut ictx = open_input(&super::inputs::Input::File(path.to_path_buf()), "file")?;
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or(IndexError::NoVideoStream)?;
    let index = stream.index();
    let tb = stream.time_base();
    let (width, height) = unsafe {
        let par = stream.parameters();
        let p = par.as_ptr();
        ((*p).width.max(0) as u32, (*p).height.max(0) as u32)
    };
    let mut pts = Vec::new();
    let mut keys = Vec::new();
    for (s, packet) in ictx.packets() {
        if s.index() != index {
            continue;
        }
        // Packets the demuxer marks for discarding (edit lists) are never shown.
        let discard = unsafe { (*packet.as_ptr()).flags & ffmpeg::ffi::AV_PKT_FLAG_DISCARD != 0 };
        let Some(t) = packet.pts().or(packet.dts()) else {
            continue;
        };
        if discard {
            continue;
        }
        pts.push(t);
        if packet.is_key() {
            keys.push((t, packet.dts().unwrap_or(t).min(t)));
        }
    }
    from_packets(
        key,
        (tb.numerator(), tb.denominator()),
        width,
        height,
        pts,
        keys,
    )
}

/// The index from packet timestamps (any order) and keyframes' (presentation, seek)
/// timestamps: frames before the first keyframe cannot be reached by seeking and are left out.
pub fn from_packets(
    key: FileKey,
    time_base: (i32, i32),
    width: u32,
    height: u32,
    mut pts: Vec<i64>,
    mut keys: Vec<(i64, i64)>,
) -> Result<FileIndex, IndexError> {
    pts.sort_unstable();
    pts.dedup();
    keys.sort_unstable();
    keys.dedup_by_key(|k| k.0);
    let first_key = keys.first().ok_or(IndexError::NoKeyframe)?.0;
    pts.retain(|&t| t >= first_key);
    let mut gops: Vec<Gop> = Vec::with_capacity(keys.len());
    for (k, key_dts) in keys {
        let first = pts.partition_point(|&t| t < k) as u32;
        match gops.last() {
            Some(g) if g.first == first => {} // a keyframe with no frame of its own
            _ => gops.push(Gop {
                key_pts: k,
                key_dts,
                first,
            }),
        }
    }
    gops.retain(|g| (g.first as usize) < pts.len());
    Ok(FileIndex {
        version: VERSION,
        key,
        time_base,
        width,
        height,
        pts,
        gops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FileKey {
        FileKey {
            path: "x".into(),
            size: 1,
            mtime_ns: 2,
        }
    }

    #[test]
    fn frames_are_grouped_by_the_keyframe_before_them() {
        // Decode order with B-frames: timestamps arrive unsorted.
        let pts = vec![0, 3, 1, 2, 6, 4, 5, 9, 7, 8];
        let keys = vec![(0, -1), (4, 3), (7, 6)];
        let idx = from_packets(key(), (1, 10), 4, 4, pts, keys).unwrap();
        assert_eq!(idx.pts, (0..10).collect::<Vec<_>>());
        assert_eq!(
            idx.gops
                .iter()
                .map(|g| (g.key_pts, g.first))
                .collect::<Vec<_>>(),
            vec![(0, 0), (4, 4), (7, 7)]
        );
        assert_eq!(idx.gop_of(3), 0);
        assert_eq!(idx.gop_of(4), 1);
        assert_eq!(idx.gop_of(9), 2);
        assert!((idx.seconds(5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn frames_before_the_first_keyframe_are_unreachable() {
        let idx = from_packets(key(), (1, 1), 4, 4, vec![0, 1, 2, 3], vec![(2, 2)]).unwrap();
        assert_eq!(idx.pts, vec![2, 3]);
        assert!(from_packets(key(), (1, 1), 4, 4, vec![0, 1], vec![]).is_err());
    }
}
