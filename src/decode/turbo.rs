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
        decode_with(handle, bytes, max_pixels)
    })
}

fn decode_with(
    handle: TjHandle,
    bytes: &[u8],
    max_pixels: u64,
) -> Result<Option<Frame>, DecodeError> {
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
    let pixels = super::within_pixel_limit(width, height, max_pixels)?;
    if !matches!(colorspace, TJCS_RGB | TJCS_YCBCR | TJCS_GRAY) {
        return Ok(None); // CMYK / YCCK: the image crate converts them
    }
    let len = pixels as usize * 3;
    let mut out: Vec<u8> = Vec::with_capacity(len);
    // SAFETY: `out` has capacity for `height` rows of `3 * width` bytes, which is exactly what
    // tjDecompress2 writes for TJPF_RGB with pitch 3 * width; `bytes` is live.
    let rc = unsafe {
        tjDecompress2(
            handle,
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            out.as_mut_ptr(),
            w,
            w * 3,
            h,
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
    let frame = match exif_orientation(bytes) {
        Orientation::NoTransforms => Frame::from_rgb(width, height, out),
        orientation => {
            let Some(rgb) = RgbImage::from_raw(width, height, out) else {
                return Ok(None);
            };
            let mut img = DynamicImage::ImageRgb8(rgb);
            img.apply_orientation(orientation);
            let rgb = img.into_rgb8();
            let (w, h) = rgb.dimensions();
            Frame::from_rgb(w, h, rgb.into_raw())
        }
    };
    Ok(Some(frame))
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
