//! Video frames through ffmpeg-next.
//!
//! - `inputs`: what a path names (file, directory, list file, URL) and how each is opened
//!   (whitelisted protocols and demuxers);
//! - `index`: the per-file keyframe index, cached on disk;
//! - `plan`: a random-sampling epoch's order, a pure function of (seed, epoch);
//! - `decoders`: the decoder actors that seek and decode keyframe-aligned units in parallel;
//! - `random`, `sequential`: the two kinds of pass;
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
mod random;
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
use plan::Sampling;

use super::video_stats as stats;
pub use frames::working_size;
pub use stats::{InputStats, VideoStats};

enum Mode {
    Random {
        files: Vec<PathBuf>,
        indexes: Vec<Arc<FileIndex>>,
        sampling: Sampling,
    },
    Sequential {
        inputs: Vec<Input>,
    },
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
        let mode = match opts.sampling {
            VideoSampling::Sequential => Mode::Sequential { inputs },
            VideoSampling::Random => {
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
                if files.is_empty() {
                    let first = unreadable
                        .first()
                        .map(|(f, e)| format!(": {f}: {e}"))
                        .unwrap_or_default();
                    return Err(err(format!(
                        "no readable video among {} inputs{first}",
                        unreadable.len()
                    )));
                }
                Mode::Random {
                    files,
                    indexes,
                    sampling: Sampling {
                        stride: opts.stride.max(1),
                        limit: opts.limit,
                        start_seconds: opts.start_seconds,
                        end_seconds: opts.end_seconds,
                        shuffle_buffer: opts.shuffle_buffer.max(1),
                    },
                }
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

    /// Files read by random sampling, in index order (empty when sequential).
    pub fn files(&self) -> &[PathBuf] {
        match &self.mode {
            Mode::Random { files, .. } => files,
            Mode::Sequential { .. } => &[],
        }
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
            Mode::Random {
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
        for (what, why) in &self.unreadable {
            skip(what, why);
        }
        let before = self.stats.corrupt_packets.load(Ordering::Relaxed);
        // Random sampling counts the whole corpus as one input, under the configured path.
        let corpus = matches!(self.mode, Mode::Random { .. }).then(|| {
            self.stats.input_counting(
                &self.opts.path.display().to_string(),
                false,
                self.stats.decoded.clone(),
            )
        });
        let end = match &self.mode {
            Mode::Random {
                files,
                indexes,
                sampling,
            } => random::RandomPass {
                indexes,
                files,
                sampling,
                decoders: self.decoders(),
                threads: self.opts.threads,
                max_side: self.opts.max_side,
                decoded: self.stats.decoded.clone(),
                corrupt_packets: &self.stats.corrupt_packets,
            }
            .run(pass, emit, skip),
            Mode::Sequential { inputs } => sequential::SequentialPass {
                inputs,
                cfg: &self.opts,
                stats: &self.stats,
            }
            .run(pass, emit, skip),
        };
        if let Some(corpus) = corpus {
            let added = self.stats.corrupt_packets.load(Ordering::Relaxed) - before;
            corpus.corrupt.fetch_add(added, Ordering::Relaxed);
        }
        let what = match &self.mode {
            Mode::Random { files, .. } if files.len() == 1 => files[0].display().to_string(),
            Mode::Sequential { inputs } if inputs.len() == 1 => inputs[0].describe(),
            _ => "the video source".to_string(),
        };
        self.log_corrupt(before, &what);
        end
    }
}
