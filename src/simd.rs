//! Runtime CPU dispatch and the structure-of-arrays helper shared by the pixel kernels (the
//! augment stage's colour chain and blur, the video frame path's plane scaler).
//!
//! The crate is built for baseline x86-64 (SSE2), where f32 loops vectorise only four wide and
//! without cheap rounding. Kernels are written once as `#[inline(always)]` scalar-looking code
//! over contiguous float arrays, and [`simd_dispatch!`] compiles AVX-512 and AVX2 copies,
//! picked at run time. Neither enables FMA, and LLVM never contracts `a * b + c` on its own,
//! so every copy rounds identically (the reference tests rely on it). On the Zen 4 machine we
//! measure on, the AVX-512 copy runs the colour chain and the blur ~1.6x faster than AVX2
//! (16 lanes, mask registers for the selects, `vpmovdb` for the u8 stores).

/// Pixels per structure-of-arrays block: small enough for L1, long enough to vectorise.
pub(crate) const BLOCK: usize = 64;

/// Defines `fn $name(args)` that runs `$imp(args)` compiled with AVX-512 (F, BW, VL, DQ) or
/// AVX2 when the CPU has them, else for the baseline.
///
/// Every copy performs the same IEEE operations in the same order (no FMA), so all give the
/// same bytes; wider vectors only mean fewer instructions per pixel.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $ret:ty)? => $imp:path) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
                unsafe fn avx512($($a: $t),*) $(-> $ret)? {
                    $imp($($a),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) $(-> $ret)? {
                    $imp($($a),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: the CPU supports these features, checked just above.
                    return unsafe { avx512($($a),*) };
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($a),*) };
                }
            }
            $imp($($a),*)
        }
    };
}
pub(crate) use simd_dispatch;

/// The widest kernel copy allowed to run, from `DINO_STREAM_CPU_ISA` (`avx512`, `avx2` or
/// `baseline`; unset: the widest the CPU has). The suite runs the reference tests a second
/// time under `avx2` (with libtorch capped the same way), so every copy is checked against
/// torchvision on any CPU, not only the one the CPU would pick.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum IsaCap {
    Baseline,
    Avx2,
    Avx512,
}

#[cfg(target_arch = "x86_64")]
fn isa_cap() -> IsaCap {
    static CAP: std::sync::OnceLock<IsaCap> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        match std::env::var("DINO_STREAM_CPU_ISA")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "baseline" | "default" | "sse2" => IsaCap::Baseline,
            "avx2" => IsaCap::Avx2,
            _ => IsaCap::Avx512,
        }
    })
}

/// Whether the AVX-512 copies may run: the CPU has F, BW, VL and DQ, and no cap forbids them.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    isa_cap() >= IsaCap::Avx512
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
}

/// Whether the AVX2 copies may run.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    isa_cap() >= IsaCap::Avx2 && std::arch::is_x86_feature_detected!("avx2")
}

/// Float planes of one block of pixels.
pub(crate) struct Planes {
    pub r: [f32; BLOCK],
    pub g: [f32; BLOCK],
    pub b: [f32; BLOCK],
}

/// One block of packed RGB8 bytes.
type PackedBlock = [u8; BLOCK * 3];

// Indexed loops over several same-length arrays are the clearest form of these kernels and
// vectorise as well as zipped iterators.
#[allow(clippy::needless_range_loop)]
impl Planes {
    #[inline(always)]
    pub fn new() -> Self {
        Planes {
            r: [0.0; BLOCK],
            g: [0.0; BLOCK],
            b: [0.0; BLOCK],
        }
    }

    /// Deinterleaves up to `BLOCK` packed RGB8 pixels into the planes (as 0.0..=255.0);
    /// planes past a short tail hold zeros.
    ///
    /// Full blocks go through a fixed-size array with stride-3 indexing, a shape LLVM turns
    /// into byte shuffles (`pshufb`); a slice walked by `chunks_exact(3)` stays scalar.
    #[inline(always)]
    pub fn load(&mut self, px: &[u8]) {
        match <&PackedBlock>::try_from(px) {
            Ok(full) => self.load_full(full),
            Err(_) => {
                let mut padded = [0u8; BLOCK * 3];
                padded[..px.len()].copy_from_slice(px);
                self.load_full(&padded);
            }
        }
    }

    #[inline(always)]
    fn load_full(&mut self, px: &PackedBlock) {
        for i in 0..BLOCK {
            self.r[i] = px[3 * i] as f32;
            self.g[i] = px[3 * i + 1] as f32;
            self.b[i] = px[3 * i + 2] as f32;
        }
    }

    /// Interleaves the planes back into up to `BLOCK` pixels, truncating each value to u8
    /// (torch's float -> uint8 cast).
    ///
    /// # Safety
    /// Every plane value must lie in `0.0..256.0`.
    #[inline(always)]
    pub unsafe fn store(&self, px: &mut [u8]) {
        let mut bytes = [[0u8; BLOCK]; 3];
        for i in 0..BLOCK {
            // SAFETY: planes hold values in 0.0..256.0 (this method's contract).
            unsafe {
                bytes[0][i] = level_to_i32(self.r[i]) as u8;
                bytes[1][i] = level_to_i32(self.g[i]) as u8;
                bytes[2][i] = level_to_i32(self.b[i]) as u8;
            }
        }
        let mut packed = [0u8; BLOCK * 3];
        for i in 0..BLOCK {
            packed[3 * i] = bytes[0][i];
            packed[3 * i + 1] = bytes[1][i];
            packed[3 * i + 2] = bytes[2][i];
        }
        let n = px.len();
        px.copy_from_slice(&packed[..n]);
    }
}

/// `x as i32` (truncation) for an `x` the caller knows to be finite and in i32 range (a
/// pixel level, or a weighted sum of levels), as one vector convert instruction.
///
/// Rust's `as` casts saturate and map NaN to 0, which LLVM scalarises (a compare and two
/// `cmov`s per value). Clamping first would make any float safe at two more instructions
/// per value; in the colour chain and the blur every value is a level by construction
/// (loaded from bytes, clamped by each blend, or a max/min/middle channel of levels), so the
/// pixel kernels state that contract instead of paying for the clamp.
///
/// # Safety
/// `x` must be finite and its truncation must fit in an i32.
#[inline(always)]
pub(crate) unsafe fn level_to_i32(x: f32) -> i32 {
    debug_assert!(x.is_finite() && x.abs() < 2.0e9, "{x}");
    // SAFETY: the caller's contract.
    unsafe { x.to_int_unchecked::<i32>() }
}

/// `trunc` of a level (see [`level_to_i32`]) as two vector converts (SSE2's `trunc` is a libm
/// call).
///
/// # Safety
/// As [`level_to_i32`].
#[inline(always)]
pub(crate) unsafe fn trunc_level(x: f32) -> f32 {
    // SAFETY: the caller's contract.
    unsafe { level_to_i32(x) as f32 }
}

/// `max` as one `maxps`: the larger of `a` and `b`, or `b` when either is NaN (`f32::max`
/// costs a NaN check and a blend on top).
#[inline(always)]
pub(crate) fn fmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `min` as one `minps`: the smaller of `a` and `b`, or `b` when either is NaN.
#[inline(always)]
pub(crate) fn fmin(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// Round half to even (`torch.round`) for 0 <= x < 2^23, by the 2^23 magic-number trick,
/// which uses the FPU's default rounding mode and vectorises.
#[inline(always)]
pub(crate) fn round_even_pos(x: f32) -> f32 {
    const MAGIC: f32 = 8_388_608.0;
    (x + MAGIC) - MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_match_std() {
        for x in [0.0f32, 0.4, 0.5, 1.5, 2.5, 2.6, 254.5, 255.49, 3.999_999_8] {
            assert_eq!(round_even_pos(x), x.round_ties_even(), "{x}");
            // SAFETY: small finite values.
            assert_eq!(unsafe { trunc_level(x) }, x.trunc());
        }
        assert_eq!(unsafe { level_to_i32(-3.7) }, -3);
    }
}
