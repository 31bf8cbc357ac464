//! Photometric ops on packed RGB8: colour jitter, grayscale and solarize.
//!
//! Each op reproduces torchvision's tensor kernels on uint8 images
//! (`torchvision.transforms.functional`), including their float32 arithmetic and their
//! truncating casts back to uint8, so a reference test can demand agreement to one level.
//! Ops that are per-channel affine maps (brightness, contrast, solarize) are 256-entry
//! lookup tables; the per-pixel ones (saturation, hue, grayscale) are straight loops over
//! `chunks_exact(3)` with no allocation.

use super::simd::{avx2_dispatch, floor_fast, trunc_pos, Planes, BLOCK};
use super::AugmentConfig;
use crate::rng::Rng;

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
/// clamped; the caller's u8 cast truncates as torch's float -> uint8 cast does.
#[inline(always)]
fn blend(x: f32, other: f32, ratio: f32, one_minus: f32) -> f32 {
    (ratio * x + one_minus * other).clamp(0.0, 255.0)
}

fn apply_lut(buf: &mut [u8], lut: &[u8; 256]) {
    for v in buf.iter_mut() {
        *v = lut[*v as usize];
    }
}

fn affine_lut(ratio: f64, other: f32) -> [u8; 256] {
    let (r, om) = (ratio as f32, (1.0 - ratio) as f32);
    std::array::from_fn(|x| blend(x as f32, other, r, om) as u8)
}

/// torchvision `adjust_brightness`: blend with black.
pub fn adjust_brightness(buf: &mut [u8], factor: f64) {
    apply_lut(buf, &affine_lut(factor, 0.0));
}

/// torchvision `adjust_contrast`: blend with the mean of the (truncated) grey image.
pub fn adjust_contrast(buf: &mut [u8], factor: f64) {
    let pixels = buf.len() / 3;
    if pixels == 0 {
        return;
    }
    let mean = (luma_sum(buf) as f64 / pixels as f64) as f32;
    apply_lut(buf, &affine_lut(factor, mean));
}

#[inline(always)]
fn luma_sum_impl(buf: &[u8]) -> u64 {
    let mut planes = Planes::new();
    let mut total = 0u64;
    for px in buf.chunks(BLOCK * 3) {
        planes.load(px);
        let n = px.len() / 3;
        // Exact in f32: at most BLOCK * 255 < 2^24.
        let mut sum = 0.0f32;
        for i in 0..n {
            sum += trunc_pos(luma_f(planes.r[i], planes.g[i], planes.b[i]));
        }
        total += sum as u64;
    }
    total
}

avx2_dispatch!(
    /// Sum of the truncated grey levels of all pixels.
    fn luma_sum(buf: &[u8]) -> u64 => luma_sum_impl
);

#[inline(always)]
fn saturation_impl(buf: &mut [u8], ratio: f32, one_minus: f32) {
    let mut planes = Planes::new();
    for px in buf.chunks_mut(BLOCK * 3) {
        planes.load(px);
        for i in 0..BLOCK {
            let (r, g, b) = (planes.r[i], planes.g[i], planes.b[i]);
            let grey = trunc_pos(luma_f(r, g, b));
            planes.r[i] = blend(r, grey, ratio, one_minus);
            planes.g[i] = blend(g, grey, ratio, one_minus);
            planes.b[i] = blend(b, grey, ratio, one_minus);
        }
        planes.store(px);
    }
}

avx2_dispatch!(fn saturation_kernel(buf: &mut [u8], ratio: f32, one_minus: f32) => saturation_impl);

/// torchvision `adjust_saturation`: blend each pixel with its own (truncated) grey level.
pub fn adjust_saturation(buf: &mut [u8], factor: f64) {
    saturation_kernel(buf, factor as f32, (1.0 - factor) as f32);
}

#[inline(always)]
fn grayscale_impl(buf: &mut [u8]) {
    let mut planes = Planes::new();
    for px in buf.chunks_mut(BLOCK * 3) {
        planes.load(px);
        for i in 0..BLOCK {
            let grey = luma_f(planes.r[i], planes.g[i], planes.b[i]);
            planes.r[i] = grey;
            planes.g[i] = grey;
            planes.b[i] = grey;
        }
        planes.store(px);
    }
}

avx2_dispatch!(
    /// torchvision `rgb_to_grayscale(img, 3)`: 601-2 luma, truncated, written to all channels.
    pub fn grayscale(buf: &mut [u8]) => grayscale_impl
);

/// torchvision `solarize`: invert every value `>= threshold` (DINO uses 128).
pub fn solarize(buf: &mut [u8], threshold: u8) {
    let lut: [u8; 256] = std::array::from_fn(|x| {
        if x as u8 >= threshold {
            255 - x as u8
        } else {
            x as u8
        }
    });
    apply_lut(buf, &lut);
}

/// torchvision `_rgb2hsv`, hue shift and `_hsv2rgb` for one pixel given as 0..=255 floats;
/// returns the channels scaled by 255.999 (`convert_image_dtype`), to be truncated.
///
/// Branch-free (every candidate computed, then selected) so that a block of pixels
/// vectorises; the float operations and their order are torchvision's, so results match it.
#[inline(always)]
fn hue_pixel(r: f32, g: f32, b: f32, shift: f32) -> (f32, f32, f32) {
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
    let hr = bc - gc;
    let hg = 2.0 + rc - bc;
    let hb = 4.0 + gc - rc;
    let h = if maxc == r {
        hr
    } else if maxc == g {
        hg
    } else {
        hb
    };
    // torch.fmod(h / 6 + 1, 1): the argument is positive, so fmod is x - trunc(x).
    let x = h / 6.0 + 1.0;
    let h = x - trunc_pos(x);
    // (h + shift) % 1.0, Python/torch remainder: sign of the divisor.
    let y = h + shift;
    let h = y - floor_fast(y);
    // _hsv2rgb
    let h6 = h * 6.0;
    let i = trunc_pos(h6);
    let f = h6 - i;
    let v = maxc;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    let i = if i >= 6.0 { i - 6.0 } else { i };
    // Sector table: 0 (v,t,p) 1 (q,v,p) 2 (p,v,t) 3 (p,q,v) 4 (t,p,v) 5 (v,p,q).
    let ro = if i == 0.0 || i == 5.0 {
        v
    } else if i == 1.0 {
        q
    } else if i == 4.0 {
        t
    } else {
        p
    };
    let go = if i == 1.0 || i == 2.0 {
        v
    } else if i == 0.0 {
        t
    } else if i == 3.0 {
        q
    } else {
        p
    };
    let bo = if i == 3.0 || i == 4.0 {
        v
    } else if i == 2.0 {
        t
    } else if i == 5.0 {
        q
    } else {
        p
    };
    (ro * 255.999, go * 255.999, bo * 255.999)
}

#[inline(always)]
fn hue_impl(buf: &mut [u8], shift: f32) {
    let mut planes = Planes::new();
    for px in buf.chunks_mut(BLOCK * 3) {
        planes.load(px);
        for i in 0..BLOCK {
            let (r, g, b) = hue_pixel(planes.r[i], planes.g[i], planes.b[i], shift);
            planes.r[i] = r;
            planes.g[i] = g;
            planes.b[i] = b;
        }
        planes.store(px);
    }
}

avx2_dispatch!(fn hue_kernel(buf: &mut [u8], shift: f32) => hue_impl);

/// torchvision `adjust_hue`: rotate the hue by `hue_factor` turns in HSV space, using the
/// float32 `_rgb2hsv` / `_hsv2rgb` formulas and `convert_image_dtype`'s `x * 255.999`
/// truncation back to uint8.
pub fn adjust_hue(buf: &mut [u8], hue_factor: f64) {
    hue_kernel(buf, hue_factor as f32);
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
        for op in self.order {
            match op {
                JitterOp::Brightness => self.brightness.map(|f| adjust_brightness(buf, f)),
                JitterOp::Contrast => self.contrast.map(|f| adjust_contrast(buf, f)),
                JitterOp::Saturation => self.saturation.map(|f| adjust_saturation(buf, f)),
                JitterOp::Hue => self.hue.map(|f| adjust_hue(buf, f)),
            };
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
