//! Video frames through ffmpeg-next.
//!
//! - `inputs`: what a path names (file, directory, list file, URL) and how each is opened
//!   (whitelisted protocols and demuxers);
//! - `index`: the per-file keyframe index, cached on disk;
//! - `plan`: an epoch's order over files (random, or sequential), a pure function of
//!   (seed, epoch);
//! - `decoders`: the decoder actors that seek and decode keyframe-aligned units in parallel;
//! - `planned`: a pass by plan (random sampling, and sequential sampling of files);
//! - `sequential`: inputs that include live streams, front to back, then `shuffle`;
//! - `live`: a URL read by its own thread, frames dropped when the pipeline is full, reconnected
//!   with backoff when it drops;
//! - `frames`: decoded pictures to RGB8 at the working size (`max_side`): `planes` (halve,
//!   interleave, one SIMD box resize, then YUV→RGB on the small image) for 8-bit 4:2:0 and 4:4:4,
//!   FFmpeg's scaler for the rest;
//! - `super::video_stats`: per-input counters and their Prometheus collector.

mod decoders;
mod frames;
pub mod index;
pub mod inputs;
mod live;
pub mod plan;
mod planes;
mod planned;
mod sequential;
mod shuffle;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use ffmpeg_next as ffmpeg;

use super::{Pass, PassEnd, SourceError, StreamSource, VideoConfig, VideoSampling};
use crate::frame::Frame;
use index::FileIndex;
use inputs::Input;
use plan::{Order, Sampling};

use super::video_stats as stats;
pub use frames::working_size;
pub use stats::{InputStats, VideoStats};

enum Mode {
    /// Files by plan: random sampling, and sequential sampling when every input is a file.
    Planned {
        files: Vec<PathBuf>,
        indexes: Vec<Arc<FileIndex>>,
        sampling: Sampling,
    },
    /// Sequential sampling of inputs that include live streams (URLs): front to back.
    Sequential { inputs: Vec<Input> },
}

pub struct VideoSource {
    opts: VideoConfig,
    mode: Mode,
    /// Inputs that could not be opened or indexed: reported (skip log) in each pass.
    unreadable: Vec<(String, String)>,
    stats: Arc<VideoStats>,
    corrupt_logged: Mutex<HashSet<String>>,
}

fn init(path: &Path) -> Result<(), SourceError> {
    ffmpeg::init().map_err(|e| SourceError::Open {
        path: path.to_path_buf(),
        message: format!("ffmpeg init: {e}"),
    })?;
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    Ok(())
}

impl VideoSource {
    /// `path` is a video file, a directory of video files (recursive), a list file (`.txt`,
    /// `.list`, `.lst`: one path or URL per line) or a URL FFmpeg can open. Random sampling
    /// indexes every file here (or reads the cached index); a file that cannot be indexed is
    /// skipped and reported by path.
    pub fn open(opts: VideoConfig) -> Result<Self, SourceError> {
        let path = opts.path.as_path();
        init(path)?;
        let err = |message: String| SourceError::Open {
            path: path.to_path_buf(),
            message,
        };
        let inputs = inputs::list(path).map_err(err)?;
        let mut unreadable = Vec::new();
        let streams = inputs.iter().any(|i| matches!(i, Input::Url(_)));
        let mode = if opts.sampling == VideoSampling::Sequential && streams {
            if opts.temporal_pairs {
                return Err(err(
                    "source.temporal_pairs needs seekable files; these inputs include a live stream"
                        .into(),
                ));
            }
            Mode::Sequential { inputs }
        } else {
            let cache = opts
                .index_cache
                .clone()
                .unwrap_or_else(index::default_cache_dir);
            let mut files = Vec::new();
            let mut indexes = Vec::new();
            for input in inputs {
                let file = match input {
                    Input::File(f) => f,
                    Input::Url(u) => {
                        return Err(err(format!(
                            "{u}: random sampling needs seekable files; set source.sampling = \"sequential\" for streams"
                        )))
                    }
                };
                match index::load(&file, &cache) {
                    Ok((idx, _)) if idx.frames() > 0 => {
                        files.push(file);
                        indexes.push(Arc::new(idx));
                    }
                    Ok(_) => unreadable.push((file.display().to_string(), "no frames".into())),
                    Err(e) => unreadable.push((file.display().to_string(), e.to_string())),
                }
            }
            // Sequential sampling reports unreadable files in each pass and goes on; random
            // sampling needs something to draw from.
            if files.is_empty() && opts.sampling == VideoSampling::Random {
                let first = unreadable
                    .first()
                    .map(|(f, e)| format!(": {f}: {e}"))
                    .unwrap_or_default();
                return Err(err(format!(
                    "no readable video among {} inputs{first}",
                    unreadable.len()
                )));
            }
            let order = match opts.sampling {
                VideoSampling::Random => Order::Random,
                VideoSampling::Sequential => Order::Sequential,
            };
            let shuffle_buffer = match order {
                Order::Random => opts.shuffle_buffer,
                Order::Sequential => {
                    opts.shuffle_buffer
                        .min(bytes_cap(opts.shuffle_bytes, opts.max_side, &indexes))
                }
            };
            Mode::Planned {
                files,
                indexes,
                sampling: Sampling {
                    order,
                    stride: opts.stride.max(1),
                    limit: opts.limit,
                    start_seconds: opts.start_seconds,
                    end_seconds: opts.end_seconds,
                    shuffle_buffer: shuffle_buffer.max(1),
                    pair_seconds: opts.temporal_pairs.then_some(opts.pair_seconds),
                },
            }
        };
        Ok(VideoSource {
            opts,
            mode,
            unreadable,
            stats: Arc::new(VideoStats::default()),
            corrupt_logged: Mutex::new(HashSet::new()),
        })
    }

    pub fn stats(&self) -> Arc<VideoStats> {
        self.stats.clone()
    }

    /// Files read by plan, in index order (empty when the inputs include live streams).
    pub fn files(&self) -> &[PathBuf] {
        match &self.mode {
            Mode::Planned { files, .. } => files,
            Mode::Sequential { .. } => &[],
        }
    }

    /// The sampling a planned source uses (the shuffle buffer in frames, after
    /// `shuffle_bytes`), or `None` when the inputs include live streams.
    pub fn sampling(&self) -> Option<&Sampling> {
        match &self.mode {
            Mode::Planned { sampling, .. } => Some(sampling),
            Mode::Sequential { .. } => None,
        }
    }

    /// Where a pass of `epoch` resumed at `position` starts decoding, as (file, seconds from
    /// its first frame): what a sequential resume seeks to (and logs).
    pub fn resume_point(&self, seed: u64, epoch: u64, position: u64) -> Option<(PathBuf, f64)> {
        let Mode::Planned {
            files,
            indexes,
            sampling,
        } = &self.mode
        else {
            return None;
        };
        let refs: Vec<&FileIndex> = indexes.iter().map(|i| i.as_ref()).collect();
        let p = plan::plan(&refs, sampling, seed, epoch);
        plan::resume_point(&p, position).map(|(f, frame)| {
            (
                files[f as usize].clone(),
                indexes[f as usize].seconds(frame),
            )
        })
    }

    fn decoders(&self) -> usize {
        match self.opts.decoders {
            0 => crate::pipeline::worker_count(0),
            n => n,
        }
    }

    fn log_corrupt(&self, before: u64, what: &str) {
        let now = self.stats.corrupt_packets.load(Ordering::Relaxed);
        if now > before
            && self
                .corrupt_logged
                .lock()
                .map(|mut s| s.insert(what.to_string()))
                .unwrap_or(false)
        {
            tracing::warn!(
                "{what}: {} corrupt packet(s) skipped; decoding went on",
                now - before
            );
        }
    }
}

/// The largest frame the decoders hand back: `max_side`² x 3 bytes, or with `max_side = 0` the
/// largest indexed file's size.
fn frame_bytes(max_side: u32, indexes: &[Arc<FileIndex>]) -> u64 {
    if max_side > 0 {
        max_side as u64 * max_side as u64 * 3
    } else {
        indexes
            .iter()
            .map(|i| i.width as u64 * i.height as u64 * 3)
            .max()
            .unwrap_or(0)
    }
}

/// The shuffle buffer's frame count that `bytes` allows (0: no bound): a frame is at most
/// `max_side`² x 3 bytes, or with `max_side = 0` the largest indexed file's size (a file whose
/// size grows midway may exceed this).
fn bytes_cap(bytes: u64, max_side: u32, indexes: &[Arc<FileIndex>]) -> usize {
    let frame = frame_bytes(max_side, indexes);
    if bytes == 0 || frame == 0 {
        return usize::MAX;
    }
    (bytes / frame).max(1) as usize
}

impl StreamSource for VideoSource {
    fn decoded_pictures(&self) -> Option<u64> {
        Some(self.stats.decoded.load(Ordering::Relaxed))
    }

    fn register_metrics(&self, registry: &prometheus::Registry) {
        if let Err(e) = registry.register(Box::new(stats::VideoCollector::new(self.stats.clone())))
        {
            tracing::debug!("video metrics already registered: {e}");
        }
    }

    fn epoch_len(&self) -> Option<u64> {
        match &self.mode {
            Mode::Planned {
                indexes, sampling, ..
            } => {
                let refs: Vec<&FileIndex> = indexes.iter().map(|i| i.as_ref()).collect();
                Some(plan::epoch_len(&refs, sampling))
            }
            Mode::Sequential { .. } => None,
        }
    }

    fn run_pass(
        &mut self,
        pass: &Pass,
        emit: &mut dyn FnMut(u64, Frame) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> PassEnd {
        // A temporal pair's partner is decoded but not handed on here.
        self.run_pass_pairs(pass, &mut |p, frame, _| emit(p, frame), skip)
    }

    fn run_pass_pairs(
        &mut self,
        pass: &Pass,
        emit: &mut dyn FnMut(u64, Frame, Option<Frame>) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> PassEnd {
        for (what, why) in &self.unreadable {
            skip(what, why);
        }
        let before = self.stats.corrupt_packets.load(Ordering::Relaxed);
        // A planned pass counts the whole corpus as one input, under the configured path.
        let corpus = matches!(self.mode, Mode::Planned { .. }).then(|| {
            self.stats.input_counting(
                &self.opts.path.display().to_string(),
                false,
                self.stats.decoded.clone(),
            )
        });
        let end = match &self.mode {
            Mode::Planned {
                files,
                indexes,
                sampling,
            } => planned::PlannedPass {
                indexes,
                files,
                sampling,
                decoders: self.decoders(),
                threads: self.opts.threads,
                max_side: self.opts.max_side,
                frame_bytes: frame_bytes(self.opts.max_side, indexes),
                ahead_bytes: self.opts.shuffle_bytes,
                decoded: self.stats.decoded.clone(),
                corrupt_packets: &self.stats.corrupt_packets,
            }
            .run(pass, emit, skip),
            Mode::Sequential { inputs } => sequential::SequentialPass {
                inputs,
                cfg: &self.opts,
                stats: &self.stats,
            }
            .run(pass, &mut |p, frame| emit(p, frame, None), skip),
        };
        if let Some(corpus) = corpus {
            let added = self.stats.corrupt_packets.load(Ordering::Relaxed) - before;
            corpus.corrupt.fetch_add(added, Ordering::Relaxed);
        }
        let what = match &self.mode {
            Mode::Planned { files, .. } if files.len() == 1 => files[0].display().to_string(),
            Mode::Sequential { inputs } if inputs.len() == 1 => inputs[0].describe(),
            _ => "the video source".to_string(),
        };
        self.log_corrupt(before, &what);
        end
    }
}
