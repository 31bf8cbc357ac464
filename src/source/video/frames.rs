//! Decoded pictures → RGB8 `Frame`s at the working size. One `FrameScaler` per decoding thread
//! (FFmpeg's scaling context is not `Send`); it is rebuilt whenever a frame's size or pixel
//! format differs from the last one (a stream that changes resolution midway), and it scales
//! straight from the decoder's YUV to `max_side`, so a 4K frame never exists as a full-size RGB
//! buffer unless `max_side = 0` asks for it. Downscaling 8-bit 4:2:0 / 4:4:4 video to at most
//! its chroma plane's size (the common case: 1080p or 4K to 512) takes the faster `planes`
//! path instead of FFmpeg's scaler; everything else (no scaling, 4:2:2, 10-bit, enlarging the
//! chroma) stays with FFmpeg's scaler.

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{Context as Scaler, Flags};
use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use super::planes::PlaneScaler;
use crate::frame::Frame;

/// How one input geometry is converted.
enum Converter {
    Planes(Box<PlaneScaler>),
    Swscale(Scaler),
}

/// The size a `w`x`h` picture is scaled to: its longer side at most `max_side` (0: unchanged),
/// aspect kept, never enlarged.
pub fn working_size(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let long = w.max(h);
    if max_side == 0 || long <= max_side {
        return (w, h);
    }
    let s = max_side as f64 / long as f64;
    let d = |v: u32| ((v as f64 * s).round() as u32).clamp(1, max_side);
    (d(w), d(h))
}

pub struct FrameScaler {
    max_side: u32,
    max_pixels: u64,
    current: Option<((Pixel, u32, u32), Converter)>,
    rgb: Video,
    /// How many times a scaler was built (more than one: the input changed midway).
    pub rebuilds: u64,
}

impl FrameScaler {
    pub fn new(max_side: u32, max_pixels: u64) -> Self {
        FrameScaler {
            max_side,
            max_pixels,
            current: None,
            rgb: Video::empty(),
            rebuilds: 0,
        }
    }

    /// The decoded picture as packed RGB8 at the working size, or why it was refused.
    pub fn convert(&mut self, decoded: &Video) -> Result<Frame, String> {
        let (w, h, fmt) = (decoded.width(), decoded.height(), decoded.format());
        if w == 0 || h == 0 {
            return Err("a frame of size 0".into());
        }
        if w as u64 * h as u64 > self.max_pixels {
            return Err(format!(
                "a {w}x{h} frame exceeds decode.max_pixels = {}",
                self.max_pixels
            ));
        }
        let key = (fmt, w, h);
        if self.current.as_ref().map(|(k, _)| *k) != Some(key) {
            let (dw, dh) = working_size(w, h, self.max_side);
            let flags = if (dw, dh) == (w, h) {
                Flags::BILINEAR
            } else {
                Flags::AREA
            };
            let converter = match PlaneScaler::new(fmt, w, h, dw, dh) {
                Some(p) => Converter::Planes(Box::new(p)),
                None => Converter::Swscale(
                    Scaler::get(fmt, w, h, Pixel::RGB24, dw, dh, flags)
                        .map_err(|e| format!("no scaler from {fmt:?} {w}x{h}: {e}"))?,
                ),
            };
            self.current = Some((key, converter));
            self.rgb = Video::empty();
            self.rebuilds += 1;
        }
        let scaler = match self.current.as_mut().expect("set above") {
            (_, Converter::Planes(p)) => return p.convert(decoded),
            (_, Converter::Swscale(s)) => s,
        };
        scaler
            .run(decoded, &mut self.rgb)
            .map_err(|e| format!("scaling: {e}"))?;
        let (dw, dh) = (self.rgb.width(), self.rgb.height());
        let stride = self.rgb.stride(0);
        let row = dw as usize * 3;
        let plane = self.rgb.data(0);
        let mut data = Vec::with_capacity(row * dh as usize);
        for y in 0..dh as usize {
            data.extend_from_slice(&plane[y * stride..y * stride + row]);
        }
        Ok(Frame::from_rgb(dw, dh, data))
    }
}

/// A decoder for the best video stream of an open input, with `threads` FFmpeg threads (frame
/// and slice threading; 1 = none).
pub fn open_decoder(
    ictx: &ffmpeg::format::context::Input,
    threads: u32,
) -> Result<(usize, ffmpeg::decoder::Video), ffmpeg::Error> {
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or(ffmpeg::Error::StreamNotFound)?;
    let index = stream.index();
    let mut ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())?;
    if threads != 1 {
        ctx.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            count: threads as usize,
            ..Default::default()
        });
    }
    Ok((index, ctx.decoder().video()?))
}

/// A decoded frame's presentation timestamp (the best-effort one when the packet had none).
pub fn frame_pts(frame: &Video) -> Option<i64> {
    frame.pts().or_else(|| frame.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_size_keeps_aspect_and_never_enlarges() {
        assert_eq!(working_size(3840, 2160, 512), (512, 288));
        assert_eq!(working_size(2160, 3840, 512), (288, 512));
        assert_eq!(working_size(320, 240, 512), (320, 240));
        assert_eq!(working_size(3840, 2160, 0), (3840, 2160));
        assert_eq!(working_size(10000, 1, 100), (100, 1));
    }
}
