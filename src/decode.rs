//! Still-image decoding: encoded bytes (JPEG, PNG) to packed RGB8 frames.
//!
//! Training data is untrusted: files may be empty, truncated, corrupt, huge, grey, 16-bit,
//! CMYK, carry an alpha channel or an EXIF rotation. Every one of those becomes either a
//! correct RGB8 frame or a [`DecodeError`] that skips the sample; none may panic or exhaust
//! memory.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::frame::Frame;

/// `[decode]`: the decode worker pool and its safety limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Decode threads in a pool of their own. 0 (the default) gives decode no threads: each
    /// augment worker decodes its own images, bytes to crops on one core, which saves a thread
    /// hop and a cold read of every frame (measured faster; docs/ARCHITECTURE.md).
    pub workers: usize,
    /// Capacity of the channel from the source to the decode pool (or, with decode inline, to
    /// the augment workers), in samples.
    pub channel_capacity: usize,
    /// Bytes of images each channel before the augment workers may hold: encoded files or
    /// decoded frames from the source, and decoded frames from the decode pool (each channel
    /// its own budget, beside its capacity in samples). The producer waits while the queued
    /// bytes and its image would exceed it; an image larger than the budget passes alone.
    /// Memory-mapped frames (the shard cache) hold no bytes of their own and count 0.
    pub channel_bytes: u64,
    /// Largest image accepted, in pixels (width × height); larger headers are refused before
    /// any pixel buffer is allocated, so a decompression bomb cannot exhaust memory.
    pub max_pixels: u64,
    /// `"auto"` (default): decode JPEGs at the largest fast libjpeg-turbo reduction (1/2, 1/4,
    /// 1/8) that keeps every crop box at least as large as its output; crops stay within a few
    /// levels of the full-size ones at a fraction of the decode and resize cost on large photos
    /// (measured in docs/ARCHITECTURE.md). `"off"`: always decode the full picture.
    pub scaled: ScaledDecode,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            workers: 0,
            channel_capacity: 256,
            channel_bytes: 512 << 20,
            max_pixels: 64 * 1024 * 1024,
            scaled: ScaledDecode::default(),
        }
    }
}

impl DecodeConfig {
    /// Whether decoding runs inside the augment workers (`workers = 0`).
    pub fn inline(&self) -> bool {
        self.workers == 0
    }

    pub fn validate(&self, problems: &mut Problems) {
        problems.check(self.channel_capacity > 0, "decode.channel_capacity", || {
            "must be > 0".into()
        });
        problems.check(self.channel_bytes > 0, "decode.channel_bytes", || {
            "must be > 0".into()
        });
        problems.check(self.max_pixels > 0, "decode.max_pixels", || {
            "must be > 0".into()
        });
    }
}

/// Why an image could not be decoded; the sample is skipped and counted.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty file")]
    Empty,
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {limit} (decode.max_pixels)")]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("cannot decode: {0}")]
    Image(String),
}

impl From<image::ImageError> for DecodeError {
    fn from(e: image::ImageError) -> Self {
        DecodeError::Image(e.to_string())
    }
}

/// Bytes per pixel of the widest layout the `image` crate can hand us (RGBA, 16 bits per
/// channel); used to bound the decoder's allocation from `max_pixels`.
const WIDEST_PIXEL_BYTES: u64 = 8;

/// Which decoder handles ordinary JPEGs in this build (for benchmark reports).
pub const JPEG_DECODER: &str = if cfg!(turbojpeg) {
    "libjpeg-turbo (system TurboJPEG), image crate for the rest"
} else {
    "image crate (zune-jpeg)"
};

/// The picture's pixel count, or `TooLarge` when its header claims more than `max_pixels`
/// (checked before any pixel buffer exists, on every decode path).
fn within_pixel_limit(width: u32, height: u32, max_pixels: u64) -> Result<u64, DecodeError> {
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge {
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    Ok(pixels)
}

/// Decodes JPEG/PNG bytes into RGB8, refusing images over `max_pixels`.
///
/// Ordinary JPEGs take libjpeg-turbo when the build found it (`decode::turbo`); everything it
/// does not decode exactly like the general path falls through to the image crate.
///
/// The size check reads only the header, before any pixel buffer exists. Grey is replicated
/// to three channels, alpha is dropped (not composited: a training crop has no background),
/// 16-bit samples are scaled to 8 bits, CMYK JPEGs are converted by the decoder, and the EXIF
/// orientation is applied so that crops see the picture upright.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<Frame, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    #[cfg(turbojpeg)]
    if let Some(frame) = turbo::decode(bytes, max_pixels)? {
        return Ok(frame);
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Image(e.to_string()))?;
    // Belt and braces: the decoder itself may not allocate past the pixel budget either (its
    // default limit of 512 MiB would otherwise be the only guard for large `max_pixels`).
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(WIDEST_PIXEL_BYTES).max(1 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let (width, height) = decoder.dimensions();
    let pixels = within_pixel_limit(width, height, max_pixels)?;
    if pixels == 0 {
        return Err(DecodeError::Image(format!(
            "image has no pixels ({width}x{height})"
        )));
    }
    // A malformed EXIF block must not cost us an otherwise good picture.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    Ok(Frame::from_rgb(w, h, rgb.into_raw()))
}

mod scaled;
#[cfg(test)]
mod tests;
#[cfg(turbojpeg)]
mod turbo;

pub use scaled::{decode_reduced, pick_scale, Reduction, Scale, ScaledDecode, FAST_FACTORS};
