//! Video frames through ffmpeg-next: one demuxer, one decoder and one RGB scaler, all owned by
//! the source thread (FFmpeg's scaling context is not `Send`, so it is created inside `run_pass`).

use std::path::{Path, PathBuf};

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags};
use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use super::{PassEnd, SourceError, StreamSource};
use crate::frame::Frame;

const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "ts",
];

pub struct VideoSource {
    inputs: Vec<PathBuf>,
    stride: u32,
    limit: Option<u64>,
}

impl VideoSource {
    /// `path` is a video file, a directory of video files (sorted), or a URL FFmpeg can open.
    pub fn open(path: &Path, stride: u32, limit: Option<u64>) -> Result<Self, SourceError> {
        ffmpeg::init().map_err(|e| SourceError::Open {
            path: path.to_path_buf(),
            message: format!("ffmpeg init: {e}"),
        })?;
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
        let inputs = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| SourceError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(SourceError::Open {
                    path: path.to_path_buf(),
                    message: "no video files found".into(),
                });
            }
            files
        } else {
            let s = path.to_string_lossy();
            if !s.contains("://") && !path.is_file() {
                return Err(SourceError::Open {
                    path: path.to_path_buf(),
                    message: "no such file".into(),
                });
            }
            vec![path.to_path_buf()]
        };
        Ok(VideoSource {
            inputs,
            stride: stride.max(1),
            limit,
        })
    }
}

/// Why one input could not be (fully) read.
#[derive(Debug, thiserror::Error)]
enum VideoError {
    #[error("{0}")]
    Ffmpeg(#[from] ffmpeg::Error),
    #[error("no video stream")]
    NoVideoStream,
}

impl StreamSource for VideoSource {
    fn run_pass(
        &mut self,
        start: u64,
        emit: &mut dyn FnMut(u64, Frame) -> bool,
        skip: &mut dyn FnMut(&str, &str),
    ) -> PassEnd {
        let mut position = 0u64;
        let mut state = PassState {
            stride: self.stride,
            limit: self.limit,
            start,
            position: &mut position,
            seen: 0,
        };
        for input in &self.inputs {
            match decode_file(input, &mut state, emit) {
                Ok(PassEnd::Stopped) => return PassEnd::Stopped,
                Ok(PassEnd::Finished) => {}
                Err(e) => skip(&input.display().to_string(), &e.to_string()),
            }
            if state.limit.is_some_and(|l| *state.position >= l) {
                break;
            }
        }
        PassEnd::Finished
    }
}

struct PassState<'a> {
    stride: u32,
    limit: Option<u64>,
    start: u64,
    /// Index of the next emitted frame within the pass (the cursor position).
    position: &'a mut u64,
    /// Decoded frames so far in this file (for the stride).
    seen: u64,
}

fn decode_file(
    path: &Path,
    state: &mut PassState<'_>,
    emit: &mut dyn FnMut(u64, Frame) -> bool,
) -> Result<PassEnd, VideoError> {
    let mut ictx = ffmpeg::format::input(path)?;
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or(VideoError::NoVideoStream)?;
    let index = stream.index();
    let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())?;
    let mut decoder = ctx.decoder().video()?;
    let mut scaler: Option<Scaler> = None;
    state.seen = 0;
    let mut decoded = Video::empty();
    let mut rgb = Video::empty();

    let mut drain = |decoder: &mut ffmpeg::decoder::Video,
                     state: &mut PassState<'_>|
     -> Result<PassEnd, VideoError> {
        while decoder.receive_frame(&mut decoded).is_ok() {
            let take = state.seen.is_multiple_of(state.stride as u64);
            state.seen += 1;
            if !take {
                continue;
            }
            if state.limit.is_some_and(|l| *state.position >= l) {
                return Ok(PassEnd::Finished);
            }
            let pos = *state.position;
            *state.position += 1;
            if pos < state.start {
                continue; // resuming: frames before the cursor were already trained on
            }
            let (w, h) = (decoded.width(), decoded.height());
            let sc = match &mut scaler {
                Some(s) => s,
                None => scaler.insert(Scaler::get(
                    decoded.format(),
                    w,
                    h,
                    Pixel::RGB24,
                    w,
                    h,
                    Flags::BILINEAR,
                )?),
            };
            sc.run(&decoded, &mut rgb)?;
            let stride = rgb.stride(0);
            let row = w as usize * 3;
            let plane = rgb.data(0);
            let mut data = Vec::with_capacity(row * h as usize);
            for y in 0..h as usize {
                data.extend_from_slice(&plane[y * stride..y * stride + row]);
            }
            if !emit(pos, Frame::from_rgb(w, h, data)) {
                return Ok(PassEnd::Stopped);
            }
        }
        Ok(PassEnd::Finished)
    };

    for (s, packet) in ictx.packets() {
        if s.index() != index {
            continue;
        }
        decoder.send_packet(&packet)?;
        if drain(&mut decoder, state)? == PassEnd::Stopped {
            return Ok(PassEnd::Stopped);
        }
        if state.limit.is_some_and(|l| *state.position >= l) {
            return Ok(PassEnd::Finished);
        }
    }
    decoder.send_eof()?;
    drain(&mut decoder, state)
}
