//! What a video source reads: a file, a directory (recursive), a list file (one path or URL per
//! line), or a URL; and how each is opened. Local files are opened as `file:` URLs with FFmpeg's
//! protocol whitelist set to `file` and its format whitelist set to container demuxers, so a
//! crafted file (an HLS or concat playlist named `.mp4`) can neither reach the network nor pull
//! in other files.

use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;

pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "ts", "flv", "ivf", "ogv",
];

/// Extensions read as list files (one input per line).
use crate::source::video_config::{has_extension, LIST_EXTENSIONS};

/// Demuxers a local file may be opened with: containers only (no playlists, no image sequences,
/// no concat scripts). FFmpeg matches a demuxer if any of its comma-separated names is listed.
const LOCAL_FORMATS: &str =
    "mov,matroska,webm,avi,mpegts,mpeg,flv,ivf,h264,hevc,mpegvideo,m4v,ogg,asf,nut";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Url(String),
}

impl Input {
    pub fn describe(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Url(u) => u.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Ffmpeg(#[from] ffmpeg::Error),
}

pub use crate::source::video_config::is_url;

/// The inputs `path` names, in a stable order: a URL; a directory's video files found
/// recursively (sorted by path); a list file's lines (blank and `#` lines skipped, relative
/// paths taken from the list's directory); or one file.
pub fn list(path: &Path) -> Result<Vec<Input>, String> {
    let text = path.to_string_lossy();
    if is_url(&text) {
        return Ok(vec![Input::Url(text.into_owned())]);
    }
    if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files).map_err(|e| format!("cannot read: {e}"))?;
        files.sort();
        if files.is_empty() {
            return Err("no video files found".into());
        }
        return Ok(files.into_iter().map(Input::File).collect());
    }
    if !path.is_file() {
        return Err("no such file".into());
    }
    if has_extension(path, LIST_EXTENSIONS) {
        let body = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let inputs: Vec<Input> = body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                if is_url(l) {
                    Input::Url(l.to_string())
                } else {
                    Input::File(base.join(l))
                }
            })
            .collect();
        if inputs.is_empty() {
            return Err("the list names no input".into());
        }
        return Ok(inputs);
    }
    Ok(vec![Input::File(path.to_path_buf())])
}

/// Video files under `dir`, following symbolic links to directories at most 32 levels deep.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    fn go(dir: &Path, out: &mut Vec<PathBuf>, depth: u32) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                if depth < 32 {
                    go(&path, out, depth + 1)?;
                }
            } else if has_extension(&path, VIDEO_EXTENSIONS) {
                out.push(path);
            }
        }
        Ok(())
    }
    go(dir, out, 0)
}

/// The URL FFmpeg opens and its options: a local file as a `file:` URL with `file` alone
/// whitelisted and container demuxers only; a URL with the `protocols` whitelist.
fn url_and_options(input: &Input, protocols: &str) -> (String, ffmpeg::Dictionary<'static>) {
    let mut opts = ffmpeg::Dictionary::new();
    let url = match input {
        Input::File(p) => {
            opts.set("protocol_whitelist", "file");
            opts.set("format_whitelist", LOCAL_FORMATS);
            // `file:` so that a name like `rtmp:x.mp4` cannot select another protocol.
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            format!("file:{}", abs.display())
        }
        Input::Url(u) => {
            opts.set("protocol_whitelist", protocols);
            u.clone()
        }
    };
    (url, opts)
}

/// Opens an input for demuxing with the whitelists above (`protocols`: for URLs).
pub fn open_input(
    input: &Input,
    protocols: &str,
) -> Result<ffmpeg::format::context::Input, OpenError> {
    let (url, opts) = url_and_options(input, protocols);
    Ok(ffmpeg::format::input_with_dictionary(&url, opts)?)
}

/// As `open_input`, with FFmpeg's blocking calls (open, probe, every read) abandoned as soon as
/// `interrupt` returns true: a live stream that goes silent or a pass that stops.
pub fn open_input_interruptible(
    input: &Input,
    protocols: &str,
    interrupt: impl FnMut() -> bool + Send + 'static,
) -> Result<ffmpeg::format::context::Input, OpenError> {
    let (url, opts) = url_and_options(input, protocols);
    Ok(ffmpeg::format::input_with_interrupt_and_dictionary(
        &url, interrupt, opts,
    )?)
}
