//! The safe handle over `cpp/c10d.cpp`: one libtorch c10d process group (TCPStore rendezvous,
//! ProcessGroupGloo for CPU tensors, ProcessGroupNCCL for CUDA tensors when built with it).

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::time::Duration;

use tch::Tensor;

use super::ffi;

/// How `all_reduce` combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Avg,
}

/// A c10d process group. Collectives block until done or the timeout.
pub struct Group {
    ptr: *mut c_void,
}

// c10d backends and TCPStore serialise their own calls (they are used from many Python threads
// in PyTorch); the handle is an owned pointer freed once.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

/// Takes a message returned by the shim (NULL = success).
fn check(msg: *mut c_char) -> Result<(), String> {
    if msg.is_null() {
        return Ok(());
    }
    // c10's messages may start with a newline; the first line is what errors show.
    let text = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .trim_start()
        .to_owned();
    unsafe { ffi::ds_c10d_free_str(msg) };
    Err(text)
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn tensor_ptr(t: &Tensor) -> *mut c_void {
    t.as_ptr() as *mut c_void
}

/// Whether the shim was compiled with ProcessGroupNCCL (build.rs found the CUDA headers).
pub fn built_with_nccl() -> bool {
    unsafe { ffi::ds_c10d_built_with_nccl() != 0 }
}

impl Group {
    /// Joins the group: blocks until all `world` ranks have reached the store (or `timeout`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        master_addr: &str,
        port: u16,
        rank: usize,
        world: usize,
        agent_store: bool,
        cuda_device: Option<usize>,
        timeout: Duration,
    ) -> Result<Group, String> {
        let addr = CString::new(master_addr).map_err(|_| "MASTER_ADDR contains a NUL byte")?;
        // The name under which libtorch's group registry finds it: unique in the process,
        // since tests run several ranks as threads of one process.
        static GROUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = GROUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = CString::new(format!("dino_stream.{rank}.{n}")).expect("no NUL byte");
        let mut err: *mut c_char = std::ptr::null_mut();
        let ptr = unsafe {
            ffi::ds_c10d_new(
                name.as_ptr(),
                addr.as_ptr(),
                port as i32,
                rank as i32,
                world as i32,
                agent_store as i32,
                cuda_device.is_some() as i32,
                cuda_device.unwrap_or(0) as i32,
                ms(timeout),
                &mut err,
            )
        };
        check(err)?;
        if ptr.is_null() {
            return Err("c10d returned no process group".into());
        }
        Ok(Group { ptr })
    }

    /// In place: every rank's `t` becomes the sum (or mean) over ranks.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp, timeout: Duration) -> Result<(), String> {
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
        };
        check(unsafe { ffi::ds_c10d_all_reduce(self.ptr, tensor_ptr(t), op, ms(timeout)) })
    }

    /// In place: every rank's `t` becomes `root`'s.
    pub fn broadcast(&self, t: &Tensor, root: usize, timeout: Duration) -> Result<(), String> {
        check(unsafe { ffi::ds_c10d_broadcast(self.ptr, tensor_ptr(t), root as i32, ms(timeout)) })
    }

    /// `out[r]` receives rank r's `input`; `out` is `[world, ...input.shape]`.
    pub fn all_gather(
        &self,
        out: &Tensor,
        input: &Tensor,
        timeout: Duration,
    ) -> Result<(), String> {
        check(unsafe {
            ffi::ds_c10d_all_gather(self.ptr, tensor_ptr(out), tensor_ptr(input), ms(timeout))
        })
    }

    /// Rank r's `input` at rows `[r·n, (r+1)·n)` of a new tensor, differentiably: the backward
    /// pass gives each rank the sum over ranks of the gradients of its rows (libtorch's
    /// `_c10d_functional_autograd::all_gather_into_tensor`). Bounded by the group's timeout.
    pub fn all_gather_autograd(&self, input: &Tensor) -> Result<Tensor, String> {
        let mut out: *mut c_void = std::ptr::null_mut();
        check(unsafe { ffi::ds_c10d_all_gather_autograd(self.ptr, tensor_ptr(input), &mut out) })?;
        if out.is_null() {
            return Err("c10d returned no tensor".into());
        }
        // SAFETY: the shim hands over a heap-allocated at::Tensor, as tch's own C API does.
        Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
    }

    pub fn barrier(&self, timeout: Duration) -> Result<(), String> {
        check(unsafe { ffi::ds_c10d_barrier(self.ptr, ms(timeout)) })
    }

    /// Sets a key in the rendezvous store.
    pub fn store_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let key = CString::new(key).map_err(|_| "store key contains a NUL byte")?;
        check(unsafe {
            ffi::ds_c10d_store_set(self.ptr, key.as_ptr(), value.as_ptr(), value.len())
        })
    }

    /// Reads a key, waiting at most `timeout` for it to exist.
    pub fn store_get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, String> {
        let key = CString::new(key).map_err(|_| "store key contains a NUL byte")?;
        let mut buf = vec![0u8; 64];
        let mut len = 0usize;
        check(unsafe {
            ffi::ds_c10d_store_get(
                self.ptr,
                key.as_ptr(),
                ms(timeout),
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        })?;
        if len > buf.len() {
            return Err(format!("store value of {key:?} is {len} bytes, over 64"));
        }
        buf.truncate(len);
        Ok(buf)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        unsafe { ffi::ds_c10d_free(self.ptr) }
    }
}
