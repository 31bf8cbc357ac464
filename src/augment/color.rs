//! Photometric ops on packed RGB8: colour jitter, grayscale and solarize.
//!
//! Each op reproduces torchvision's tensor kernels on uint8 images
//! (`torchvision.transforms.functional`), including their float32 arithmetic and their
//! truncating casts back to uint8, so a reference test can demand agreement to one level.
//! Ops that are per-channel affine maps (brightness, contrast, solarize) are 256-entry
//! lookup tables; the per-pixel ones (saturation, hue, grayscale) are straight loops over
//! `chunks_exact(3)` with no allocation.

use super::AugmentConfig;
use crate::rng::Rng;

/// ITU-R 601-2 luma weights as torchvision's tensor kernels write them (0.2989 for 601-2's
/// 0.299 red, a constant inherited from TensorFlow). Using torchvision's exact constant keeps
/// the ops bit-identical to the reference: with 0.299 a truncated grey level moves on ~2% of
/// pixels, and a hue rotation of a near-grey pixel amplifies that one level into several.
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// The truncated 601-2 grey level of one pixel, as torchvision's `rgb_to_grayscale` on uint8.
#[inline(always)]
fn luma(p: &[u8]) -> u8 {
    (LUMA[0] * p[0] as f32 + LUMA[1] * p[1] as f32 + LUMA[2] * p[2] as f32) as u8
}

/// torchvision `_blend(img, other, ratio)` for one value: `ratio*x + (1-ratio)*other`, clamped
/// and truncated to uint8 (float-to-uint8 casts truncate in torch).
#[inline(always)]
fn blend(x: f32, other: f32, ratio: f32, one_minus: f32) -> u8 {
    (ratio * x + one_minus * other).clamp(0.0, 255.0) as u8
}

fn apply_lut(buf: &mut [u8], lut: &[u8; 256]) {
    for v in buf.iter_mut() {
        *v = lut[*v as usize];
    }
}

/// torchvision `adjust_brightness`: blend with black.
pub fn adjust_brightness(buf: &mut [u8], factor: f64) {
    let (r, om) = (factor as f32, (1.0 - factor) as f32);
    let lut: [u8; 256] = std::array::from_fn(|x| blend(x as f32, 0.0, r, om));
    apply_lut(buf, &lut);
}

/// torchvision `adjust_contrast`: blend with the mean of the (truncated) grey image.
pub fn adjust_contrast(buf: &mut [u8], factor: f64) {
    let pixels = buf.len() / 3;
    if pixels == 0 {
        return;
    }
    let sum: u64 = buf.chunks_exact(3).map(|p| luma(p) as u64).sum();
    let mean = (sum as f64 / pixels as f64) as f32;
    let (r, om) = (factor as f32, (1.0 - factor) as f32);
    let lut: [u8; 256] = std::array::from_fn(|x| blend(x as f32, mean, r, om));
    apply_lut(buf, &lut);
}

/// torchvision `adjust_saturation`: blend each pixel with its own (truncated) grey level.
pub fn adjust_saturation(buf: &mut [u8], factor: f64) {
    let (r, om) = (factor as f32, (1.0 - factor) as f32);
    for p in buf.chunks_exact_mut(3) {
        let g = luma(p) as f32;
        p[0] = blend(p[0] as f32, g, r, om);
        p[1] = blend(p[1] as f32, g, r, om);
        p[2] = blend(p[2] as f32, g, r, om);
    }
}

/// torchvision `rgb_to_grayscale(img, 3)`: 601-2 luma, truncated, written to all channels.
pub fn grayscale(buf: &mut [u8]) {
    for p in buf.chunks_exact_mut(3) {
        let g = luma(p);
        p.fill(g);
    }
}

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

/// torchvision `adjust_hue`: rotate the hue by `hue_factor` turns in HSV space, using the
/// float32 `_rgb2hsv` / `_hsv2rgb` formulas and `convert_image_dtype`'s `x * 255.999`
/// truncation back to uint8.
pub fn adjust_hue(buf: &mut [u8], hue_factor: f64) {
    let shift = hue_factor as f32;
    // uint8 -> float as torchvision: x / 255 in float32.
    let unit: [f32; 256] = std::array::from_fn(|x| x as f32 / 255.0);
    for p in buf.chunks_exact_mut(3) {
        let (r, g, b) = (
            unit[p[0] as usize],
            unit[p[1] as usize],
            unit[p[2] as usize],
        );
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
        let h = fmod1(h / 6.0 + 1.0);
        let h = rem1(h + shift);
        let (r, g, b) = hsv2rgb(h, s, maxc);
        p[0] = (r * 255.999) as u8;
        p[1] = (g * 255.999) as u8;
        p[2] = (b * 255.999) as u8;
    }
}

/// `torch.fmod(x, 1.0)` (sign of the dividend).
#[inline(always)]
fn fmod1(x: f32) -> f32 {
    x - x.trunc()
}

/// `torch.remainder(x, 1.0)` / Python `%` (sign of the divisor).
#[inline(always)]
fn rem1(x: f32) -> f32 {
    x - x.floor()
}

/// torchvision `_hsv2rgb` for one pixel.
#[inline(always)]
fn hsv2rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
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
        assert_eq!(v, vec![50, 50, 50, 150, 150, 150]);
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
