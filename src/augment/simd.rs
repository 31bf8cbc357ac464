//! Runtime CPU dispatch and the structure-of-arrays helper shared by the pixel kernels.
//!
//! The crate is built for baseline x86-64 (SSE2), where f32 loops vectorise only four wide and
//! without cheap rounding. Kernels are written once as `#[inline(always)]` scalar-looking code
//! over contiguous float arrays, and [`avx2_dispatch!`] compiles a second copy with AVX2
//! enabled, picked at run time. AVX2 without FMA changes no result: LLVM never contracts
//! `a * b + c` on its own, so both copies round identically (the reference tests rely on it).

/// Pixels per structure-of-arrays block: small enough for L1, long enough to vectorise.
pub(crate) const BLOCK: usize = 64;

/// Defines `fn $name(args)` that runs `$imp(args)` compiled with AVX2 when the CPU has it.
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $ret:ty)? => $imp:path) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) $(-> $ret)? {
                    $imp($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, checked just above.
                    return unsafe { avx2($($a),*) };
                }
            }
            $imp($($a),*)
        }
    };
}
pub(crate) use avx2_dispatch;

/// Float planes of one block of pixels.
pub(crate) struct Planes {
    pub r: [f32; BLOCK],
    pub g: [f32; BLOCK],
    pub b: [f32; BLOCK],
}

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

    /// Deinterleaves up to `BLOCK` packed RGB8 pixels into the planes (as 0.0..=255.0).
    ///
    /// Bytes are split first and converted in a second, vectorisable loop: a fused loop
    /// converts one scalar at a time.
    #[inline(always)]
    pub fn load(&mut self, px: &[u8]) {
        let mut bytes = [[0u8; BLOCK]; 3];
        for (i, p) in px.chunks_exact(3).enumerate() {
            bytes[0][i] = p[0];
            bytes[1][i] = p[1];
            bytes[2][i] = p[2];
        }
        for i in 0..BLOCK {
            self.r[i] = bytes[0][i] as f32;
            self.g[i] = bytes[1][i] as f32;
            self.b[i] = bytes[2][i] as f32;
        }
    }

    /// Interleaves the planes back, truncating each value to u8 (torch's float -> uint8
    /// cast; values must already lie in 0.0..256.0).
    #[inline(always)]
    pub fn store(&self, px: &mut [u8]) {
        let mut bytes = [[0u8; BLOCK]; 3];
        for i in 0..BLOCK {
            bytes[0][i] = self.r[i] as i32 as u8;
            bytes[1][i] = self.g[i] as i32 as u8;
            bytes[2][i] = self.b[i] as i32 as u8;
        }
        for (i, p) in px.chunks_exact_mut(3).enumerate() {
            p[0] = bytes[0][i];
            p[1] = bytes[1][i];
            p[2] = bytes[2][i];
        }
    }
}

/// `trunc` for non-negative floats below 2^31, as a convert instruction (SSE2's `trunc` is a
/// libm call).
#[inline(always)]
pub(crate) fn trunc_pos(x: f32) -> f32 {
    x as i32 as f32
}

/// `floor` for floats in the i32 range, branch-free.
#[inline(always)]
pub(crate) fn floor_fast(x: f32) -> f32 {
    let t = x as i32 as f32;
    if t > x {
        t - 1.0
    } else {
        t
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
            assert_eq!(trunc_pos(x), x.trunc());
        }
        for x in [-1.5f32, -1.0, -0.2, 0.0, 0.7, 1.0, 5.99] {
            assert_eq!(floor_fast(x), x.floor(), "{x}");
        }
    }
}
