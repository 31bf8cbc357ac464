//! Photometric ops on packed RGB8: colour jitter, grayscale and solarize.
//!
//! Each op reproduces torchvision's tensor kernels on uint8 images
//! (`torchvision.transforms.functional`), including their float32 arithmetic and their
//! truncating casts back to uint8, so a reference test can demand agreement to one level.
//!
//! Speed comes from running a whole chain of per-pixel ops (a view's jitter in its random
//! order, then grayscale) in one pass over the pixels instead of one pass per op: a block of
//! pixels is deinterleaved into float planes once, every op runs on the block with the
//! uint8 truncation torchvision applies between ops, and the block is stored once. Contrast
//! needs the mean grey level of the image as it stands when contrast runs, so a chain with
//! contrast takes two passes: the ops before it (summing grey levels on the way), then the
//! rest. Solarize, a per-value compare and select, stays separate (it follows the blur).

use super::AugmentConfig;
use crate::rng::Rng;
use crate::simd::{fmax, fmin, level_to_i32, simd_dispatch, trunc_level, Planes, BLOCK};

/// ITU-R 601-2 luma weights as torchvision's tensor kernels write them (0.2989 for 601-2's
/// 0.299 red, a constant inherited from TensorFlow). Using torchvision's exact constant keeps
/// the ops bit-identical to the reference: with 0.299 a truncated grey level moves on ~2% of
/// pixels, and a hue rotation of a near-grey pixel amplifies that one level into several.
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// The 601-2 grey level of one pixel before truncation, in torchvision's operation order.
#[inline(always)]
fn luma_f(r: f32, g: f32, b: f32) -> f32 {
    LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
}

/// torchvision `_blend(img, other, ratio)` for one value: `ratio*x + (1-ratio)*other`,
/// clamped; the caller's truncation is torch's float -> uint8 cast.
#[inline(always)]
fn blend(x: f32, other: f32, ratio: f32, one_minus: f32) -> f32 {
    fmin(fmax(ratio * x + one_minus * other, 0.0), 255.0)
}

/// `convert_image_dtype(float -> uint8)` multiplies [0, 1] values by 255.999 before the
/// truncating cast; on values kept in levels (0..=255) that is a factor of 255.999 / 255.
const TO_U8_SCALE: f32 = 255.999 / 255.0;

/// One per-pixel photometric op with its parameters, for [`apply_ops`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PixelOp {
    /// torchvision `adjust_brightness`: blend with black.
    Brightness { ratio: f32, one_minus: f32 },
    /// torchvision `adjust_contrast`: blend with the mean (truncated) grey level of the image
    /// as it stands when the op runs; [`apply_ops`] measures that mean.
    Contrast { ratio: f32, one_minus: f32 },
    /// torchvision `adjust_saturation`: blend each pixel with its own truncated grey level.
    Saturation { ratio: f32, one_minus: f32 },
    /// torchvision `adjust_hue` by `shift` turns; `sectors` is `6 · (shift mod 1)`.
    Hue { shift: f32, sectors: f32 },
    /// torchvision `rgb_to_grayscale(img, 3)`.
    Grayscale,
}

impl PixelOp {
    pub fn brightness(factor: f64) -> Self {
        let (ratio, one_minus) = blend_factors(factor);
        PixelOp::Brightness { ratio, one_minus }
    }

    pub fn contrast(factor: f64) -> Self {
        let (ratio, one_minus) = blend_factors(factor);
        PixelOp::Contrast { ratio, one_minus }
    }

    pub fn saturation(factor: f64) -> Self {
        let (ratio, one_minus) = blend_factors(factor);
        PixelOp::Saturation { ratio, one_minus }
    }

    /// A hue rotation by `hue_factor` turns (torchvision takes -0.5..=0.5; any value works).
    pub fn hue(hue_factor: f64) -> Self {
        let turns = hue_factor - hue_factor.floor();
        PixelOp::Hue {
            shift: hue_factor as f32,
            sectors: (6.0 * turns) as f32,
        }
    }
}

fn blend_factors(factor: f64) -> (f32, f32) {
    (factor as f32, (1.0 - factor) as f32)
}

/// A short list of ops without allocating (a view has at most four jitter ops + grayscale).
#[derive(Debug, Clone, Copy)]
pub struct OpList {
    ops: [PixelOp; 6],
    len: usize,
}

impl Default for OpList {
    fn default() -> Self {
        OpList {
            ops: [PixelOp::Grayscale; 6],
            len: 0,
        }
    }
}

impl OpList {
    /// Appends `op`; panics past six ops (no recipe has more).
    pub fn push(&mut self, op: PixelOp) {
        self.ops[self.len] = op;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[PixelOp] {
        &self.ops[..self.len]
    }
}

/// Applies `ops` in order to packed RGB8 `buf`, truncating to u8 after each op as
/// torchvision does, in one pass per contrast op plus one (see the module doc).
///
/// Per-value ops (brightness, contrast with its mean) also cover a trailing partial pixel.
pub fn apply_ops(buf: &mut [u8], ops: &[PixelOp]) {
    let pixels = buf.len() / 3;
    if buf.is_empty() || ops.is_empty() {
        return;
    }
    let is_contrast = |o: &PixelOp| matches!(o, PixelOp::Contrast { .. });
    // Segments start at 0 and at every contrast op; a pass also sums the grey levels after
    // its segment when the next segment starts with contrast.
    let mut mean = 0.0f32;
    if is_contrast(&ops[0]) {
        // The chain opens with contrast: its mean is that of the input (a read-only pass).
        mean = mean_of(chain_pass(buf, &[], 0.0, true), pixels);
    }
    let mut start = 0;
    loop {
        let end = ops[start + 1..]
            .iter()
            .position(is_contrast)
            .map_or(ops.len(), |p| start + 1 + p);
        let want_sum = end < ops.len();
        let sum = chain_pass(buf, &ops[start..end], mean, want_sum);
        if !want_sum {
            return;
        }
        mean = mean_of(sum, pixels);
        start = end;
    }
}

/// torchvision's `mean` of the truncated grey image, as the f32 it blends with.
fn mean_of(sum: u64, pixels: usize) -> f32 {
    (sum as f64 / pixels.max(1) as f64) as f32
}

simd_dispatch!(
    /// One pass: `ops` on every block (a contrast op blends with `mean`), stored back when
    /// there are ops; returns the sum of the truncated grey levels after them when
    /// `want_sum`.
    fn chain_pass(buf: &mut [u8], ops: &[PixelOp], mean: f32, want_sum: bool) -> u64 => chain_pass_impl
);

#[inline(always)]
fn chain_pass_impl(buf: &mut [u8], ops: &[PixelOp], mean: f32, want_sum: bool) -> u64 {
    let mut planes = Planes::new();
    let mut total = 0u64;
    for px in buf.chunks_mut(BLOCK * 3) {
        planes.load(px);
        // SAFETY: `load` fills the planes with levels (0..=255 from bytes, zeros past a short
        // tail), and every op maps levels to levels.
        unsafe {
            for op in ops {
                apply_block(&mut planes, op, mean);
            }
            if want_sum {
                total += luma_block_sum(&planes, px.len() / 3);
            }
            if !ops.is_empty() {
                planes.store(px);
            }
        }
    }
    total
}

/// Sum of the truncated grey levels of the first `n` pixels of a block (integers, so the
/// sum vectorises; a float sum would be one serial chain of adds).
///
/// # Safety
/// The planes must hold levels (`0.0..256.0`).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn luma_block_sum(p: &Planes, n: usize) -> u64 {
    let mut grey = [0u32; BLOCK];
    for i in 0..BLOCK {
        // SAFETY: the grey of levels is a level (the weights sum to 0.9999).
        grey[i] = unsafe { level_to_i32(luma_f(p.r[i], p.g[i], p.b[i])) } as u32;
    }
    grey[..n].iter().map(|&g| g as u64).sum()
}

/// One op over one block; every result is truncated to an integer level, as the uint8
/// tensor torchvision hands to the next op.
///
/// # Safety
/// The planes must hold levels (`0.0..256.0`); they still do afterwards: blends clamp to
/// `0..=255`, grey levels are weighted means, and a hue rotation only rearranges the max and
/// min channel and puts a middle value between them. The conversions rely on it.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn apply_block(p: &mut Planes, op: &PixelOp, mean: f32) {
    // The unchecked conversions and `hue_pixel` below take levels, or blends of levels
    // clamped to 0..=255 (the contract above).
    match *op {
        PixelOp::Brightness { ratio, one_minus } => {
            for plane in [&mut p.r, &mut p.g, &mut p.b] {
                for v in plane.iter_mut() {
                    *v = trunc_level(blend(*v, 0.0, ratio, one_minus));
                }
            }
        }
        PixelOp::Contrast { ratio, one_minus } => {
            for plane in [&mut p.r, &mut p.g, &mut p.b] {
                for v in plane.iter_mut() {
                    *v = trunc_level(blend(*v, mean, ratio, one_minus));
                }
            }
        }
        PixelOp::Saturation { ratio, one_minus } => {
            for i in 0..BLOCK {
                let (r, g, b) = (p.r[i], p.g[i], p.b[i]);
                let grey = trunc_level(luma_f(r, g, b));
                p.r[i] = trunc_level(blend(r, grey, ratio, one_minus));
                p.g[i] = trunc_level(blend(g, grey, ratio, one_minus));
                p.b[i] = trunc_level(blend(b, grey, ratio, one_minus));
            }
        }
        PixelOp::Hue { shift, sectors } => {
            // `PixelOp::hue` makes `sectors` lie in 0..6; a hand-built op may hold anything,
            // and the sector index must stay small for the unchecked conversions.
            let sectors = if (0.0..6.0).contains(&sectors) {
                sectors // the usual case: one compare per block, no libm call
            } else if sectors.is_finite() {
                sectors.rem_euclid(6.0)
            } else {
                0.0
            };
            let input = (p.r, p.g, p.b);
            let mut near = [0u32; BLOCK];
            for i in 0..BLOCK {
                let (r, g, b, n) = hue_pixel(p.r[i], p.g[i], p.b[i], sectors);
                p.r[i] = r;
                p.g[i] = g;
                p.b[i] = b;
                near[i] = n as u32;
            }
            // The few pixels whose middle channel lies at a truncation boundary take
            // torchvision's own float32 chain, so that its rounding decides them.
            if near.iter().sum::<u32>() > 0 {
                for i in 0..BLOCK {
                    if near[i] != 0 {
                        let (r, g, b) = hue_torchvision(input.0[i], input.1[i], input.2[i], shift);
                        p.r[i] = r;
                        p.g[i] = g;
                        p.b[i] = b;
                    }
                }
            }
        }
        PixelOp::Grayscale => {
            for i in 0..BLOCK {
                let grey = trunc_level(luma_f(p.r[i], p.g[i], p.b[i]));
                p.r[i] = grey;
                p.g[i] = grey;
                p.b[i] = grey;
            }
        }
    }
}

/// torchvision's `_rgb2hsv`, hue shift and `_hsv2rgb` for one pixel of integer levels,
/// truncated back to levels; `sectors` is the shift in sixths of a turn, in `0..6`. The
/// flag says the result may differ from torchvision's and must come from
/// [`hue_torchvision`].
///
/// torchvision divides its way to a hue in turns and multiplies back. In exact arithmetic
/// the value channel is `max`, the `p` channel is `min`, and the remaining channel is
/// `max - c·f` or `min + c·f`, where `c = max - min` and `f` is the fractional position in
/// the new hue sector. Kept in units of `c`, the hue is a small integer (`g - b`,
/// `2c + b - r` or `4c + r - g`), so the shift is one multiply-add and the only division
/// finds the sector, where torchvision's chain takes seven. `max` and `min` come out exact
/// (`x · 255.999 / 255` truncates to `x` for every level), so only the middle channel is
/// computed, and the sector table places it, `max` and `min` with selects. The result can
/// differ from torchvision's float32 chain only where that chain's rounding error (~2e-4
/// levels) straddles a truncation boundary of the middle channel; those pixels (within 2e-3
/// of a boundary) are flagged. Grey pixels (`c = 0`) are never flagged: torchvision returns
/// them unchanged, as this does. Checked over all 2^24 colours against `hue_torchvision` for
/// eleven shifts: identical. Branch-free so that a block vectorises.
///
/// # Safety
/// `r`, `g` and `b` must be levels (`0.0..256.0`): the sector index and the middle channel
/// are then in range for the unchecked conversions.
#[inline(always)]
unsafe fn hue_pixel(r: f32, g: f32, b: f32, sectors: f32) -> (f32, f32, f32, bool) {
    let maxc = fmax(fmax(r, g), b);
    let minc = fmin(fmin(r, g), b);
    let c = maxc - minc;
    let six = 6.0 * c;
    // torchvision's masks give red priority over green over blue on ties.
    let h = if maxc == r {
        g - b
    } else if maxc == g {
        2.0 * c + b - r
    } else {
        4.0 * c + r - g
    };
    let h = if h < 0.0 { h + six } else { h };
    let h = h + c * sectors;
    let h = if h >= six { h - six } else { h };
    // The sector (0..=5) and the offset into it, `c·f`. A sector off by a rounding at its
    // boundary gives the same colour: there the middle channel equals `max` or `min`.
    let sector = fmin(trunc_level(h / fmax(c, 1.0)), 5.0);
    let cf = fmin(fmax(h - sector * c, 0.0), c);
    // Odd sectors (1, 3, 5) fall from `max`, even ones rise from `min`.
    let odd = sector == 1.0 || sector == 3.0 || sector == 5.0;
    let mid = if odd { maxc - cf } else { minc + cf } * TO_U8_SCALE;
    let near = c > 0.0 && (mid - trunc_level(mid + 0.5)).abs() < 2e-3;
    let mid = trunc_level(mid);
    // torchvision's `_hsv2rgb` table: sector -> (r, g, b) as (v, t, p), (q, v, p), (p, v, t),
    // (p, q, v), (t, p, v), (v, p, q), with v = max, p = min and q, t the middle channel.
    let ro = if sector == 1.0 || sector == 4.0 {
        mid
    } else if sector == 2.0 || sector == 3.0 {
        minc
    } else {
        maxc
    };
    let go = if sector == 0.0 || sector == 3.0 {
        mid
    } else if sector >= 4.0 {
        minc
    } else {
        maxc
    };
    let bo = if sector == 2.0 || sector == 5.0 {
        mid
    } else if sector <= 1.0 {
        minc
    } else {
        maxc
    };
    (ro, go, bo, near)
}

/// torchvision `_rgb2hsv`, hue shift and `_hsv2rgb` for one pixel given as 0..=255 floats,
/// with torchvision's float32 operations in its order, truncated back to levels
/// (`convert_image_dtype`'s `x * 255.999`). The slow, exact path for flagged pixels.
#[inline(never)]
fn hue_torchvision(r: f32, g: f32, b: f32, shift: f32) -> (f32, f32, f32) {
    let (r, g, b) = (r / 255.0, g / 255.0, b / 255.0);
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let crd = if eqc { 1.0 } else { cr };
    let rc = (maxc - r) / crd;
    let gc = (maxc - g) / crd;
    let bc = (maxc - b) / crd;
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    // torch.fmod(h / 6 + 1, 1) (positive argument), then the Python-style `% 1.0`.
    let x = h / 6.0 + 1.0;
    let h = x - x.trunc();
    let y = h + shift;
    let h = y - y.floor();
    let h6 = h * 6.0;
    let i = h6.trunc();
    let f = h6 - i;
    let v = maxc;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    let (ro, go, bo) = match i as i32 % 6 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    (
        (ro * 255.999).trunc(),
        (go * 255.999).trunc(),
        (bo * 255.999).trunc(),
    )
}

/// torchvision `adjust_brightness`: blend with black.
pub fn adjust_brightness(buf: &mut [u8], factor: f64) {
    apply_ops(buf, &[PixelOp::brightness(factor)]);
}

/// torchvision `adjust_contrast`: blend with the mean of the (truncated) grey image.
pub fn adjust_contrast(buf: &mut [u8], factor: f64) {
    if buf.len() < 3 {
        return; // no pixel, no mean
    }
    apply_ops(buf, &[PixelOp::contrast(factor)]);
}

/// torchvision `adjust_saturation`: blend each pixel with its own (truncated) grey level.
pub fn adjust_saturation(buf: &mut [u8], factor: f64) {
    apply_ops(buf, &[PixelOp::saturation(factor)]);
}

/// torchvision `adjust_hue`: rotate the hue by `hue_factor` turns in HSV space, truncating
/// back to uint8 as `convert_image_dtype` does (see [`PixelOp::Hue`]).
pub fn adjust_hue(buf: &mut [u8], hue_factor: f64) {
    apply_ops(buf, &[PixelOp::hue(hue_factor)]);
}

/// torchvision `rgb_to_grayscale(img, 3)`: 601-2 luma, truncated, written to all channels.
pub fn grayscale(buf: &mut [u8]) {
    apply_ops(buf, &[PixelOp::Grayscale]);
}

/// torchvision `solarize`: invert every value `>= threshold` (DINO uses 128).
pub fn solarize(buf: &mut [u8], threshold: u8) {
    solarize_bytes(buf, threshold);
}

simd_dispatch!(
    /// A compare and a select per byte, which vectorises (a 256-entry table lookup does not).
    fn solarize_bytes(buf: &mut [u8], threshold: u8) => solarize_impl
);

#[inline(always)]
fn solarize_impl(buf: &mut [u8], threshold: u8) {
    for v in buf.iter_mut() {
        *v = if *v >= threshold { 255 - *v } else { *v };
    }
}

/// One colour-jitter op, for the per-application random order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterOp {
    Brightness,
    Contrast,
    Saturation,
    Hue,
}

/// One draw of torchvision `ColorJitter.get_params`: a random order of the four ops and
/// their factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterParams {
    pub order: [JitterOp; 4],
    /// `None` where the recipe disables the op (strength 0), as torchvision skips it.
    pub brightness: Option<f64>,
    pub contrast: Option<f64>,
    pub saturation: Option<f64>,
    pub hue: Option<f64>,
}

impl JitterParams {
    /// Factors uniform in `[max(0, 1 - s), 1 + s]` (hue in `[-h, h]`), order a uniform
    /// permutation, like `ColorJitter.get_params`.
    pub fn sample(rng: &mut Rng, cfg: &AugmentConfig) -> Self {
        let mut order = [
            JitterOp::Brightness,
            JitterOp::Contrast,
            JitterOp::Saturation,
            JitterOp::Hue,
        ];
        rng.shuffle(&mut order);
        let mut factor = |s: f64| {
            let f = rng.uniform((1.0 - s).max(0.0), 1.0 + s);
            (s > 0.0).then_some(f)
        };
        let brightness = factor(cfg.brightness);
        let contrast = factor(cfg.contrast);
        let saturation = factor(cfg.saturation);
        let h = rng.uniform(-cfg.hue, cfg.hue);
        let hue = (cfg.hue > 0.0).then_some(h);
        JitterParams {
            order,
            brightness,
            contrast,
            saturation,
            hue,
        }
    }

    /// Applies the enabled ops in `order`.
    pub fn apply(&self, buf: &mut [u8]) {
        let mut ops = OpList::default();
        self.push_ops(&mut ops);
        apply_ops(buf, ops.as_slice());
    }

    /// Appends the enabled ops in `order`, for a fused pass with what follows them.
    pub fn push_ops(&self, ops: &mut OpList) {
        for op in self.order {
            let pixel_op = match op {
                JitterOp::Brightness => self.brightness.map(PixelOp::brightness),
                JitterOp::Contrast => self.contrast.map(PixelOp::contrast),
                JitterOp::Saturation => self.saturation.map(PixelOp::saturation),
                JitterOp::Hue => self.hue.map(PixelOp::hue),
            };
            if let Some(p) = pixel_op {
                ops.push(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brightness_scales_and_clamps() {
        let mut v = vec![0, 100, 200];
        adjust_brightness(&mut v, 1.4);
        assert_eq!(v, vec![0, 140, 255]);
        let mut v = vec![255, 101];
        adjust_brightness(&mut v, 0.5);
        assert_eq!(v, vec![127, 50]); // truncation, like torch's float -> uint8 cast
    }

    #[test]
    fn contrast_pulls_towards_the_grey_mean() {
        let mut v = vec![0, 0, 0, 200, 200, 200];
        adjust_contrast(&mut v, 0.5);
        // Grey of (200, 200, 200) is trunc(199.98) = 199 with torchvision's weights (they sum
        // to 0.9999), so the mean is 99.5 and 0.5 * 200 + 0.5 * 99.5 truncates to 149.
        assert_eq!(v, vec![49, 49, 49, 149, 149, 149]);
    }

    #[test]
    fn saturation_zero_is_grayscale() {
        let mut a = vec![255, 0, 0, 10, 200, 30];
        let mut b = a.clone();
        adjust_saturation(&mut a, 0.0);
        grayscale(&mut b);
        assert_eq!(a, b);
        assert_eq!(&b[..3], &[76, 76, 76]); // 0.2989 * 255 = 76.2
    }

    #[test]
    fn hue_rotation_by_a_third_cycles_channels() {
        let mut v = vec![255, 0, 0, 0, 255, 0];
        adjust_hue(&mut v, 1.0 / 3.0);
        assert_eq!(v, vec![0, 255, 0, 0, 0, 255]);
        let mut grey = vec![77, 77, 77];
        adjust_hue(&mut grey, 0.3);
        assert_eq!(grey, vec![77, 77, 77]);
    }

    /// `adjust_hue` on `pixels` (the block kernel: fast path plus fallback) equals the float32
    /// torchvision chain, pixel for pixel, for every shift.
    fn assert_hue_matches_torchvision(pixels: &[u8], shifts: &[f64]) {
        for &shift in shifts {
            let mut ours = pixels.to_vec();
            adjust_hue(&mut ours, shift);
            for (p, o) in pixels.chunks(3).zip(ours.chunks(3)) {
                let (r, g, b) =
                    hue_torchvision(p[0] as f32, p[1] as f32, p[2] as f32, shift as f32);
                assert_eq!(o, [r as u8, g as u8, b as u8], "{p:?} shift {shift}");
            }
        }
    }

    #[test]
    fn fast_hue_equals_torchvisions_float_chain() {
        // Every 3rd level per channel (~600k colours), several shifts, through the block
        // kernel (fast path plus the fallback) against the float32 chain pixel by pixel.
        let buf: Vec<u8> = (0..=255u8)
            .step_by(3)
            .flat_map(|r| {
                (0..=255u8)
                    .step_by(3)
                    .flat_map(move |g| (0..=255u8).step_by(3).flat_map(move |b| [r, g, b]))
            })
            .collect();
        assert_hue_matches_torchvision(&buf, &[-0.1, -0.08, -0.0371, 0.013, 0.04, 0.0999, 0.5]);
    }

    /// The claim in [`hue_pixel`]'s doc: every one of the 2^24 colours, eleven shifts.
    /// About a minute in release mode: `cargo test --release --lib -- --ignored all_colours`.
    #[test]
    #[ignore]
    fn fast_hue_equals_torchvision_on_all_colours() {
        let all: Vec<u8> = (0..1u32 << 24)
            .flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, c as u8])
            .collect();
        assert_hue_matches_torchvision(
            &all,
            &[
                -0.5, -0.1, -0.0731, -0.05, -0.013, 0.0, 0.0017, 0.033, 0.07, 0.0999, 0.25,
            ],
        );
    }

    #[test]
    fn fused_chain_equals_ops_one_by_one() {
        let img: Vec<u8> = (0..97 * 13 * 3).map(|i| ((i * 7919) % 256) as u8).collect();
        let ops = [
            PixelOp::saturation(1.17),
            PixelOp::contrast(0.72),
            PixelOp::hue(-0.08),
            PixelOp::brightness(1.31),
            PixelOp::contrast(1.2),
            PixelOp::Grayscale,
        ];
        let mut fused = img.clone();
        apply_ops(&mut fused, &ops);
        let mut single = img.clone();
        for op in &ops {
            apply_ops(&mut single, std::slice::from_ref(op));
        }
        assert_eq!(fused, single);
    }

    #[test]
    fn hand_built_hue_ops_with_any_sector_value_stay_in_range() {
        // The public fields let a caller build a hue op `PixelOp::hue` would never make; the
        // kernel folds the sector count into 0..6 (non-finite: no rotation) instead of
        // converting an out-of-range float.
        let img: Vec<u8> = (0..64 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let by = |sectors: f32| {
            let mut v = img.clone();
            apply_ops(
                &mut v,
                &[PixelOp::Hue {
                    shift: 0.0,
                    sectors,
                }],
            );
            v
        };
        assert_eq!(by(f32::NAN), img);
        assert_eq!(by(f32::INFINITY), img);
        assert_eq!(by(6.0 + 1.5), by(1.5));
        assert_eq!(by(-4.5), by(1.5));
        assert_eq!(by(1e30), by(1e30f32.rem_euclid(6.0)));
    }

    #[test]
    fn solarize_inverts_from_the_threshold() {
        let mut v = vec![0, 127, 128, 255];
        solarize(&mut v, 128);
        assert_eq!(v, vec![0, 127, 127, 0]);
    }

    #[test]
    fn jitter_params_follow_the_config_ranges() {
        let cfg = AugmentConfig::default();
        let mut rng = Rng::new(5);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..500 {
            let p = JitterParams::sample(&mut rng, &cfg);
            assert!((0.6..1.4).contains(&p.brightness.unwrap()));
            assert!((0.6..1.4).contains(&p.contrast.unwrap()));
            assert!((0.8..1.2).contains(&p.saturation.unwrap()));
            assert!((-0.1..0.1).contains(&p.hue.unwrap()));
            orders.insert(format!("{:?}", p.order));
        }
        assert_eq!(orders.len(), 24, "every permutation of the four ops occurs");
        let off = AugmentConfig { hue: 0.0, ..cfg };
        assert_eq!(JitterParams::sample(&mut rng, &off).hue, None);
    }
}
