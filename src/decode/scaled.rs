//! Crop-aware decoding: decode a JPEG at a reduced scale when every crop that will be cut from
//! it is still at least as large as its output there.
//!
//! libjpeg-turbo can run a smaller inverse DCT per 8×8 block and so decode at a fraction of the
//! full size for a fraction of the IDCT, colour conversion and memory traffic (the Huffman
//! decoding still reads every coefficient). The caller draws its crop boxes on the full-size
//! picture first and says how far the picture may shrink ([`decode_reduced`]'s `min_scale`);
//! this module picks the factor, decodes, and returns a [`Reduction`] that maps full-size
//! coordinates into the decoded frame. Boxes never shrink below their outputs because of the
//! reduction, so no crop is upsampled that would not have been at full size.
//!
//! Only the factors that decode faster than the full size are used ([`FAST_FACTORS`]):
//! libjpeg-turbo has SIMD IDCTs for the 8×8, 4×4, 2×2 and 1×1 outputs only, and its scalar
//! 7/8, 3/4 and 5/8 IDCTs are slower than the full-size decode (docs/ARCHITECTURE.md, "Crop-aware
//! decoding"). PNG and the formats the fast path leaves to the image crate (CMYK, 12-bit,
//! truncated or corrupt JPEGs) have no cheap reduced decode here: they decode at full size,
//! exactly as with `decode.scaled = "off"`.

use serde::{Deserialize, Serialize};

use super::{decode_image, DecodeError};
use crate::frame::Frame;

/// `decode.scaled`: whether JPEGs may be decoded at a reduced scale chosen from the crops.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScaledDecode {
    /// Decode at the smallest fast libjpeg-turbo scale that keeps every crop box at least as
    /// large as its output (measured: crops within a few levels of the full-size ones, ~2x
    /// faster on 2000×1500 photos; docs/ARCHITECTURE.md).
    #[default]
    Auto,
    /// Always decode the full picture (the torchvision-exact path).
    Off,
}

/// A libjpeg-turbo scaling factor `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub num: u32,
    pub den: u32,
}

impl Scale {
    pub const FULL: Scale = Scale { num: 1, den: 1 };

    pub fn value(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// libjpeg-turbo's output size for a side of `len` pixels (`TJSCALED`: rounded up).
    pub fn apply(self, len: u32) -> u32 {
        ((len as u64 * self.num as u64).div_ceil(self.den as u64)) as u32
    }

    /// In eighths, for reports: 1/4 is 2, the full size 8.
    pub fn eighths(self) -> u32 {
        self.num * 8 / self.den
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// The reduced factors worth decoding at, largest reduction first: those whose IDCT is faster
/// than the full-size one (measured per factor on 500×375, 2000×1500 and 4000×3000 JPEGs).
pub const FAST_FACTORS: [Scale; 3] = [
    Scale { num: 1, den: 8 },
    Scale { num: 1, den: 4 },
    Scale { num: 1, den: 2 },
];

/// The largest reduction among `available` (the library's factors) and [`FAST_FACTORS`] that is
/// at least `min_scale`; the full size when none is.
pub fn pick_scale(min_scale: f64, available: &[Scale]) -> Scale {
    FAST_FACTORS
        .iter()
        .copied()
        .filter(|s| available.contains(s))
        .find(|s| s.value() >= min_scale)
        .unwrap_or(Scale::FULL)
}

/// How a decoded frame relates to the full-size picture the crop boxes were drawn on: a point
/// `(x, y)` of the picture is `(x * scale + offset[0], y * scale + offset[1])` in the frame.
///
/// The offset is non-zero only on an axis that the EXIF orientation reverses when the reduced
/// size is not a whole number of pixels: libjpeg-turbo rounds the reduced size up, and after a
/// mirror that partial last pixel comes first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reduction {
    pub scale: Scale,
    pub offset: [f64; 2],
    /// The full-size picture's width and height, upright (after the EXIF orientation).
    pub full: (u32, u32),
}

impl Reduction {
    /// No reduction: the frame is the picture.
    pub fn identity(width: u32, height: u32) -> Self {
        Reduction {
            scale: Scale::FULL,
            offset: [0.0, 0.0],
            full: (width, height),
        }
    }

    /// The reduction of an upright `full` picture decoded at `scale`, where the orientation
    /// reversed the x and/or y axis (`reversed`).
    pub fn new(scale: Scale, full: (u32, u32), reversed: [bool; 2]) -> Self {
        let offset = |len: u32, rev: bool| {
            if rev {
                scale.apply(len) as f64 - len as f64 * scale.value()
            } else {
                0.0
            }
        };
        Reduction {
            scale,
            offset: [offset(full.0, reversed[0]), offset(full.1, reversed[1])],
            full,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.scale == Scale::FULL
    }

    /// The frame's size under this reduction.
    pub fn reduced_size(&self) -> (u32, u32) {
        (self.scale.apply(self.full.0), self.scale.apply(self.full.1))
    }

    /// A full-size box `[left, top, width, height]` in the frame's (fractional) pixels.
    pub fn map_box(&self, b: [f64; 4]) -> [f64; 4] {
        let s = self.scale.value();
        [
            b[0] * s + self.offset[0],
            b[1] * s + self.offset[1],
            b[2] * s,
            b[3] * s,
        ]
    }
}

/// Decodes `bytes` at the largest fast reduction whose scale is at least
/// `min_scale(width, height)` (called with the upright full size, from the header), or at full
/// size where there is no reduced decode (non-JPEGs, CMYK, 12-bit, a JPEG that does not decode
/// cleanly: those take [`decode_image`] exactly as `decode.scaled = "off"` does).
///
/// The pixel limit applies to the full-size picture, as on every path. `min_scale` is not
/// called when the bytes are not a JPEG the fast path reads.
pub fn decode_reduced(
    bytes: &[u8],
    max_pixels: u64,
    min_scale: impl FnOnce(u32, u32) -> f64,
) -> Result<(Frame, Reduction), DecodeError> {
    #[cfg(turbojpeg)]
    if !bytes.is_empty() {
        if let Some(decoded) = super::turbo::decode_scaled(bytes, max_pixels, min_scale)? {
            return Ok(decoded);
        }
    }
    #[cfg(not(turbojpeg))]
    let _ = min_scale;
    let frame = decode_image(bytes, max_pixels)?;
    let identity = Reduction::identity(frame.width, frame.height);
    Ok((frame, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Scale; 8] = [
        Scale { num: 1, den: 8 },
        Scale { num: 1, den: 4 },
        Scale { num: 3, den: 8 },
        Scale { num: 1, den: 2 },
        Scale { num: 5, den: 8 },
        Scale { num: 3, den: 4 },
        Scale { num: 7, den: 8 },
        Scale { num: 1, den: 1 },
    ];

    #[test]
    fn picks_the_largest_fast_reduction_that_is_large_enough() {
        assert_eq!(pick_scale(0.1, &ALL), Scale { num: 1, den: 8 });
        assert_eq!(pick_scale(0.125, &ALL), Scale { num: 1, den: 8 });
        assert_eq!(pick_scale(0.13, &ALL), Scale { num: 1, den: 4 });
        assert_eq!(pick_scale(0.3, &ALL), Scale { num: 1, den: 2 });
        assert_eq!(pick_scale(0.5, &ALL), Scale { num: 1, den: 2 });
        // 5/8..7/8 would be allowed but decode slower than the full size.
        assert_eq!(pick_scale(0.51, &ALL), Scale::FULL);
        assert_eq!(pick_scale(1.0, &ALL), Scale::FULL);
        // A library without 1/8 falls to the next factor.
        assert_eq!(pick_scale(0.1, &ALL[1..]), Scale { num: 1, den: 4 });
    }

    #[test]
    fn reduced_sizes_round_up_like_libjpeg_turbo() {
        let s = Scale { num: 1, den: 8 };
        assert_eq!((s.apply(2000), s.apply(1500), s.apply(1)), (250, 188, 1));
        assert_eq!(Scale { num: 3, den: 8 }.apply(375), 141);
        assert_eq!(Scale::FULL.apply(375), 375);
    }

    #[test]
    fn mirrored_axes_carry_the_rounding_as_an_offset() {
        let s = Scale { num: 1, den: 8 };
        let r = Reduction::new(s, (2000, 1500), [false, true]);
        assert_eq!(r.reduced_size(), (250, 188));
        assert_eq!(r.offset, [0.0, 0.5]);
        // The whole picture maps onto the frame less its half padding pixel, at the top.
        assert_eq!(
            r.map_box([0.0, 0.0, 2000.0, 1500.0]),
            [0.0, 0.5, 250.0, 187.5]
        );
        assert!(Reduction::identity(5, 4).is_identity());
        assert_eq!(
            Reduction::identity(5, 4).map_box([1.0, 2.0, 3.0, 1.0]),
            [1.0, 2.0, 3.0, 1.0]
        );
    }
}
