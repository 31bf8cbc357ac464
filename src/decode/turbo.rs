//! The fast path for baseline and progressive 8-bit JPEGs: the system libjpeg-turbo through its
//! TurboJPEG 2.x API (Debian's `libturbojpeg0`), the decoder PIL uses, at ~3/4 of the image
//! crate's (zune-jpeg's) time per picture, and with PIL's exact pixels.
//!
//! It handles only what it does exactly like the general path: YCbCr, RGB and grey JPEGs that
//! decode without a warning. Anything else (CMYK/YCCK, 12-bit, truncated or corrupt data, a
//! PNG) returns `Ok(None)` and [`super::decode_image`] falls back to the image crate, so every
//! bad-input behaviour stays that path's. The pixel limit is checked from the header before
//! the output buffer exists, and `TJFLAG_LIMITSCANS` refuses progressive files with absurd
//! scan counts (a CPU bomb), so the library's own allocations stay bounded by the limit too.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uchar, c_ulong, c_void, CStr};

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};

use super::scaled::{pick_scale, Reduction, Scale};
use super::DecodeError;
use crate::frame::Frame;

type TjHandle = *mut c_void;

// The TurboJPEG 2.x API (turbojpeg.h); linked by build.rs through pkg-config.
extern "C" {
    fn tjInitDecompress() -> TjHandle;
    fn tjDecompressHeader3(
        handle: TjHandle,
        jpeg_buf: *const c_uchar,
        jpeg_size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        jpeg_subsamp: *mut c_int,
        jpeg_colorspace: *mut c_int,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn tjDecompress2(
        handle: TjHandle,
        jpeg_buf: *const c_uchar,
        jpeg_size: c_ulong,
        dst_buf: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjDestroy(handle: TjHandle) -> c_int;
    fn tjGetErrorStr2(handle: TjHandle) -> *mut c_char;
    fn tjGetScalingFactors(num_scaling_factors: *mut c_int) -> *mut TjScalingFactor;
}

/// `tjscalingfactor`.
#[repr(C)]
#[derive(Clone, Copy)]
struct TjScalingFactor {
    num: c_int,
    denom: c_int,
}

const TJPF_RGB: c_int = 0;
const TJCS_RGB: c_int = 0;
const TJCS_YCBCR: c_int = 1;
const TJCS_GRAY: c_int = 2;
/// Stop at the first warning (a truncated file) instead of returning grey-filled pixels: the
/// image crate then decides, as it did before this path existed.
const TJFLAG_STOPONWARNING: c_int = 8192;
/// Refuse progressive JPEGs with more than 500 scans.
const TJFLAG_LIMITSCANS: c_int = 32768;

/// One decompressor per thread: creating one costs a few allocations, and a handle must not be
/// used by two threads at once. Decode workers are long-lived threads, so each owns one.
struct Decompressor(TjHandle);

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed exactly once.
        unsafe { tjDestroy(self.0) };
    }
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Decodes `bytes` if it is a JPEG this path handles exactly; `Ok(None)` means "use the
/// general decoder".
pub(super) fn decode(bytes: &[u8], max_pixels: u64) -> Result<Option<Frame>, DecodeError> {
    Ok(decode_scaled(bytes, max_pixels, |_, _| 1.0)?.map(|(frame, _)| frame))
}

/// [`decode`] at the largest fast reduction of at least `min_scale(width, height)` (the upright
/// full size), with the [`Reduction`] that maps full-size coordinates into the frame.
pub(super) fn decode_scaled(
    bytes: &[u8],
    max_pixels: u64,
    min_scale: impl FnOnce(u32, u32) -> f64,
) -> Result<Option<(Frame, Reduction)>, DecodeError> {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Ok(None);
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // SAFETY: no preconditions; a null handle means failure.
            let h = unsafe { tjInitDecompress() };
            if h.is_null() {
                return Ok(None);
            }
            *slot = Some(Decompressor(h));
        }
        let handle = slot.as_ref().map_or(std::ptr::null_mut(), |d| d.0);
        decode_with(handle, bytes, max_pixels, min_scale)
    })
}

/// The library's scaling factors (a static table; read once).
fn library_scales() -> &'static [Scale] {
    static SCALES: std::sync::OnceLock<Vec<Scale>> = std::sync::OnceLock::new();
    SCALES.get_or_init(|| {
        let mut n: c_int = 0;
        // SAFETY: returns a pointer to a static array of `n` factors, or null on failure.
        let ptr = unsafe { tjGetScalingFactors(&mut n) };
        if ptr.is_null() || n <= 0 {
            return Vec::new();
        }
        // SAFETY: non-null, `n` initialised elements, never freed.
        let factors = unsafe { std::slice::from_raw_parts(ptr, n as usize) };
        factors
            .iter()
            .filter(|f| f.num > 0 && f.denom > 0)
            .map(|f| Scale {
                num: f.num as u32,
                den: f.denom as u32,
            })
            .collect()
    })
}

/// Whether `tjDecompress2`, asked for `scale`'s output size, picks `scale` itself: it takes the
/// largest factor whose output fits, so a larger factor with the same output size on a tiny
/// image would win and the reduction would be misreported.
fn unambiguous(scale: Scale, width: u32, height: u32) -> bool {
    library_scales().iter().all(|&s| {
        s.value() <= scale.value()
            || s.apply(width) != scale.apply(width)
            || s.apply(height) != scale.apply(height)
    })
}

/// Which image axes (x, y of the upright picture) the orientation mirrors.
fn reversed_axes(orientation: Orientation) -> [bool; 2] {
    match orientation {
        Orientation::NoTransforms | Orientation::Rotate90FlipH => [false, false],
        Orientation::FlipHorizontal | Orientation::Rotate90 => [true, false],
        Orientation::FlipVertical | Orientation::Rotate270 => [false, true],
        Orientation::Rotate180 | Orientation::Rotate270FlipH => [true, true],
    }
}

fn swaps_axes(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

fn decode_with(
    handle: TjHandle,
    bytes: &[u8],
    max_pixels: u64,
    min_scale: impl FnOnce(u32, u32) -> f64,
) -> Result<Option<(Frame, Reduction)>, DecodeError> {
    let (mut w, mut h, mut subsamp, mut colorspace) = (0, 0, 0, 0);
    // SAFETY: `bytes` is a live slice of the given length; the out-pointers are valid.
    let rc = unsafe {
        tjDecompressHeader3(
            handle,
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            &mut w,
            &mut h,
            &mut subsamp,
            &mut colorspace,
        )
    };
    if rc != 0 || w <= 0 || h <= 0 {
        return Ok(None);
    }
    let (width, height) = (w as u32, h as u32);
    super::within_pixel_limit(width, height, max_pixels)?;
    if !matches!(colorspace, TJCS_RGB | TJCS_YCBCR | TJCS_GRAY) {
        return Ok(None); // CMYK / YCCK: the image crate converts them
    }
    let orientation = exif_orientation(bytes);
    let upright = if swaps_axes(orientation) {
        (height, width)
    } else {
        (width, height)
    };
    let mut scale = pick_scale(min_scale(upright.0, upright.1), library_scales());
    if !unambiguous(scale, width, height) {
        scale = Scale::FULL;
    }
    let (sw, sh) = (scale.apply(width), scale.apply(height));
    let len = sw as usize * sh as usize * 3;
    let mut out: Vec<u8> = Vec::with_capacity(len);
    // SAFETY: `out` has capacity for `sh` rows of `3 * sw` bytes, which is exactly what
    // tjDecompress2 writes for TJPF_RGB with pitch 3 * sw when asked for an `sw × sh` output
    // (a factor of the library's own list, so it decodes at exactly that size); `bytes` is live.
    let rc = unsafe {
        tjDecompress2(
            handle,
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            out.as_mut_ptr(),
            sw as c_int,
            sw as c_int * 3,
            sh as c_int,
            TJPF_RGB,
            TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS,
        )
    };
    if rc != 0 {
        tracing::trace!(
            "libjpeg-turbo: {}; trying the image crate",
            last_error(handle)
        );
        return Ok(None);
    }
    // SAFETY: a successful tjDecompress2 wrote all `len` bytes (see above).
    unsafe { out.set_len(len) };
    let frame = match orientation {
        Orientation::NoTransforms => Frame::from_rgb(sw, sh, out),
        orientation => {
            let Some(rgb) = RgbImage::from_raw(sw, sh, out) else {
                return Ok(None);
            };
            let mut img = DynamicImage::ImageRgb8(rgb);
            img.apply_orientation(orientation);
            let rgb = img.into_rgb8();
            let (w, h) = rgb.dimensions();
            Frame::from_rgb(w, h, rgb.into_raw())
        }
    };
    let reduction = Reduction::new(scale, upright, reversed_axes(orientation));
    debug_assert_eq!(reduction.reduced_size(), (frame.width, frame.height));
    Ok(Some((frame, reduction)))
}

fn last_error(handle: TjHandle) -> String {
    // SAFETY: tjGetErrorStr2 returns a NUL-terminated string owned by the handle (or a static).
    let s = unsafe { tjGetErrorStr2(handle) };
    if s.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, NUL-terminated, valid until the next call on this handle.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// The EXIF orientation of a JPEG: the TIFF block of the first `APP1 "Exif\0\0"` segment
/// before the image data, read by the image crate's parser. A missing or malformed block
/// means no transform, as on the general path.
fn exif_orientation(bytes: &[u8]) -> Orientation {
    exif_block(bytes)
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms)
}

/// Walks the marker segments after SOI up to the first scan and returns the EXIF payload.
fn exif_block(bytes: &[u8]) -> Option<&[u8]> {
    let mut i = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        if bytes.get(i) != Some(&0xFF) {
            return None;
        }
        let marker = *bytes.get(i + 1)?;
        if marker == 0xDA || marker == 0xD9 {
            return None; // start of scan / end of image: no EXIF before the data
        }
        let len = u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]) as usize;
        if len < 2 {
            return None;
        }
        let segment = bytes.get(i + 4..i + 2 + len)?;
        if marker == 0xE1 {
            if let Some(tiff) = segment.strip_prefix(b"Exif\0\0") {
                return Some(tiff);
            }
        }
        i += 2 + len;
    }
}
