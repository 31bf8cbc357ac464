//! RandomResizedCrop, the evaluation resize and horizontal flip.
//!
//! Crop parameters follow torchvision's `RandomResizedCrop.get_params` step for step (ten
//! tries of area scale and log-uniform aspect ratio, then the central-crop fallback), with
//! Python's round-half-to-even, so that a crop box means what it means in the reference.
//! Resampling is fast_image_resize's convolution with the Catmull-Rom (a = -0.5) kernel,
//! widened on shrink: the same antialiased bicubic as PIL's `Image.resize(BICUBIC)` that
//! torchvision calls on PIL images, but on SIMD paths.

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, IntoImageView, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::AugmentError;
use crate::decode::Reduction;
use crate::frame::Frame;
use crate::rng::Rng;

/// A crop box in source pixels, in torchvision's `(top, left, height, width)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// Python's `round()` on floats: halves go to the even neighbour.
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision `RandomResizedCrop.get_params` on a `width × height` image, drawing from `rng`.
///
/// Images smaller than the output are fine: the box is chosen in source pixels and the
/// resize then upsamples.
pub fn random_resized_crop_params(
    rng: &mut Rng,
    width: u32,
    height: u32,
    scale: [f64; 2],
    ratio: [f64; 2],
) -> CropRect {
    let (wf, hf) = (width as f64, height as f64);
    let area = wf * hf;
    let log_ratio = [ratio[0].ln(), ratio[1].ln()];
    for _ in 0..10 {
        let target_area = area * rng.uniform(scale[0], scale[1]);
        let aspect = rng.uniform(log_ratio[0], log_ratio[1]).exp();
        let w = py_round((target_area * aspect).sqrt());
        let h = py_round((target_area / aspect).sqrt());
        if 0 < w && w <= width as i64 && 0 < h && h <= height as i64 {
            let top = rng.below((height as i64 - h + 1) as u64) as u32;
            let left = rng.below((width as i64 - w + 1) as u64) as u32;
            return CropRect {
                top,
                left,
                height: h as u32,
                width: w as u32,
            };
        }
    }
    // Fallback: the central crop with the ratio clamped into range.
    let in_ratio = wf / hf;
    let (lo, hi) = (ratio[0].min(ratio[1]), ratio[0].max(ratio[1]));
    let (w, h) = if in_ratio < lo {
        (width, (py_round(wf / lo).clamp(1, height as i64)) as u32)
    } else if in_ratio > hi {
        ((py_round(hf * hi).clamp(1, width as i64)) as u32, height)
    } else {
        (width, height)
    };
    CropRect {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// Owns fast_image_resize's scratch buffers and the intermediate image, so that repeated
/// resizes do not allocate.
///
/// Every resize runs as two explicit one-axis passes, horizontal first, through an 8-bit
/// intermediate, because that is what PIL does: fast_image_resize on its own runs the
/// vertical pass first for u8 images, and since the Catmull-Rom kernel overshoots and the
/// intermediate is clipped to 0..=255, the order changes edge pixels by up to ~5 levels.
#[derive(Default)]
pub struct Resampler {
    resizer: Resizer,
    temp: Vec<u8>,
}

impl Resampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Crops `rect` out of `frame` and resizes it to `out_w × out_h` into `dst` (packed RGB8).
    ///
    /// The crop is a standalone sub-image (filter taps never read outside `rect`), matching
    /// torchvision's `resized_crop` = `crop` then `resize`.
    pub fn resized_crop(
        &mut self,
        frame: &Frame,
        rect: CropRect,
        out_w: u32,
        out_h: u32,
        dst: &mut [u8],
    ) -> Result<(), AugmentError> {
        let src = frame_view(frame)?;
        let cropped = CroppedImage::new(&src, rect.left, rect.top, rect.width, rect.height)
            .map_err(resize_err)?;
        let full = [0.0, 0.0, rect.width as f64, rect.height as f64];
        self.two_pass(&cropped, full, out_w, out_h, dst)
    }

    /// [`Resampler::resized_crop`] of `rect`, drawn on the full-size picture, from a frame
    /// decoded at `reduction` of it (the same call when there is no reduction).
    ///
    /// The box maps to fractional pixels of the frame; the resize reads the smallest
    /// whole-pixel region that holds it, so near the box's edges the filter may take up to one
    /// reduced pixel beyond the box where the full-size crop repeats its edge.
    pub fn resized_crop_reduced(
        &mut self,
        frame: &Frame,
        reduction: &Reduction,
        rect: CropRect,
        out_w: u32,
        out_h: u32,
        dst: &mut [u8],
    ) -> Result<(), AugmentError> {
        if reduction.is_identity() {
            return self.resized_crop(frame, rect, out_w, out_h, dst);
        }
        let src = frame_view(frame)?;
        let [l, t, w, h] = reduction.map_box([
            rect.left as f64,
            rect.top as f64,
            rect.width as f64,
            rect.height as f64,
        ]);
        let (x0, x1) = whole_pixels(l, w, frame.width);
        let (y0, y1) = whole_pixels(t, h, frame.height);
        let region = CroppedImage::new(&src, x0, y0, x1 - x0, y1 - y0).map_err(resize_err)?;
        let (l, t) = (l - x0 as f64, t - y0 as f64);
        let window = [
            l,
            t,
            w.min((x1 - x0) as f64 - l),
            h.min((y1 - y0) as f64 - t),
        ];
        self.two_pass(&region, window, out_w, out_h, dst)
    }

    /// Resizes the full-size picture to `rw × rh` and keeps the window at (`left`, `top`) of
    /// size `out_w × out_h`, without materialising the full resize: fast_image_resize's
    /// fractional source crop box gives the same taps as resizing everything and then cropping.
    /// The picture is read from `frame`, decoded at `reduction` of it (the window maps into the
    /// frame; with no reduction the frame is the picture).
    #[allow(clippy::too_many_arguments)]
    pub fn resize_then_crop(
        &mut self,
        frame: &Frame,
        reduction: &Reduction,
        rw: u32,
        rh: u32,
        left: u32,
        top: u32,
        out_w: u32,
        out_h: u32,
        dst: &mut [u8],
    ) -> Result<(), AugmentError> {
        let src = frame_view(frame)?;
        let (width, height) = reduction.full;
        let sx = width as f64 / rw as f64;
        let sy = height as f64 / rh as f64;
        let window = reduction.map_box([
            left as f64 * sx,
            top as f64 * sy,
            out_w as f64 * sx,
            out_h as f64 * sy,
        ]);
        self.two_pass(&src, window, out_w, out_h, dst)
    }

    /// Horizontal pass over all source rows into `temp`, then the vertical pass into `dst`.
    /// `window` is the source box `[left, top, width, height]` (fractional allowed).
    fn two_pass(
        &mut self,
        src: &impl IntoImageView,
        window: [f64; 4],
        out_w: u32,
        out_h: u32,
        dst: &mut [u8],
    ) -> Result<(), AugmentError> {
        let [left, top, width, height] = window;
        let src_h = src.height();
        self.temp.resize(out_w as usize * src_h as usize * 3, 0);
        let mut temp = Image::from_slice_u8(out_w, src_h, &mut self.temp, PixelType::U8x3)
            .map_err(resize_err)?;
        let opts = bicubic().crop(left, 0.0, width, src_h as f64);
        self.resizer
            .resize(src, &mut temp, &opts)
            .map_err(resize_err)?;
        let mut out =
            Image::from_slice_u8(out_w, out_h, dst, PixelType::U8x3).map_err(resize_err)?;
        let opts = bicubic().crop(0.0, top, out_w as f64, height);
        self.resizer
            .resize(&temp, &mut out, &opts)
            .map_err(resize_err)
    }
}

/// The whole pixels `[start, end)` of an axis of `len` pixels that cover the fractional span
/// `[from, from + size)`; never empty.
fn whole_pixels(from: f64, size: f64, len: u32) -> (u32, u32) {
    let start = (from.floor().max(0.0) as u32).min(len - 1);
    let end = ((from + size).ceil().max(0.0) as u32).clamp(start + 1, len);
    (start, end)
}

fn resize_err(e: impl std::fmt::Display) -> AugmentError {
    AugmentError::Resize(e.to_string())
}

fn bicubic() -> ResizeOptions {
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom))
}

fn frame_view(frame: &Frame) -> Result<ImageRef<'_>, AugmentError> {
    if frame.width == 0 || frame.height == 0 {
        return Err(AugmentError::Empty(frame.width, frame.height));
    }
    ImageRef::new(frame.width, frame.height, frame.data(), PixelType::U8x3).map_err(resize_err)
}

/// torchvision `resized_crop(img, top, left, height, width, [out_h, out_w], BICUBIC)` on a
/// packed RGB8 frame; allocates its result (tests and one-off use; the pipeline reuses a
/// [`Resampler`]).
pub fn resized_crop(
    frame: &Frame,
    rect: CropRect,
    out_w: u32,
    out_h: u32,
) -> Result<Vec<u8>, AugmentError> {
    let mut dst = vec![0u8; out_w as usize * out_h as usize * 3];
    Resampler::new().resized_crop(frame, rect, out_w, out_h, &mut dst)?;
    Ok(dst)
}

/// Mirrors packed RGB8 rows left to right in place: the left half's pixels swap with the
/// right half's, walked from both ends as whole 3-byte pixels (no per-byte index math).
/// (Byte-shuffle versions through fixed-size arrays measured slower: LLVM does not find
/// good shuffles for a 3-byte pixel reversal.)
pub fn hflip(buf: &mut [u8], width: u32) {
    let w = width as usize;
    if w < 2 {
        return;
    }
    for row in buf.chunks_exact_mut(w * 3) {
        let (left, right) = row.split_at_mut(w / 2 * 3);
        for (a, b) in left.chunks_exact_mut(3).zip(right.rchunks_exact_mut(3)) {
            a.swap_with_slice(b);
        }
    }
}

/// torchvision `Resize(shorter)` output size: the shorter side becomes `shorter`, the longer
/// one is scaled and truncated (`int(shorter * long / short)`).
pub fn resize_shorter_size(width: u32, height: u32, shorter: u32) -> (u32, u32) {
    if width <= height {
        (
            shorter,
            ((shorter as u64 * height as u64) / width as u64) as u32,
        )
    } else {
        (
            ((shorter as u64 * width as u64) / height as u64) as u32,
            shorter,
        )
    }
}

/// torchvision `CenterCrop` offsets: `int(round((size_in - size_out) / 2))`.
pub fn center_offset(size_in: u32, size_out: u32) -> u32 {
    py_round((size_in as f64 - size_out as f64) / 2.0).max(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_params_stay_inside_and_respect_scale() {
        let mut rng = Rng::new(1);
        for _ in 0..2000 {
            let r = random_resized_crop_params(&mut rng, 500, 375, [0.4, 1.0], [0.75, 4.0 / 3.0]);
            assert!(r.width >= 1 && r.height >= 1);
            assert!(r.left + r.width <= 500 && r.top + r.height <= 375);
            let frac = (r.width * r.height) as f64 / (500.0 * 375.0);
            assert!(frac > 0.39 && frac <= 1.0, "{frac} {r:?}");
        }
    }

    #[test]
    fn fallback_is_the_central_crop() {
        // No crop of area >= 4x the image fits: every try fails and the fallback is used.
        let mut rng = Rng::new(2);
        let r = random_resized_crop_params(&mut rng, 100, 10, [4.0, 5.0], [0.75, 4.0 / 3.0]);
        assert_eq!(
            r,
            CropRect {
                top: 0,
                left: 43,
                height: 10,
                width: 13
            }
        );
        let r = random_resized_crop_params(&mut rng, 10, 100, [4.0, 5.0], [0.75, 4.0 / 3.0]);
        assert_eq!(
            r,
            CropRect {
                top: 43,
                left: 0,
                height: 13,
                width: 10
            }
        );
        let r = random_resized_crop_params(&mut rng, 50, 50, [4.0, 5.0], [0.75, 4.0 / 3.0]);
        assert_eq!(
            r,
            CropRect {
                top: 0,
                left: 0,
                height: 50,
                width: 50
            }
        );
    }

    #[test]
    fn python_rounding_is_half_to_even() {
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
        assert_eq!(py_round(-0.5), 0);
    }

    #[test]
    fn hflip_equals_pixel_by_pixel_reversal_at_every_width() {
        for w in 1..120usize {
            let h = 3;
            let img: Vec<u8> = (0..w * h * 3).map(|i| (i * 31 % 251) as u8).collect();
            let mut flipped = img.clone();
            hflip(&mut flipped, w as u32);
            for y in 0..h {
                for x in 0..w {
                    let src = (y * w + (w - 1 - x)) * 3;
                    let dst = (y * w + x) * 3;
                    assert_eq!(
                        flipped[dst..dst + 3],
                        img[src..src + 3],
                        "w {w} y {y} x {x}"
                    );
                }
            }
        }
    }

    #[test]
    fn hflip_mirrors_rows() {
        let mut v = vec![
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
        ];
        hflip(&mut v, 3);
        assert_eq!(
            v,
            vec![7, 8, 9, 4, 5, 6, 1, 2, 3, 16, 17, 18, 13, 14, 15, 10, 11, 12]
        );
        let mut even: Vec<u8> = (0..24).collect();
        hflip(&mut even, 4);
        let expect: Vec<u8> = [9u8, 6, 3, 0, 21, 18, 15, 12]
            .iter()
            .flat_map(|&p| [p, p + 1, p + 2])
            .collect();
        assert_eq!(even, expect);
        let mut one = vec![1u8, 2, 3];
        hflip(&mut one, 1);
        assert_eq!(one, vec![1, 2, 3]);
    }

    #[test]
    fn resize_of_a_flat_image_is_flat_and_upscales_tiny_images() {
        let f = Frame::from_rgb(3, 2, [9u8, 99, 199].repeat(6));
        let out = resized_crop(
            &f,
            CropRect {
                top: 0,
                left: 0,
                height: 2,
                width: 3,
            },
            40,
            40,
        )
        .unwrap();
        assert!(out.chunks(3).all(|p| p == [9, 99, 199]));
    }

    #[test]
    fn shorter_side_resize_and_center_offsets_match_torchvision() {
        assert_eq!(resize_shorter_size(500, 375, 256), (341, 256));
        assert_eq!(resize_shorter_size(375, 500, 256), (256, 341));
        assert_eq!(center_offset(341, 224), 58); // round(58.5) -> 58
        assert_eq!(center_offset(256, 224), 16);
    }
}
