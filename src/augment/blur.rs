//! Gaussian blur with torchvision `gaussian_blur` semantics, as two separable passes.
//!
//! torchvision builds a `k × k` kernel from a float32 1-D Gaussian sampled at
//! `linspace(-(k-1)/2, (k-1)/2, k)`, reflect-pads by `k / 2` and convolves in float32, then
//! rounds to uint8. The 2-D kernel is an outer product, so a horizontal then a vertical 1-D
//! pass give the same result (to float rounding) at `2k` instead of `k²` multiplies per value:
//! the cost grows linearly with sigma. Kernel size follows the recipe, `2·ceil(3σ) + 1`.
//! Both passes run over contiguous float rows so they auto-vectorise; the scratch rows live in
//! the [`GaussianBlur`] value and are reused.

use crate::simd::{fmax, fmin, level_to_i32, round_even_pos, simd_dispatch};

/// Kernel size used for a sigma: `2 * ceil(3 * sigma) + 1` (odd, covers ±3σ).
pub fn blur_kernel_size(sigma: f64) -> usize {
    2 * (3.0 * sigma).ceil().max(0.0) as usize + 1
}

/// torchvision `_get_gaussian_kernel1d(k, sigma)` in float32.
pub fn gaussian_kernel1d(k: usize, sigma: f64) -> Vec<f32> {
    let half = (k as f32 - 1.0) * 0.5;
    let sigma = sigma as f32;
    let step = if k > 1 {
        2.0 * half / (k as f32 - 1.0)
    } else {
        0.0
    };
    let pdf: Vec<f32> = (0..k)
        .map(|i| {
            let x = -half + step * i as f32;
            (-0.5 * (x / sigma).powi(2)).exp()
        })
        .collect();
    let sum: f32 = pdf.iter().sum();
    pdf.into_iter().map(|p| p / sum).collect()
}

/// Reflect-mode index (edge pixel not repeated), extended periodically so that a pad wider
/// than the image (a 4-pixel crop with sigma 2) still has an answer instead of panicking.
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// A reusable separable Gaussian blur for packed RGB8 images.
#[derive(Default)]
pub struct GaussianBlur {
    /// One reflect-padded source row as floats.
    row: Vec<f32>,
    /// The horizontally blurred image, `h × w × 3` floats.
    horiz: Vec<f32>,
    /// Offsets into `horiz` of the (reflected) source rows of one output row.
    taps: Vec<usize>,
}

impl GaussianBlur {
    pub fn new() -> Self {
        Self::default()
    }

    /// Blurs `buf` (packed RGB8, `width × height`) in place with a Gaussian of `sigma`.
    pub fn apply(&mut self, buf: &mut [u8], width: u32, height: u32, sigma: f64) {
        let k = blur_kernel_size(sigma);
        let kernel = gaussian_kernel1d(k, sigma);
        self.apply_kernel(buf, width, height, &kernel);
    }

    /// Blurs with an explicit odd, symmetric 1-D kernel, applied along both axes.
    pub fn apply_kernel(&mut self, buf: &mut [u8], width: u32, height: u32, kernel: &[f32]) {
        let (w, h) = (width as usize, height as usize);
        let k = kernel.len();
        assert!(k % 2 == 1, "kernel size must be odd");
        assert!(
            (0..k / 2).all(|j| kernel[j] == kernel[k - 1 - j]),
            "kernel must be symmetric"
        );
        assert_eq!(buf.len(), w * h * 3, "RGB8 buffer size");
        if w == 0 || h == 0 {
            return;
        }
        self.row.resize((w + k - 1) * 3, 0.0);
        self.horiz.resize(h * w * 3, 0.0);
        self.taps.resize(k, 0);
        blur_kernel(
            buf,
            w,
            h,
            kernel,
            &mut self.row,
            &mut self.horiz,
            &mut self.taps,
        );
    }
}

simd_dispatch!(
    fn blur_kernel(
        buf: &mut [u8],
        w: usize,
        h: usize,
        kernel: &[f32],
        row: &mut [f32],
        horiz: &mut [f32],
        taps: &mut [usize],
    ) => blur_impl
);

/// Outputs computed together, kept in registers across all taps (4 AVX vectors).
const LANES: usize = 32;

/// Both passes. Only the `k/2` pixels at each end of a row need the reflect index; the
/// interior is a straight u8 -> f32 conversion. Each pass works on runs of [`LANES`]
/// consecutive floats (all three channels at once; tap `j` is the row shifted by `3j`, or the
/// `j`-th source row), summing every tap into registers before one store: a loop per tap
/// over the whole row would load and store the accumulators once per tap. The kernel is
/// exactly symmetric (torchvision samples it at `-h..=h` in unit steps), so taps `j` and
/// `k-1-j` share one multiply: `k/2 + 1` multiplies per value instead of `k`. That moves float
/// rounding at the 1e-5 level only; the reference test bounds the result against torchvision.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn blur_impl(
    buf: &mut [u8],
    w: usize,
    h: usize,
    kernel: &[f32],
    row: &mut [f32],
    horiz: &mut [f32],
    taps: &mut [usize],
) {
    let k = kernel.len();
    let r = k / 2;
    let rw = w * 3;
    let full = rw - rw % LANES;
    for (src, out) in buf.chunks_exact(rw).zip(horiz.chunks_exact_mut(rw)) {
        for xp in (0..r).chain(r + w..w + 2 * r) {
            let sx = reflect(xp as isize - r as isize, w) * 3;
            row[xp * 3..xp * 3 + 3].copy_from_slice(&[
                src[sx] as f32,
                src[sx + 1] as f32,
                src[sx + 2] as f32,
            ]);
        }
        for (d, &s) in row[r * 3..r * 3 + rw].iter_mut().zip(src) {
            *d = s as f32;
        }
        for x in (0..full).step_by(LANES) {
            let mut acc = [0.0f32; LANES];
            let centre = &row[x + 3 * r..x + 3 * r + LANES];
            for i in 0..LANES {
                acc[i] = kernel[r] * centre[i];
            }
            for j in 0..r {
                let a = &row[x + 3 * j..x + 3 * j + LANES];
                let b = &row[x + 3 * (k - 1 - j)..x + 3 * (k - 1 - j) + LANES];
                for i in 0..LANES {
                    acc[i] += kernel[j] * (a[i] + b[i]);
                }
            }
            out[x..x + LANES].copy_from_slice(&acc);
        }
        for x in full..rw {
            let mut a = kernel[r] * row[x + 3 * r];
            for j in 0..r {
                a += kernel[j] * (row[x + 3 * j] + row[x + 3 * (k - 1 - j)]);
            }
            out[x] = a;
        }
    }
    // torch.round (half to even), then the cast; sums of a normalised kernel over 0..=255
    // stay in 0..=255 up to float error, which the clamp absorbs.
    // SAFETY: the clamp (which also sends a NaN to 0) leaves a level in 0.0..=255.0.
    let to_u8 = |a: f32| unsafe { level_to_i32(round_even_pos(fmin(fmax(a, 0.0), 255.0))) } as u8;
    for (y, dst) in buf.chunks_exact_mut(rw).enumerate() {
        for (j, t) in taps.iter_mut().enumerate() {
            *t = reflect(y as isize + j as isize - r as isize, h) * rw;
        }
        for x in (0..full).step_by(LANES) {
            let mut acc = [0.0f32; LANES];
            let centre = &horiz[taps[r] + x..taps[r] + x + LANES];
            for i in 0..LANES {
                acc[i] = kernel[r] * centre[i];
            }
            for j in 0..r {
                let a = &horiz[taps[j] + x..taps[j] + x + LANES];
                let b = &horiz[taps[k - 1 - j] + x..taps[k - 1 - j] + x + LANES];
                for i in 0..LANES {
                    acc[i] += kernel[j] * (a[i] + b[i]);
                }
            }
            // Through a fixed-size array: a loop storing into `dst` directly keeps a scalar
            // remainder that LLVM runs for much of the row.
            let mut bytes = [0u8; LANES];
            for i in 0..LANES {
                bytes[i] = to_u8(acc[i]);
            }
            dst[x..x + LANES].copy_from_slice(&bytes);
        }
        for x in full..rw {
            let mut a = kernel[r] * horiz[taps[r] + x];
            for j in 0..r {
                a += kernel[j] * (horiz[taps[j] + x] + horiz[taps[k - 1 - j] + x]);
            }
            dst[x] = to_u8(a);
        }
    }
}

/// torchvision `gaussian_blur(img, [k, k], [sigma, sigma])` with `k = blur_kernel_size(sigma)`,
/// from `src` into `dst` (both packed RGB8 `width × height`).
pub fn gaussian_blur(src: &[u8], width: u32, height: u32, sigma: f64, dst: &mut [u8]) {
    dst.copy_from_slice(src);
    GaussianBlur::new().apply(dst, width, height, sigma);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sizes_follow_three_sigma() {
        assert_eq!(blur_kernel_size(0.1), 3);
        assert_eq!(blur_kernel_size(0.5), 5);
        assert_eq!(blur_kernel_size(1.0), 7);
        assert_eq!(blur_kernel_size(2.0), 13);
    }

    #[test]
    fn kernel_is_normalised_and_symmetric() {
        let k = gaussian_kernel1d(13, 2.0);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for i in 0..13 {
            assert!((k[i] - k[12 - i]).abs() < 1e-7);
        }
        assert!(k[6] > k[5] && k[5] > k[4]);
    }

    #[test]
    fn reflect_matches_numpy_reflect_and_extends() {
        let got: Vec<usize> = (-3..8).map(|i| reflect(i, 5)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(reflect(-7, 2), 1);
        assert_eq!(reflect(9, 1), 0);
    }

    #[test]
    fn flat_images_stay_flat_and_tiny_images_work() {
        let mut v = [17u8, 130, 250].repeat(9 * 4);
        GaussianBlur::new().apply(&mut v, 9, 4, 2.0);
        assert!(v.chunks(3).all(|p| p == [17, 130, 250]));
        let mut t = vec![0u8, 255, 0, 255, 0, 255];
        GaussianBlur::new().apply(&mut t, 2, 1, 2.0);
        let mut one = vec![5u8, 6, 7];
        GaussianBlur::new().apply(&mut one, 1, 1, 1.0);
        assert_eq!(one, vec![5, 6, 7]);
    }

    #[test]
    fn blur_preserves_mass_of_an_impulse() {
        let (w, h) = (21u32, 21u32);
        let mut v = vec![0u8; (w * h * 3) as usize];
        let c = ((10 * w + 10) * 3) as usize;
        v[c] = 255;
        GaussianBlur::new().apply(&mut v, w, h, 1.0);
        let red: u32 = v.iter().step_by(3).map(|&x| x as u32).sum();
        assert!((245..=265).contains(&red), "mass {red}");
        assert!(v[c] < 255 && v[c] > 20 && v[c + 3] > 0);
        assert_eq!(v[c + 1], 0, "channels do not mix");
    }
}
