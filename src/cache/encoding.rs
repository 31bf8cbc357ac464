//! Record encodings and resize-on-write: what `cache build` does to each decoded picture before
//! it goes into a shard.
//!
//! `raw` keeps packed RGB8 (no decode on read, the most bytes); `jpeg` stores a JPEG at
//! `cache.quality`, decoded with libjpeg-turbo on read (through the decode stage, so a JPEG
//! record is read exactly like an image file); `auto` stores raw where the raw record is at most
//! `cache.auto_ratio` times the JPEG and the JPEG otherwise, like FFCV's size-based policy:
//! pictures that compress badly (small, noisy) stay raw and cost nothing to read.
//!
//! Resizing uses the augment stage's bicubic resampler ([`crate::augment::Resampler`], PIL's
//! antialiased bicubic), and never enlarges a picture.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use super::format::RecordKind;
use crate::augment::{CropRect, Resampler};
use crate::frame::Frame;

/// `cache.encoding`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Packed RGB8 pixels.
    #[default]
    Raw,
    /// JPEG at `cache.quality`, decoded with libjpeg-turbo on read.
    Jpeg,
    /// Raw where raw bytes ≤ `cache.auto_ratio` × the JPEG's, JPEG otherwise.
    Auto,
}

/// What `cache build` does to each picture: its part of `[cache]`, recorded in the manifest so
/// that a resumed build with other settings is refused.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RecordSettings {
    pub encoding: Encoding,
    pub quality: u8,
    pub auto_ratio: f64,
    pub max_side: Option<u32>,
    pub short_side: Option<u32>,
}

/// One record ready for a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub kind: RecordKind,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
}

/// The size a `width × height` picture is stored at: the largest size with the same aspect
/// ratio (rounded to whole pixels, at least 1) whose longer side is at most `max_side` and
/// shorter side at most `short_side`; never larger than the picture.
pub fn stored_size(
    width: u32,
    height: u32,
    max_side: Option<u32>,
    short_side: Option<u32>,
) -> (u32, u32) {
    let (long, short) = (width.max(height) as f64, width.min(height) as f64);
    let mut scale = 1.0f64;
    if let Some(m) = max_side {
        scale = scale.min(m as f64 / long);
    }
    if let Some(s) = short_side {
        scale = scale.min(s as f64 / short);
    }
    if scale >= 1.0 {
        return (width, height);
    }
    let side = |v: u32| ((v as f64 * scale).round() as u32).clamp(1, v);
    (side(width), side(height))
}

thread_local! {
    /// Each build worker keeps its resampler's scratch buffers between pictures.
    static RESAMPLER: RefCell<Resampler> = RefCell::new(Resampler::new());
}

/// Resizes `frame` to [`stored_size`] with the augment stage's bicubic resampler; a picture
/// already small enough comes back as it is.
pub fn resize_for_cache(frame: Frame, settings: &RecordSettings) -> Result<Frame, String> {
    let (w, h) = stored_size(
        frame.width,
        frame.height,
        settings.max_side,
        settings.short_side,
    );
    if (w, h) == (frame.width, frame.height) {
        return Ok(frame);
    }
    let mut out = vec![0u8; w as usize * h as usize * 3];
    let all = CropRect {
        top: 0,
        left: 0,
        height: frame.height,
        width: frame.width,
    };
    RESAMPLER
        .with(|r| r.borrow_mut().resized_crop(&frame, all, w, h, &mut out))
        .map_err(|e| e.to_string())?;
    Ok(Frame::from_rgb(w, h, out))
}

/// Resizes and encodes one decoded picture as `settings` say.
pub fn encode_record(frame: Frame, settings: &RecordSettings) -> Result<Encoded, String> {
    let frame = resize_for_cache(frame, settings)?;
    let (width, height) = (frame.width, frame.height);
    let raw = |frame: Frame| Encoded {
        kind: RecordKind::Raw,
        width,
        height,
        bytes: frame.data().to_vec(),
    };
    Ok(match settings.encoding {
        Encoding::Raw => raw(frame),
        Encoding::Jpeg => Encoded {
            kind: RecordKind::Jpeg,
            width,
            height,
            bytes: encode_jpeg(&frame, settings.quality)?,
        },
        Encoding::Auto => {
            let jpeg = encode_jpeg(&frame, settings.quality)?;
            if frame.data().len() as f64 <= settings.auto_ratio * jpeg.len() as f64 {
                raw(frame)
            } else {
                Encoded {
                    kind: RecordKind::Jpeg,
                    width,
                    height,
                    bytes: jpeg,
                }
            }
        }
    })
}

/// Encodes packed RGB8 as a baseline JPEG (4:2:0, the quality given): libjpeg-turbo when the
/// build has it, the image crate's encoder otherwise.
pub fn encode_jpeg(frame: &Frame, quality: u8) -> Result<Vec<u8>, String> {
    #[cfg(turbojpeg)]
    {
        super::turbo_encode::compress(frame, quality)
    }
    #[cfg(not(turbojpeg))]
    {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode(
                frame.data(),
                frame.width,
                frame.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(w: u32, h: u32) -> Frame {
        // Smooth gradients with some texture: what JPEG is made for.
        let mut px = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let t = ((x * 7 + y * 3) % 23) as f32;
                px.push((x * 255 / w.max(1)) as u8);
                px.push((y * 255 / h.max(1)) as u8);
                px.push((128.0 + 40.0 * (x as f32 / 9.0).sin() + t) as u8);
            }
        }
        Frame::from_rgb(w, h, px)
    }

    fn settings(encoding: Encoding) -> RecordSettings {
        RecordSettings {
            encoding,
            quality: 90,
            auto_ratio: 4.0,
            max_side: None,
            short_side: None,
        }
    }

    #[test]
    fn stored_size_keeps_aspect_and_never_enlarges() {
        assert_eq!(stored_size(2000, 1500, Some(512), None), (512, 384));
        assert_eq!(stored_size(1500, 2000, Some(512), None), (384, 512));
        assert_eq!(stored_size(2000, 1500, None, Some(256)), (341, 256));
        assert_eq!(stored_size(500, 375, Some(512), None), (500, 375));
        assert_eq!(stored_size(500, 375, None, Some(400)), (500, 375));
        assert_eq!(stored_size(3000, 10, Some(300), None), (300, 1));
        // Both: the tighter one wins.
        assert_eq!(stored_size(2000, 1000, Some(1000), Some(400)), (800, 400));
        for (w, h) in [(640u32, 480u32), (1234, 567), (99, 1000), (4000, 3000)] {
            let (sw, sh) = stored_size(w, h, Some(256), None);
            assert!(sw.max(sh) <= 256 && sw <= w && sh <= h);
            let aspect = |a: u32, b: u32| a as f64 / b as f64;
            // Rounding moves the aspect ratio by at most half a pixel on the shorter side.
            let tol = 0.5 / sw.min(sh) as f64 * aspect(w, h).max(1.0) + 1e-9;
            assert!(
                (aspect(sw, sh) / aspect(w, h) - 1.0).abs() <= tol * 2.0,
                "{w}x{h} -> {sw}x{sh}"
            );
        }
    }

    /// The resize is the augment stage's: the same bytes as a full-picture `resized_crop`.
    #[test]
    fn resize_on_write_is_the_augment_resampler() {
        let f = photo(300, 200);
        let s = RecordSettings {
            max_side: Some(120),
            ..settings(Encoding::Raw)
        };
        let r = encode_record(f.clone(), &s).unwrap();
        assert_eq!((r.width, r.height, r.kind), (120, 80, RecordKind::Raw));
        let all = CropRect {
            top: 0,
            left: 0,
            height: 200,
            width: 300,
        };
        assert_eq!(
            r.bytes,
            crate::augment::resized_crop(&f, all, 120, 80).unwrap()
        );
        // Smaller than the limit: stored exactly as decoded.
        let small = encode_record(photo(100, 60), &s).unwrap();
        assert_eq!(small.bytes, photo(100, 60).data());
    }

    /// JPEG records decode (with the decode stage's decoder) to within a few levels of the
    /// picture. The stated tolerance, on this deliberately textured picture: a mean absolute
    /// error of at most 3 levels per byte at quality ≥ 90 and 5 at quality 75, and a higher
    /// quality never worse.
    #[test]
    fn jpeg_records_round_trip_within_tolerance() {
        let f = photo(160, 120);
        let mut errors = Vec::new();
        for quality in [75u8, 90, 95] {
            let r = encode_record(
                f.clone(),
                &RecordSettings {
                    quality,
                    ..settings(Encoding::Jpeg)
                },
            )
            .unwrap();
            assert_eq!(r.kind, RecordKind::Jpeg);
            assert!(r.bytes.len() < f.data().len() / 3, "{}", r.bytes.len());
            let back = crate::decode::decode_image(&r.bytes, 1 << 30).unwrap();
            assert_eq!((back.width, back.height), (160, 120));
            let mae = back
                .data()
                .iter()
                .zip(f.data())
                .map(|(a, b)| (*a as f64 - *b as f64).abs())
                .sum::<f64>()
                / f.data().len() as f64;
            let bound = if quality >= 90 { 3.0 } else { 5.0 };
            assert!(mae <= bound, "quality {quality}: mean abs error {mae}");
            errors.push(mae);
        }
        assert!(errors[0] > errors[1] && errors[1] > errors[2], "{errors:?}");
    }

    /// `auto`: noise does not compress, so it stays raw; a smooth picture becomes a JPEG.
    #[test]
    fn auto_picks_raw_for_incompressible_pictures() {
        let mut rng = crate::rng::Rng::keyed(&[14, 1]);
        let noise = Frame::from_rgb(
            64,
            64,
            (0..64 * 64 * 3).map(|_| rng.below(256) as u8).collect(),
        );
        let r = encode_record(noise.clone(), &settings(Encoding::Auto)).unwrap();
        assert_eq!(r.kind, RecordKind::Raw);
        assert_eq!(r.bytes, noise.data());
        let r = encode_record(photo(128, 96), &settings(Encoding::Auto)).unwrap();
        assert_eq!(r.kind, RecordKind::Jpeg);
    }
}
