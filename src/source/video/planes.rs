//! The fast path from a decoded 8-bit YUV picture to a downscaled RGB8 frame, for the common
//! case (4:2:0 or 4:4:4, scaled to at most the chroma plane's size: 1080p or 4K to 512).
//!
//! FFmpeg's scaler spent about 2.4 ms of CPU per 1080p frame going to 512x288 RGB (area
//! filter), 60% of what decoding the frame cost on the benchmark file. Here the planes are
//! first halved with an exact 2x2 mean (luma once more than chroma for 4:2:0, so all three land
//! on the chroma grid; 4K is halved again while the result stays at least the target), the
//! three grid planes are interleaved into one small YUV image (a plane that needs no halving is
//! read in place, through its stride, never copied), that image is resized once by
//! fast_image_resize's SIMD box convolution to the working size, and only then converted to
//! RGB: the colour conversion runs on the output pixels only (147k for 512x288, not 2M).
//! Resizing the three planes separately instead costs more: fast_image_resize's one-channel
//! horizontal pass took 3.3x the three-channel one's time for the same bytes (perf, 1080p to
//! 512x288). The matrix follows the frame's tags (BT.709, BT.2020, else BT.601 as FFmpeg
//! assumes for untagged video; full range for `yuvj*` or a JPEG-range tag, else limited),
//! rounding to nearest.
//!
//! The halving, the interleave and the conversion were a quarter of a 1080p frame's CPU while
//! they ran as baseline x86-64 code: the halving now has SSE2 and AVX2 kernels, the interleave
//! and the conversion AVX-512 and AVX2 copies through `simd_dispatch!` (byte shuffles for the
//! stride-3 loads and stores); every copy gives the same bytes.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use ffmpeg::color;
use ffmpeg::format::Pixel;
use ffmpeg::util::frame::video::Video;
use ffmpeg_next as ffmpeg;

use crate::frame::Frame;
use crate::simd::{simd_dispatch, BLOCK};

/// Downscales one input geometry (format, size) to one output size.
pub struct PlaneScaler {
    /// The luma plane's halvings, and the chroma planes'.
    luma_halvings: u32,
    chroma_halvings: u32,
    /// The common grid the halved planes land on.
    grid: (usize, usize),
    /// The working size.
    out: (usize, usize),
    full_range_format: bool,
    resizer: Resizer,
    options: ResizeOptions,
    /// Each plane halved onto the grid (unused for a plane that needs no halving).
    halved: [Vec<u8>; 3],
    spare: Vec<u8>,
    /// The grid planes interleaved, 3 bytes a pixel.
    packed: Vec<u8>,
    /// That image at the working size.
    resized: Image<'static>,
}

/// `n` halvings of a length (each rounds up, as FFmpeg's chroma sizes do).
fn halved(v: usize, n: u32) -> usize {
    (0..n).fold(v, |v, _| v.div_ceil(2))
}

/// A plane as rows `stride` bytes apart.
#[derive(Clone, Copy)]
struct PlaneRef<'a> {
    data: &'a [u8],
    stride: usize,
}

impl<'a> PlaneRef<'a> {
    fn row(self, y: usize, w: usize) -> &'a [u8] {
        &self.data[y * self.stride..y * self.stride + w]
    }
}

impl PlaneScaler {
    /// A scaler for `fmt` `w`x`h` pictures to `dw`x`dh`, or None when this path does not cover
    /// it (other formats, 4:2:2, more than 8 bits, or a target larger than the chroma plane):
    /// FFmpeg's scaler does those.
    pub fn new(fmt: Pixel, w: u32, h: u32, dw: u32, dh: u32) -> Option<Self> {
        let (sub, full_range_format) = match fmt {
            Pixel::YUV420P => (1, false),
            Pixel::YUVJ420P => (1, true),
            Pixel::YUV444P => (0, false),
            Pixel::YUVJ444P => (0, true),
            _ => return None,
        };
        let (w, h, dw, dh) = (w as usize, h as usize, dw as usize, dh as usize);
        let (cw, ch) = (halved(w, sub), halved(h, sub));
        if dw > cw || dh > ch || dw == 0 || dh == 0 {
            return None;
        }
        // Halve the chroma grid while it stays at least the target: the box resize that
        // follows then shrinks by less than 2.
        let mut chroma_halvings = 0;
        while halved(cw, chroma_halvings + 1) >= dw && halved(ch, chroma_halvings + 1) >= dh {
            chroma_halvings += 1;
        }
        let grid = (halved(cw, chroma_halvings), halved(ch, chroma_halvings));
        Some(PlaneScaler {
            luma_halvings: chroma_halvings + sub,
            chroma_halvings,
            grid,
            out: (dw, dh),
            full_range_format,
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Box)),
            halved: Default::default(),
            spare: Vec::new(),
            packed: Vec::new(),
            resized: Image::new(dw as u32, dh as u32, PixelType::U8x3),
        })
    }

    /// The picture as packed RGB8 at the working size.
    pub fn convert(&mut self, decoded: &Video) -> Result<Frame, String> {
        let (w, h) = (decoded.width() as usize, decoded.height() as usize);
        let (gw, gh) = self.grid;
        let (dw, dh) = self.out;
        // Every plane onto the grid.
        for p in 0..3 {
            let (n, pw, ph) = if p == 0 {
                (self.luma_halvings, w, h)
            } else {
                let sub = self.luma_halvings - self.chroma_halvings;
                (self.chroma_halvings, halved(w, sub), halved(h, sub))
            };
            let (mut cur_w, mut cur_h) = (pw, ph);
            let mut out = std::mem::take(&mut self.halved[p]);
            for i in 0..n {
                if i == 0 {
                    halve(decoded.data(p), decoded.stride(p), cur_w, cur_h, &mut out);
                } else {
                    std::mem::swap(&mut out, &mut self.spare);
                    halve(&self.spare, cur_w, cur_w, cur_h, &mut out);
                }
                (cur_w, cur_h) = (cur_w.div_ceil(2), cur_h.div_ceil(2));
            }
            self.halved[p] = out;
            if (cur_w, cur_h) != (gw, gh) {
                return Err(format!(
                    "plane {p} of a {w}x{h} picture came to {cur_w}x{cur_h}, not {gw}x{gh}"
                ));
            }
        }
        let on_grid: [PlaneRef; 3] = std::array::from_fn(|p| {
            let n = if p == 0 {
                self.luma_halvings
            } else {
                self.chroma_halvings
            };
            if n == 0 {
                PlaneRef {
                    data: decoded.data(p),
                    stride: decoded.stride(p),
                }
            } else {
                PlaneRef {
                    data: &self.halved[p],
                    stride: gw,
                }
            }
        });
        self.packed.resize(gw * gh * 3, 0);
        for (y, out) in self.packed.chunks_exact_mut(gw * 3).enumerate() {
            let [a, b, c] = on_grid.map(|plane| plane.row(y, gw));
            interleave(a, b, c, out);
        }
        let yuv: &[u8] = if (gw, gh) == (dw, dh) {
            &self.packed
        } else {
            let src = ImageRef::new(gw as u32, gh as u32, &self.packed, PixelType::U8x3)
                .map_err(|e| format!("resizing: {e}"))?;
            self.resizer
                .resize(&src, &mut self.resized, &self.options)
                .map_err(|e| format!("resizing: {e}"))?;
            self.resized.buffer()
        };
        let full = self.full_range_format || decoded.color_range() == color::Range::JPEG;
        let m = Matrix::new(decoded.color_space(), full);
        let mut rgb = vec![0u8; yuv.len()];
        yuv_to_rgb(&m, yuv, &mut rgb);
        Ok(Frame::from_rgb(dw as u32, dh as u32, rgb))
    }
}

/// The exact mean of each 2x2 block (rounded), packed; an odd last row or column is averaged
/// with itself.
pub fn halve(src: &[u8], stride: usize, w: usize, h: usize, out: &mut Vec<u8>) {
    let (ow, oh) = (w.div_ceil(2), h.div_ceil(2));
    out.resize(ow * oh, 0);
    let full = w / 2;
    for y in 0..oh {
        let r0 = &src[2 * y * stride..2 * y * stride + w];
        let y1 = (2 * y + 1).min(h - 1);
        let r1 = &src[y1 * stride..y1 * stride + w];
        let o = &mut out[y * ow..(y + 1) * ow];
        halve_pairs(&r0[..2 * full], &r1[..2 * full], &mut o[..full]);
        if ow > full {
            let s = 2 * (r0[w - 1] as u16 + r1[w - 1] as u16);
            o[full] = ((s + 2) >> 2) as u8;
        }
    }
}

/// `o[x]` = the rounded mean of `a[2x]`, `a[2x + 1]`, `b[2x]` and `b[2x + 1]`, for two rows of
/// `2 * o.len()` bytes.
fn halve_pairs(a: &[u8], b: &[u8], o: &mut [u8]) {
    assert!(a.len() == 2 * o.len() && b.len() == 2 * o.len());
    #[cfg(target_arch = "x86_64")]
    let done = if crate::simd::has_avx2() {
        // SAFETY: the CPU has AVX2 (checked); the lengths are as the kernel needs (asserted).
        unsafe { halve_pairs_avx2(a, b, o) }
    } else {
        // SAFETY: SSE2 is part of x86-64; the lengths are as the kernel needs (asserted).
        unsafe { halve_pairs_sse2(a, b, o) }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    for x in done..o.len() {
        let s = a[2 * x] as u16 + a[2 * x + 1] as u16 + b[2 * x] as u16 + b[2 * x + 1] as u16;
        o[x] = ((s + 2) >> 2) as u8;
    }
}

/// [`halve_pairs`] 16 outputs at a time (each byte pair summed as one 16-bit lane: low byte
/// plus high byte); returns how many outputs it wrote.
///
/// # Safety
/// `a` and `b` hold `2 * o.len()` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn halve_pairs_sse2(a: &[u8], b: &[u8], o: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = o.len() / 16 * 16;
    let low = _mm_set1_epi16(0x00ff);
    let two = _mm_set1_epi16(2);
    let pair_sums = |v: __m128i| _mm_add_epi16(_mm_and_si128(v, low), _mm_srli_epi16(v, 8));
    let mut x = 0;
    while x < n {
        // SAFETY: 2x + 32 <= 2n <= a.len() = b.len(), and x + 16 <= n <= o.len().
        unsafe {
            let pa = a.as_ptr().add(2 * x) as *const __m128i;
            let pb = b.as_ptr().add(2 * x) as *const __m128i;
            let lo = _mm_add_epi16(
                pair_sums(_mm_loadu_si128(pa)),
                pair_sums(_mm_loadu_si128(pb)),
            );
            let hi = _mm_add_epi16(
                pair_sums(_mm_loadu_si128(pa.add(1))),
                pair_sums(_mm_loadu_si128(pb.add(1))),
            );
            let lo = _mm_srli_epi16(_mm_add_epi16(lo, two), 2);
            let hi = _mm_srli_epi16(_mm_add_epi16(hi, two), 2);
            _mm_storeu_si128(
                o.as_mut_ptr().add(x) as *mut __m128i,
                _mm_packus_epi16(lo, hi),
            );
        }
        x += 16;
    }
    n
}

/// [`halve_pairs_sse2`] 32 outputs at a time.
///
/// # Safety
/// The CPU has AVX2; `a` and `b` hold `2 * o.len()` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn halve_pairs_avx2(a: &[u8], b: &[u8], o: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = o.len() / 32 * 32;
    let ones = _mm256_set1_epi8(1);
    let two = _mm256_set1_epi16(2);
    let mut x = 0;
    while x < n {
        // SAFETY: 2x + 64 <= 2n <= a.len() = b.len(), and x + 32 <= n <= o.len().
        unsafe {
            let pa = a.as_ptr().add(2 * x) as *const __m256i;
            let pb = b.as_ptr().add(2 * x) as *const __m256i;
            // maddubs with ones: each unsigned byte pair summed into a 16-bit lane.
            let sums = |p: *const __m256i| _mm256_maddubs_epi16(_mm256_loadu_si256(p), ones);
            let lo = _mm256_add_epi16(sums(pa), sums(pb));
            let hi = _mm256_add_epi16(sums(pa.add(1)), sums(pb.add(1)));
            let lo = _mm256_srli_epi16(_mm256_add_epi16(lo, two), 2);
            let hi = _mm256_srli_epi16(_mm256_add_epi16(hi, two), 2);
            // packus works within 128-bit lanes: put the four quarters back in order.
            let packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(lo, hi), 0b11_01_10_00);
            _mm256_storeu_si256(o.as_mut_ptr().add(x) as *mut __m256i, packed);
        }
        x += 32;
    }
    n
}

simd_dispatch!(
    /// Three equal-length rows into one packed row, 3 bytes a pixel.
    fn interleave(a: &[u8], b: &[u8], c: &[u8], out: &mut [u8]) => interleave_impl
);

#[inline(always)]
fn interleave_impl(a: &[u8], b: &[u8], c: &[u8], out: &mut [u8]) {
    assert!(b.len() == a.len() && c.len() == a.len() && out.len() == 3 * a.len());
    let full = a.len() / BLOCK * BLOCK;
    for (((a, b), c), out) in a[..full]
        .chunks_exact(BLOCK)
        .zip(b[..full].chunks_exact(BLOCK))
        .zip(c[..full].chunks_exact(BLOCK))
        .zip(out.chunks_exact_mut(3 * BLOCK))
    {
        // Fixed sizes, so the copies are vector moves rather than memcpy calls.
        let out: &mut [u8; 3 * BLOCK] = out.try_into().expect("a full block");
        *out = pack3(
            a.try_into().expect("a full block"),
            b.try_into().expect("a full block"),
            c.try_into().expect("a full block"),
        );
    }
    if full < a.len() {
        let packed = pack3(
            &padded(&a[full..]),
            &padded(&b[full..]),
            &padded(&c[full..]),
        );
        out[3 * full..].copy_from_slice(&packed[..3 * (a.len() - full)]);
    }
}

simd_dispatch!(
    /// Packed YUV to packed RGB, 3 bytes a pixel each.
    fn yuv_to_rgb(m: &Matrix, yuv: &[u8], rgb: &mut [u8]) => yuv_to_rgb_impl
);

#[inline(always)]
fn yuv_to_rgb_impl(m: &Matrix, yuv: &[u8], rgb: &mut [u8]) {
    assert_eq!(yuv.len(), rgb.len());
    let full = yuv.len() / (3 * BLOCK) * (3 * BLOCK);
    for (p, out) in yuv[..full]
        .chunks_exact(3 * BLOCK)
        .zip(rgb.chunks_exact_mut(3 * BLOCK))
    {
        let out: &mut [u8; 3 * BLOCK] = out.try_into().expect("a full block");
        *out = m.packed_block(p.try_into().expect("a full block"));
    }
    if full < yuv.len() {
        let mut px = [0u8; 3 * BLOCK];
        px[..yuv.len() - full].copy_from_slice(&yuv[full..]);
        let packed = m.packed_block(&px);
        rgb[full..].copy_from_slice(&packed[..yuv.len() - full]);
    }
}

/// Up to `BLOCK` bytes as a full block, zeros after a short tail.
fn padded(p: &[u8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..p.len()].copy_from_slice(p);
    b
}

/// Three blocks interleaved: fixed-size arrays with stride-3 stores, which LLVM turns into
/// byte shuffles.
#[inline(always)]
fn pack3(a: &[u8; BLOCK], b: &[u8; BLOCK], c: &[u8; BLOCK]) -> [u8; 3 * BLOCK] {
    let mut packed = [0u8; 3 * BLOCK];
    for i in 0..BLOCK {
        packed[3 * i] = a[i];
        packed[3 * i + 1] = b[i];
        packed[3 * i + 2] = c[i];
    }
    packed
}

/// YCbCr → RGB in 16-bit fixed point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matrix {
    y_offset: i32,
    y: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

// Indexed loops over several same-length arrays are the shape that vectorises here.
#[allow(clippy::needless_range_loop)]
impl Matrix {
    pub fn new(space: color::Space, full_range: bool) -> Self {
        let (kr, kb) = match space {
            color::Space::BT709 => (0.2126, 0.0722),
            color::Space::BT2020NCL | color::Space::BT2020CL => (0.2627, 0.0593),
            _ => (0.299, 0.114),
        };
        let kg = 1.0 - kr - kb;
        let (y_offset, ys, cs) = if full_range {
            (0, 1.0, 1.0)
        } else {
            (16, 255.0 / 219.0, 255.0 / 224.0)
        };
        let q = |v: f64| (v * 65536.0).round() as i32;
        Matrix {
            y_offset,
            y: q(ys),
            rv: q(2.0 * (1.0 - kr) * cs),
            gu: q(2.0 * kb * (1.0 - kb) / kg * cs),
            gv: q(2.0 * kr * (1.0 - kr) / kg * cs),
            bu: q(2.0 * (1.0 - kb) * cs),
        }
    }

    /// One block of packed YUV pixels to packed RGB (the stride-3 loads become byte shuffles).
    #[inline(always)]
    fn packed_block(&self, px: &[u8; 3 * BLOCK]) -> [u8; 3 * BLOCK] {
        let (mut y, mut u, mut v) = ([0u8; BLOCK], [0u8; BLOCK], [0u8; BLOCK]);
        for i in 0..BLOCK {
            y[i] = px[3 * i];
            u[i] = px[3 * i + 1];
            v[i] = px[3 * i + 2];
        }
        self.block(&y, &u, &v)
    }

    /// One block of planar pixels to packed RGB: fixed-size arrays, so each step is a
    /// vector loop.
    #[inline(always)]
    fn block(&self, y: &[u8; BLOCK], u: &[u8; BLOCK], v: &[u8; BLOCK]) -> [u8; 3 * BLOCK] {
        let (mut r, mut g, mut b) = ([0u8; BLOCK], [0u8; BLOCK], [0u8; BLOCK]);
        for i in 0..BLOCK {
            let yy = (y[i] as i32 - self.y_offset) * self.y + 32768;
            let (u, v) = (u[i] as i32 - 128, v[i] as i32 - 128);
            r[i] = ((yy + self.rv * v) >> 16).clamp(0, 255) as u8;
            g[i] = ((yy - self.gu * u - self.gv * v) >> 16).clamp(0, 255) as u8;
            b[i] = ((yy + self.bu * u) >> 16).clamp(0, 255) as u8;
        }
        pack3(&r, &g, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rounded 2x2 mean at (x, y) of a `w`x`h` plane, edges repeated.
    fn block_mean(src: &[u8], stride: usize, w: usize, h: usize, x: usize, y: usize) -> u8 {
        let at = |x: usize, y: usize| src[y.min(h - 1) * stride + x.min(w - 1)] as u32;
        let s = at(2 * x, 2 * y)
            + at(2 * x + 1, 2 * y)
            + at(2 * x, 2 * y + 1)
            + at(2 * x + 1, 2 * y + 1);
        ((s + 2) / 4) as u8
    }

    #[test]
    fn every_halving_kernel_gives_the_rounded_means() {
        // 203 columns: 101 full pairs, so the AVX2 (32), SSE2 (16) and scalar tails all run.
        let (w, h, stride) = (203usize, 5usize, 224usize);
        let src: Vec<u8> = (0..stride * h).map(|i| (i * 151 % 256) as u8).collect();
        let mut out = Vec::new();
        halve(&src, stride, w, h, &mut out);
        let ow = w.div_ceil(2);
        for y in 0..h.div_ceil(2) {
            for x in 0..ow {
                assert_eq!(
                    out[y * ow + x],
                    block_mean(&src, stride, w, h, x, y),
                    "({x}, {y})"
                );
            }
        }
        // Each x86 kernel on its own against the definition, whatever the dispatch picks.
        #[cfg(target_arch = "x86_64")]
        {
            let (a, b) = (&src[..202], &src[stride..stride + 202]);
            let want: Vec<u8> = (0..101)
                .map(|x| block_mean(&src, stride, w, 2, x, 0))
                .collect();
            let mut o = vec![0u8; 101];
            // SAFETY: SSE2 is part of x86-64; a and b hold 2 * o.len() bytes.
            let done = unsafe { halve_pairs_sse2(a, b, &mut o) };
            assert_eq!(done, 96);
            assert_eq!(o[..done], want[..done]);
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut o = vec![0u8; 101];
                // SAFETY: the CPU has AVX2 (checked); the lengths are as above.
                let done = unsafe { halve_pairs_avx2(a, b, &mut o) };
                assert_eq!(done, 96);
                assert_eq!(o[..done], want[..done]);
            }
        }
    }

    #[test]
    fn interleave_and_matrices_match_the_standards_in_floating_point() {
        for (space, kr, kb) in [
            (color::Space::Unspecified, 0.299, 0.114),
            (color::Space::BT709, 0.2126, 0.0722),
        ] {
            for full in [false, true] {
                let m = Matrix::new(space, full);
                // 150 pixels: two full blocks and a tail.
                let n = 150;
                let plane = |k: usize| -> Vec<u8> {
                    (0..n).map(|i| ((i * k + 7 * k) % 256) as u8).collect()
                };
                let (ys, us, vs) = (plane(97), plane(31), plane(53));
                let mut yuv = vec![0u8; 3 * n];
                interleave(&ys, &us, &vs, &mut yuv);
                for i in 0..n {
                    assert_eq!(yuv[3 * i..3 * i + 3], [ys[i], us[i], vs[i]], "pixel {i}");
                }
                let mut rgb = vec![0u8; 3 * n];
                yuv_to_rgb(&m, &yuv, &mut rgb);
                // The baseline copies give the same bytes as the ones the CPU picked.
                let (mut yuv_baseline, mut rgb_baseline) = (vec![0u8; 3 * n], vec![0u8; 3 * n]);
                interleave_impl(&ys, &us, &vs, &mut yuv_baseline);
                yuv_to_rgb_impl(&m, &yuv, &mut rgb_baseline);
                assert_eq!((&yuv, &rgb), (&yuv_baseline, &rgb_baseline));
                for (i, o) in rgb.chunks(3).enumerate() {
                    let (y, u, v) = (ys[i] as f64, us[i] as f64 - 128.0, vs[i] as f64 - 128.0);
                    let (y, cs) = if full {
                        (y, 1.0)
                    } else {
                        ((y - 16.0) * 255.0 / 219.0, 255.0 / 224.0)
                    };
                    let kg = 1.0 - kr - kb;
                    let r = y + 2.0 * (1.0 - kr) * cs * v;
                    let b = y + 2.0 * (1.0 - kb) * cs * u;
                    let g = y - (2.0 * kb * (1.0 - kb) * u + 2.0 * kr * (1.0 - kr) * v) * cs / kg;
                    for (got, want) in o.iter().zip([r, g, b]) {
                        let want = want.clamp(0.0, 255.0);
                        assert!(
                            (*got as f64 - want).abs() <= 0.51,
                            "pixel {i}: {o:?} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn geometry_covers_1080p_and_4k_and_refuses_the_rest() {
        let s = PlaneScaler::new(Pixel::YUV420P, 1920, 1080, 512, 288).unwrap();
        assert_eq!(
            (s.luma_halvings, s.chroma_halvings, s.grid),
            (1, 0, (960, 540))
        );
        let s = PlaneScaler::new(Pixel::YUV420P, 3840, 2160, 512, 288).unwrap();
        assert_eq!(
            (s.luma_halvings, s.chroma_halvings, s.grid),
            (2, 1, (960, 540))
        );
        let s = PlaneScaler::new(Pixel::YUV444P, 1920, 1080, 512, 288).unwrap();
        assert_eq!(
            (s.luma_halvings, s.chroma_halvings, s.grid),
            (1, 1, (960, 540))
        );
        assert!(PlaneScaler::new(Pixel::YUV420P, 1920, 1080, 1280, 720).is_none());
        assert!(PlaneScaler::new(Pixel::YUV422P, 1920, 1080, 512, 288).is_none());
        assert!(PlaneScaler::new(Pixel::YUV420P10LE, 1920, 1080, 512, 288).is_none());
    }
}
