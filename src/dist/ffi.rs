//! The C API of `cpp/c10d.cpp` (compiled and linked by build.rs). Only `dist::group` calls it.

use std::os::raw::{c_char, c_int, c_void};

extern "C" {
    #[allow(clippy::too_many_arguments)]
    pub fn ds_c10d_new(
        name: *const c_char,
        master_addr: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        use_agent_store: c_int,
        backend: c_int,
        local_device: c_int,
        timeout_ms: i64,
        err: *mut *mut c_char,
    ) -> *mut c_void;
    pub fn ds_c10d_free(group: *mut c_void);
    pub fn ds_c10d_free_str(s: *mut c_char);
    pub fn ds_c10d_built_with_nccl() -> c_int;
    pub fn ds_c10d_all_reduce(
        group: *mut c_void,
        tensor: *mut c_void,
        op: c_int,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn ds_c10d_broadcast(
        group: *mut c_void,
        tensor: *mut c_void,
        root: c_int,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn ds_c10d_all_gather(
        group: *mut c_void,
        out: *mut c_void,
        input: *mut c_void,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn ds_c10d_all_gather_autograd(
        group: *mut c_void,
        input: *mut c_void,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub fn ds_c10d_barrier(group: *mut c_void, timeout_ms: i64) -> *mut c_char;
    pub fn ds_c10d_store_set(
        group: *mut c_void,
        key: *const c_char,
        value: *const u8,
        len: usize,
    ) -> *mut c_char;
    pub fn ds_c10d_store_get(
        group: *mut c_void,
        key: *const c_char,
        timeout_ms: i64,
        buf: *mut u8,
        cap: usize,
        out_len: *mut usize,
    ) -> *mut c_char;
}
