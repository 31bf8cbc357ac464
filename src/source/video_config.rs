//! `[source]` of type `video`: one struct, read from the configuration and handed as is to the
//! video source (built with or without the `video` feature, so a configuration validates either
//! way).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// How a video source orders frames.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum VideoSampling {
    /// Frames drawn over the whole corpus in a seeded order, decoded by seeking.
    #[default]
    Random,
    /// Inputs front to back (streams, or files read in order).
    Sequential,
}

/// The video source's keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    /// Directory to read (video: a file, a directory of files, or a stream URL).
    pub path: PathBuf,
    /// Emit every `stride`-th frame.
    #[serde(default = "default_stride")]
    pub stride: u32,
    /// Stop a pass after this many emitted frames.
    #[serde(default)]
    pub limit: Option<u64>,
    /// `random` (frames drawn uniformly over the corpus, in an order that is a pure function
    /// of seed and epoch; the epoch length is known, so `train.steps_per_epoch` may be left
    /// out; with `limit`, that many frames are drawn per epoch) or `sequential` (file order,
    /// then the shuffle buffer; files are decoded in parallel and resumed by seeking, and their
    /// epoch length is known too; live streams, and list files, which may name one, are read
    /// as they come and need `train.steps_per_epoch`).
    #[serde(default)]
    pub sampling: VideoSampling,
    /// Files: only frames in `[start_seconds, end_seconds)` from each file's start.
    #[serde(default)]
    pub start_seconds: Option<f64>,
    /// Files: see `start_seconds`.
    #[serde(default)]
    pub end_seconds: Option<f64>,
    /// The shuffle buffer in frames: frames in plan (random) or file (sequential) order go in,
    /// each new one pushes out one drawn at random (seeded by seed and epoch); 1 keeps that
    /// order. Decoded frames held: about `shuffle_buffer` x `max_side`² x 3 bytes, plus the
    /// decoders' units in flight (docs/ARCHITECTURE.md).
    #[serde(default = "default_shuffle_buffer")]
    pub shuffle_buffer: usize,
    /// Sequential sampling: the shuffle buffer's bound in bytes as well (0: frames only); for
    /// files it caps the buffer at `shuffle_bytes / (max_side² x 3)` frames (`max_side` 0: the
    /// largest file's frame size). Files in either sampling: the bound, too, on the frames the
    /// decoders hold ahead (fewer units in flight when GOPs are long; at least one).
    #[serde(default = "default_shuffle_bytes")]
    pub shuffle_bytes: u64,
    /// Files (random or sequential sampling): decoder threads, each decoding keyframe-aligned
    /// units (0: one per core).
    #[serde(default)]
    pub decoders: usize,
    /// FFmpeg's own threads inside each decoder (1: none; 0: FFmpeg picks).
    #[serde(default = "default_ffmpeg_threads")]
    pub threads: u32,
    /// Frames are scaled in FFmpeg's scaler so that their longer side is at most this
    /// (never enlarged; 0 keeps the full size).
    #[serde(default = "default_max_side")]
    pub max_side: u32,
    /// Files: where keyframe indexes are cached, keyed by path, size and mtime
    /// (unset: `$XDG_CACHE_HOME/dino-stream/video-index` or `~/.cache/...`).
    #[serde(default)]
    pub index_cache: Option<PathBuf>,
    /// Files only: each sample is two frames of one file `pair_seconds` apart; its first global
    /// crop comes from one, its second from the other, and each local crop from one of the two
    /// (drawn). Both are decoded by the unit that decodes the sample's frame.
    #[serde(default)]
    pub temporal_pairs: bool,
    /// Temporal pairs: `[min, max]` seconds between a sample's two frames (the partner is drawn
    /// per sample among the file's frames that far later or earlier).
    #[serde(default = "default_pair_seconds")]
    pub pair_seconds: [f64; 2],
    /// Live streams (URLs): FFmpeg protocols they may use, comma-separated (local files are
    /// always opened with `file` alone). `file` is left out so that a remote playlist cannot
    /// name local files.
    #[serde(default = "default_url_protocols")]
    pub url_protocols: String,
    /// Live streams: decoded frames queued between the network reader and the pipeline; when
    /// the queue is full, new frames are dropped (counted) so the reader never stalls.
    #[serde(default = "default_live_buffer")]
    pub live_buffer: usize,
    /// Live streams: seconds without data after which the stream counts as dropped.
    #[serde(default = "default_live_timeout")]
    pub live_timeout_seconds: f64,
    /// Live streams: the first wait before reconnecting a dropped stream, doubled after each
    /// failed attempt up to `reconnect_max_seconds`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_seconds: f64,
    /// Live streams: the longest wait between reconnection attempts.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_seconds: f64,
    /// Live streams: failed attempts in a row after which the stream is given up
    /// (0: never give up).
    #[serde(default)]
    pub reconnect_attempts: u32,
}

fn default_stride() -> u32 {
    1
}
fn default_shuffle_buffer() -> usize {
    512
}
fn default_shuffle_bytes() -> u64 {
    256 << 20
}
fn default_ffmpeg_threads() -> u32 {
    1
}
fn default_max_side() -> u32 {
    512
}
fn default_pair_seconds() -> [f64; 2] {
    [0.25, 1.0]
}
fn default_url_protocols() -> String {
    "http,https,tcp,tls,udp,rtp,rtsp,srt,pipe,crypto,data".into()
}
fn default_live_buffer() -> usize {
    16
}
fn default_live_timeout() -> f64 {
    10.0
}
fn default_reconnect_min() -> f64 {
    0.5
}
fn default_reconnect_max() -> f64 {
    30.0
}

/// Extensions of a list file (one path or URL per line).
pub(crate) const LIST_EXTENSIONS: &[&str] = &["txt", "list", "lst"];

/// Whether `path`'s extension is one of `list` (any case).
pub(crate) fn has_extension(path: &std::path::Path, list: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| list.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether `text` names a stream FFmpeg opens by protocol rather than a local path.
pub fn is_url(text: &str) -> bool {
    text.contains("://") || text.starts_with("pipe:") || text == "-"
}

impl VideoConfig {
    /// Whether an epoch's length is known before reading it: files (a file or a directory) are
    /// planned from their keyframe indexes in either sampling; a URL is a live stream, and a list
    /// file may name one, so sequential sampling of those has no length up front.
    pub fn has_known_length(&self) -> bool {
        self.sampling == VideoSampling::Random
            || !(is_url(&self.path.to_string_lossy()) || has_extension(&self.path, LIST_EXTENSIONS))
    }

    /// The defaults for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        VideoConfig {
            path: path.into(),
            stride: default_stride(),
            limit: None,
            sampling: VideoSampling::default(),
            start_seconds: None,
            end_seconds: None,
            shuffle_buffer: default_shuffle_buffer(),
            shuffle_bytes: default_shuffle_bytes(),
            decoders: 0,
            threads: default_ffmpeg_threads(),
            max_side: default_max_side(),
            index_cache: None,
            temporal_pairs: false,
            pair_seconds: default_pair_seconds(),
            url_protocols: default_url_protocols(),
            live_buffer: default_live_buffer(),
            live_timeout_seconds: default_live_timeout(),
            reconnect_min_seconds: default_reconnect_min(),
            reconnect_max_seconds: default_reconnect_max(),
            reconnect_attempts: 0,
        }
    }

    pub fn validate(&self, key: &str, problems: &mut Problems) {
        let k = |name: &str| format!("{key}.{name}");
        problems.check(self.stride > 0, &k("stride"), || "must be > 0".into());
        problems.check(self.shuffle_buffer > 0, &k("shuffle_buffer"), || {
            "must be > 0".into()
        });
        problems.check(self.live_buffer > 0, &k("live_buffer"), || {
            "must be > 0".into()
        });
        for (name, v) in [
            ("start_seconds", self.start_seconds),
            ("end_seconds", self.end_seconds),
        ] {
            problems.check(
                v.is_none_or(|t| t.is_finite() && t >= 0.0),
                &k(name),
                || format!("must be a number of seconds >= 0, got {v:?}"),
            );
        }
        if let (Some(a), Some(b)) = (self.start_seconds, self.end_seconds) {
            problems.check(a < b, &k("end_seconds"), || {
                format!("must be after start_seconds = {a}, got {b}")
            });
        }
        for (name, v) in [
            ("live_timeout_seconds", self.live_timeout_seconds),
            ("reconnect_min_seconds", self.reconnect_min_seconds),
            ("reconnect_max_seconds", self.reconnect_max_seconds),
        ] {
            problems.check(v.is_finite() && v > 0.0, &k(name), || {
                format!("must be a number of seconds > 0, got {v}")
            });
        }
        problems.check(
            self.reconnect_min_seconds <= self.reconnect_max_seconds,
            &k("reconnect_max_seconds"),
            || {
                format!(
                    "must be >= reconnect_min_seconds = {}, got {}",
                    self.reconnect_min_seconds, self.reconnect_max_seconds
                )
            },
        );
        problems.check(
            !self.url_protocols.trim().is_empty()
                && self.url_protocols.split(',').all(|p| {
                    !p.trim().is_empty()
                        && p.trim()
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_')
                }),
            &k("url_protocols"),
            || {
                format!(
                    "must be comma-separated protocol names, got {:?}",
                    self.url_protocols
                )
            },
        );
        let text = self.path.to_string_lossy();
        problems.check(
            self.sampling == VideoSampling::Sequential || !is_url(&text),
            &k("sampling"),
            || format!("\"random\" needs seekable files; {text} is a stream: use \"sequential\""),
        );
        problems.interval(&k("pair_seconds"), self.pair_seconds, 0.0, 86400.0);
        problems.check(
            !(self.temporal_pairs && is_url(&text)),
            &k("temporal_pairs"),
            || format!("needs seekable files; {text} is a live stream"),
        );
    }
}
