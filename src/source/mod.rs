//! Sources: where samples come from, in a deterministic order.
//!
//! An indexed source (image folder, IDX files, synthetic, shard cache) can read any sample by
//! id; its epoch order is a seeded shuffle, a pure function of (seed, epoch), so the position in
//! that order is the resume cursor. A stream source (video) yields frames in file order; its
//! position is the index of the emitted frame within the pass.

pub mod braces;
mod idx;
mod image_folder;
mod synthetic;
#[cfg(feature = "video")]
pub mod video;
mod video_config;
pub mod video_stats;
pub mod webdataset;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::frame::Frame;
use crate::rng::Rng;

pub use idx::IdxSource;
pub use image_folder::ImageFolderSource;
pub use synthetic::SyntheticSource;
#[cfg(feature = "video")]
pub use video::VideoSource;
pub use video_config::{VideoConfig, VideoSampling};
pub use webdataset::WebDatasetSource;

/// `[source]`: a closed set of kinds, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Images (JPEG, PNG, WebP, BMP, TIFF) under `path`, symbolic links followed; with
    /// `root/class/*.jpg` (ImageNet layout) the class directories give labels.
    ImageFolder {
        /// Directory to read (video: a file, a directory of files, or a stream URL).
        path: PathBuf,
        /// Use at most this many samples (the first ones in sorted path order).
        #[serde(default)]
        limit: Option<u64>,
    },
    /// IDX files of the MNIST family (`{split}-images-idx3-ubyte[.gz]` and labels) in `path`.
    Idx {
        /// Directory to read (video: a file, a directory of files, or a stream URL).
        path: PathBuf,
        /// `train` or `test` (the `t10k` files).
        #[serde(default)]
        split: IdxSplit,
        /// Use at most this many samples.
        #[serde(default)]
        limit: Option<u64>,
    },
    /// Video files (a file, a directory searched recursively, or a list file of paths and URLs)
    /// or a stream URL. `random` sampling draws frames over the whole corpus in a seeded order
    /// and decodes them in parallel from the keyframe before each; `sequential` reads inputs
    /// front to back; a URL is a live stream (reconnected when it drops).
    Video(VideoConfig),
    /// Generated images with `classes` labels: for tests and benchmarks.
    Synthetic {
        /// Images per epoch.
        #[serde(default = "default_synthetic_count")]
        count: u64,
        /// Image width in pixels.
        #[serde(default = "default_synthetic_side")]
        width: u32,
        /// Image height in pixels.
        #[serde(default = "default_synthetic_side")]
        height: u32,
        /// Number of classes (labels) generated.
        #[serde(default = "default_synthetic_classes")]
        classes: u32,
    },
    /// WebDataset tar shards, read in place (local files only, no URLs): each key's
    /// `.jpg`/`.jpeg`/`.png`/`.webp` member is a sample, its `.cls` (or `.json`) the label.
    Webdataset {
        /// Shard paths: one string or a list, each a brace pattern such as
        /// `data/shard-{000000..000099}.tar` or `{train,extra}-{0..9}.tar` (local files only).
        #[serde(deserialize_with = "webdataset::one_or_many")]
        urls: Vec<String>,
        /// `.json` members: the key holding the integer class (a `.cls` member, plain integer
        /// text, wins when a sample has both).
        #[serde(default = "default_label_key")]
        label_key: String,
        /// Use at most this many samples.
        #[serde(default)]
        limit: Option<u64>,
    },
    /// A shard cache made by `dino-stream cache build`.
    Cache {
        /// Directory to read (video: a file, a directory of files, or a stream URL).
        path: PathBuf,
        /// Use at most this many samples.
        #[serde(default)]
        limit: Option<u64>,
        /// Cache: `random` (a seeded permutation of all records) or `quasi_random` (shards,
        /// windows of `window` records within them, and records within blocks of `lanes`
        /// windows shuffled per epoch: reads stay within a few windows at a time, so a cache
        /// larger than the page cache does not thrash).
        #[serde(default)]
        order: crate::cache::ReadOrder,
        /// Cache, `quasi_random`: consecutive records read together.
        #[serde(default = "default_cache_window")]
        window: u64,
        /// Cache, `quasi_random`: windows (from different places of the cache) mixed at a time.
        #[serde(default = "default_cache_lanes")]
        lanes: u64,
        /// Cache: check each record's CRC32 the first time it is read in this process (a
        /// mismatch skips the sample and counts it).
        #[serde(default)]
        verify: bool,
        /// Cache: `pread` (copy each record into its own buffer: a shard truncated while in use
        /// is a skipped sample) or `mmap` (no copy of raw records, but a shard truncated while
        /// mapped kills the process with SIGBUS).
        #[serde(default)]
        io: crate::cache::ReadIo,
    },
}

fn default_label_key() -> String {
    "label".into()
}
fn default_cache_window() -> u64 {
    64
}
fn default_cache_lanes() -> u64 {
    8
}
fn default_synthetic_count() -> u64 {
    1024
}
fn default_synthetic_side() -> u32 {
    64
}
fn default_synthetic_classes() -> u32 {
    4
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdxSplit {
    #[default]
    Train,
    /// The `t10k` files.
    Test,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Synthetic {
            count: default_synthetic_count(),
            width: default_synthetic_side(),
            height: default_synthetic_side(),
            classes: default_synthetic_classes(),
        }
    }
}

impl SourceConfig {
    pub fn kind_name(&self) -> &'static str {
        match self {
            SourceConfig::ImageFolder { .. } => "image_folder",
            SourceConfig::Idx { .. } => "idx",
            SourceConfig::Video(_) => "video",
            SourceConfig::Synthetic { .. } => "synthetic",
            SourceConfig::Cache { .. } => "cache",
            SourceConfig::Webdataset { .. } => "webdataset",
        }
    }

    /// The key naming what the source reads (for problems found when opening it).
    pub fn path_key(&self) -> &'static str {
        match self {
            SourceConfig::Webdataset { .. } => "urls",
            _ => "path",
        }
    }

    /// Whether an epoch's length is known before reading it.
    pub fn has_known_length(&self) -> bool {
        match self {
            SourceConfig::Video(v) => v.has_known_length(),
            _ => true,
        }
    }

    /// Static checks (paths that must exist are checked when opened, with the file named).
    pub fn validate(&self, key: &str, problems: &mut Problems) {
        match self {
            SourceConfig::Video(v) => v.validate(key, problems),
            SourceConfig::Synthetic {
                count,
                width,
                height,
                classes,
            } => {
                problems.check(*count > 0, &format!("{key}.count"), || "must be > 0".into());
                problems.check(*width > 0 && *height > 0, &format!("{key}.width"), || {
                    format!("width and height must be > 0, got {width}x{height}")
                });
                problems.check(*classes > 0, &format!("{key}.classes"), || {
                    "must be > 0".into()
                });
            }
            SourceConfig::Webdataset {
                urls, label_key, ..
            } => {
                problems.check(!urls.is_empty(), &format!("{key}.urls"), || {
                    "must name at least one shard".into()
                });
                for url in urls {
                    let local = !url.contains("://") && !url.starts_with("pipe:");
                    problems.check(local, &format!("{key}.urls"), || {
                        format!("only local paths are read, got {url:?}")
                    });
                    if let Err(e) = braces::expand(url) {
                        problems.push(format!("{key}.urls"), e.to_string());
                    }
                }
                problems.check(!label_key.is_empty(), &format!("{key}.label_key"), || {
                    "must not be empty".into()
                });
            }
            SourceConfig::Cache {
                path,
                window,
                lanes,
                ..
            } => {
                problems.check(!path.as_os_str().is_empty(), &format!("{key}.path"), || {
                    "must not be empty".into()
                });
                problems.check(*window > 0, &format!("{key}.window"), || {
                    "must be > 0".into()
                });
                problems.check(*lanes > 0, &format!("{key}.lanes"), || "must be > 0".into());
            }
            SourceConfig::ImageFolder { path, .. } | SourceConfig::Idx { path, .. } => problems
                .check(!path.as_os_str().is_empty(), &format!("{key}.path"), || {
                    "must not be empty".into()
                }),
        }
    }

    /// Opens the source: lists files, parses headers, maps shards.
    pub fn open(&self) -> Result<OpenedSource, SourceError> {
        Ok(match self {
            SourceConfig::ImageFolder { path, limit } => {
                OpenedSource::Indexed(Arc::new(ImageFolderSource::open(path, *limit)?))
            }
            SourceConfig::Idx { path, split, limit } => {
                OpenedSource::Indexed(Arc::new(IdxSource::open(path, *split, *limit)?))
            }
            SourceConfig::Synthetic {
                count,
                width,
                height,
                classes,
            } => OpenedSource::Indexed(Arc::new(SyntheticSource::new(
                *count, *width, *height, *classes,
            ))),
            SourceConfig::Cache {
                path,
                limit,
                order,
                window,
                lanes,
                verify,
                io,
            } => {
                let options = crate::cache::ReadOptions {
                    limit: *limit,
                    order: *order,
                    window: *window,
                    lanes: *lanes,
                    verify: *verify,
                    io: *io,
                };
                OpenedSource::Indexed(Arc::new(crate::cache::CacheSource::open_with(
                    path, &options,
                )?))
            }
            SourceConfig::Webdataset {
                urls,
                label_key,
                limit,
            } => OpenedSource::Indexed(Arc::new(WebDatasetSource::open(
                &webdataset::WebDatasetOptions {
                    urls: urls.clone(),
                    limit: *limit,
                    label_key: label_key.clone(),
                },
            )?)),
            SourceConfig::Video(v) => open_video(v)?,
        })
    }
}

#[cfg(feature = "video")]
fn open_video(cfg: &VideoConfig) -> Result<OpenedSource, SourceError> {
    Ok(OpenedSource::Stream(Box::new(VideoSource::open(
        cfg.clone(),
    )?)))
}

/// Builds without the `video` feature (no FFmpeg linked) refuse video sources by name.
#[cfg(not(feature = "video"))]
fn open_video(cfg: &VideoConfig) -> Result<OpenedSource, SourceError> {
    Err(SourceError::Open {
        path: cfg.path.clone(),
        message: "this dino-stream was built without video support (cargo feature `video`)".into(),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: String, message: String },
}

/// A sample's content as the source has it.
pub enum Payload {
    /// Encoded still image bytes, for the decode pool.
    Encoded(Vec<u8>),
    /// Pixels the source already has (IDX, synthetic, cache, video frames).
    Decoded(Frame),
}

/// A source that can read any sample by id.
pub trait IndexedSource: Send + Sync {
    /// Samples per epoch.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads sample `id` (0 ≤ id < len).
    fn read(&self, id: u64) -> Result<Payload, SourceError>;
    /// The sample's class, when the source has labels.
    fn label(&self, id: u64) -> Option<u32>;
    /// Number of classes, when labelled.
    fn num_classes(&self) -> Option<u32>;
    /// The name of class `label`. k-NN matches the bank's and the queries' classes by name, so
    /// two folders need not hold the same set of classes to be compared. Sources whose labels
    /// are plain numbers (IDX, synthetic, cache) use the number.
    fn class_name(&self, label: u32) -> String {
        label.to_string()
    }
    /// A name for the sample in logs (a path, or `file#index`).
    fn describe(&self, id: u64) -> String;
    /// The ids of one epoch in reading order: a pure function of (seed, epoch), the same on
    /// every rank. Most sources use [`epoch_order`]; a shard cache may read in a page-cache
    /// friendly order (`quasi_random`).
    fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<u64> {
        epoch_order(seed, epoch, self.len())
    }
    /// A tighter bound than `decode.channel_bytes` on the bytes the source thread may read
    /// ahead, for sources whose reads are copies into fresh buffers (a `pread` shard cache).
    fn read_ahead_bytes(&self) -> Option<u64> {
        None
    }
}

/// What one pass of a stream source needs from the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub seed: u64,
    pub epoch: u64,
    /// The position to start from (the resume cursor's, else 0).
    pub start: u64,
    /// `decode.max_pixels`: larger frames are skipped.
    pub max_pixels: u64,
}

/// A source that emits frames itself (video): `run_pass` emits items until `emit` returns false
/// or the pass ends, returning whether it ended naturally.
pub trait StreamSource: Send {
    /// Frames per pass when known before reading (random video sampling), else `None`.
    fn epoch_len(&self) -> Option<u64> {
        None
    }

    /// Pictures decoded so far, drawn or not (video), for benchmarks: with random sampling
    /// the ratio to emitted frames is the seek overhead.
    fn decoded_pictures(&self) -> Option<u64> {
        None
    }

    /// Adds the source's own metrics (video: per-input counters) to the run's registry.
    fn register_metrics(&self, _registry: &prometheus::Registry) {}

    /// Reads one pass (epoch) from position `pass.start`, calling `emit(position, frame)` for
    /// each emitted frame. Bad files are reported through `skip(description, error)` and passed
    /// over.
    fn run_pass(
        &mut self,
        pass: &Pass,
        emit: &mut dyn FnMut(u64, Frame) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> PassEnd;

    /// `run_pass` where a sample may carry a second picture, `emit(position, frame, partner)`:
    /// video temporal pairs (`source.temporal_pairs`), whose augment takes one global crop from
    /// each. Sources without pairs emit `run_pass`'s frames alone.
    fn run_pass_pairs(
        &mut self,
        pass: &Pass,
        emit: &mut dyn FnMut(u64, Frame, Option<Frame>) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> PassEnd {
        self.run_pass(pass, &mut |p, frame| emit(p, frame, None), skip)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassEnd {
    /// The pass ended; the next epoch may start.
    Finished,
    /// The consumer stopped.
    Stopped,
}

pub enum OpenedSource {
    Indexed(Arc<dyn IndexedSource>),
    Stream(Box<dyn StreamSource>),
}

impl OpenedSource {
    /// Samples per epoch when known (sequential video: `None`).
    pub fn epoch_len(&self) -> Option<u64> {
        match self {
            OpenedSource::Indexed(s) => Some(s.len()),
            OpenedSource::Stream(s) => s.epoch_len(),
        }
    }
}

/// The order of an epoch: a seeded permutation of `0..n`, the same on every machine.
pub fn epoch_order(seed: u64, epoch: u64, n: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..n).collect();
    Rng::keyed(&[seed, epoch, 0x5EED_0DE5]).shuffle(&mut order);
    order
}

/// Converts 8-bit grayscale to packed RGB.
pub fn gray_to_rgb(gray: &[u8]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(gray.len() * 3);
    for &g in gray {
        rgb.extend_from_slice(&[g, g, g]);
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(1, 0, 100);
        assert_eq!(a, epoch_order(1, 0, 100));
        assert_ne!(a, epoch_order(1, 1, 100));
        assert_ne!(a, epoch_order(2, 0, 100));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn only_live_streams_and_lists_leave_a_video_epoch_unknown_up_front() {
        let video = |path: &str, sampling| {
            SourceConfig::Video(VideoConfig {
                sampling,
                ..VideoConfig::new(path)
            })
            .has_known_length()
        };
        use VideoSampling::{Random, Sequential};
        assert!(
            video("/data/walks", Sequential),
            "a directory of files is planned"
        );
        assert!(video("/data/walk.mp4", Sequential));
        assert!(video("/data/walk.mp4", Random));
        assert!(!video("rtsp://camera/stream", Sequential));
        assert!(
            !video("/data/inputs.txt", Sequential),
            "a list may name a URL"
        );
        assert!(video("/data/inputs.txt", Random));
    }
}
