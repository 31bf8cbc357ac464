//! JPEG records through the system libjpeg-turbo (TurboJPEG 2.x `tjCompress2`), linked by
//! build.rs like the decoder in `decode::turbo`: the same library writes and reads them.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uchar, c_ulong, c_void, CStr};

use crate::frame::Frame;

type TjHandle = *mut c_void;

extern "C" {
    fn tjInitCompress() -> TjHandle;
    #[allow(clippy::too_many_arguments)]
    fn tjCompress2(
        handle: TjHandle,
        src_buf: *const c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        jpeg_buf: *mut *mut c_uchar,
        jpeg_size: *mut c_ulong,
        jpeg_subsamp: c_int,
        jpeg_qual: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjFree(buffer: *mut c_uchar);
    fn tjDestroy(handle: TjHandle) -> c_int;
    fn tjGetErrorStr2(handle: TjHandle) -> *mut c_char;
}

const TJPF_RGB: c_int = 0;
/// 4:2:0 chroma subsampling, what PIL and most cameras write.
const TJSAMP_420: c_int = 2;

/// One compressor per build worker thread (a handle must not be shared between threads).
struct Compressor(TjHandle);

impl Drop for Compressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitCompress and is destroyed exactly once.
        unsafe { tjDestroy(self.0) };
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
}

/// Compresses packed RGB8 to a JPEG at `quality` (1..=100).
pub fn compress(frame: &Frame, quality: u8) -> Result<Vec<u8>, String> {
    let (w, h) = (frame.width as c_int, frame.height as c_int);
    let data = frame.data();
    if frame.width == 0 || frame.height == 0 || data.len() != w as usize * h as usize * 3 {
        return Err(format!(
            "cannot encode a {}x{} frame of {} bytes",
            frame.width,
            frame.height,
            data.len()
        ));
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // SAFETY: plain constructor; a null handle is checked below.
            let handle = unsafe { tjInitCompress() };
            if handle.is_null() {
                return Err("libjpeg-turbo: tjInitCompress failed".to_string());
            }
            *slot = Some(Compressor(handle));
        }
        let handle = slot.as_ref().expect("set above").0;
        let mut buf: *mut c_uchar = std::ptr::null_mut();
        let mut size: c_ulong = 0;
        // SAFETY: `data` holds w × h × 3 bytes (checked above) with a pitch of w × 3; the
        // library allocates `buf` (no TJFLAG_NOREALLOC), which is freed with tjFree below.
        let rc = unsafe {
            tjCompress2(
                handle,
                data.as_ptr(),
                w,
                w * 3,
                h,
                TJPF_RGB,
                &mut buf,
                &mut size,
                TJSAMP_420,
                quality.clamp(1, 100) as c_int,
                0,
            )
        };
        let result = if rc != 0 || buf.is_null() {
            // SAFETY: the handle is valid; the string is the library's own, copied at once.
            let msg = unsafe { CStr::from_ptr(tjGetErrorStr2(handle)) };
            Err(format!("libjpeg-turbo: {}", msg.to_string_lossy()))
        } else {
            // SAFETY: on success `buf` holds `size` bytes of JPEG.
            Ok(unsafe { std::slice::from_raw_parts(buf, size as usize) }.to_vec())
        };
        if !buf.is_null() {
            // SAFETY: allocated by tjCompress2, freed once.
            unsafe { tjFree(buf) };
        }
        result
    })
}
