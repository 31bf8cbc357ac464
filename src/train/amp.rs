//! Mixed precision: autocast with an explicit dtype, and fp16 dynamic loss scaling.

use tch::{Device, Kind, Tensor};

use super::config::Precision;

/// What the step runs in, resolved from `train.precision` and the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fp32,
    Bf16,
    /// fp16 autocast with a [`LossScaler`].
    Fp16,
}

/// `auto` is bf16 autocast on CUDA and fp32 on the CPU. An explicit `bf16` on the CPU is
/// libtorch's CPU autocast (bf16 matmuls and convolutions through oneDNN), which only pays where
/// the CPU has bf16 matrix instructions (AVX512-BF16 or AMX): elsewhere `Engine::new` refuses it
/// (`cpu_bf16_units`). fp16 on the CPU stays fp32 (no fp16 matrix units there).
pub fn resolve(choice: Precision, device: Device) -> Mode {
    match (choice, device) {
        (Precision::Bf16, Device::Cpu) => Mode::Bf16,
        (_, Device::Cpu) | (Precision::Fp32, _) => Mode::Fp32,
        (Precision::Auto | Precision::Bf16, _) => Mode::Bf16,
        (Precision::Fp16, _) => Mode::Fp16,
    }
}

mod ffi {
    // `at::autocast::set_autocast_dtype(c10::DeviceType, c10::ScalarType)` and its getter from
    // libtorch_cpu; tch only exposes the on/off switch, whose dtype defaults to fp16 on CUDA.
    // Both enums are `int8_t`-backed, so the C calling convention is the same.
    extern "C" {
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device_type: i8, dtype: i8);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device_type: i8) -> i8;
        // tch's switch only drives CUDA autocast; the CPU one is per device type.
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub fn set_autocast_enabled(device_type: i8, enabled: bool);
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub fn is_autocast_enabled(device_type: i8) -> bool;
        #[link_name = "_ZN2at8autocast17increment_nestingEv"]
        pub fn increment_nesting() -> i32;
        #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
        pub fn decrement_nesting() -> i32;
        #[link_name = "_ZN2at8autocast11clear_cacheEv"]
        pub fn clear_cache();
    }
    pub const CPU: i8 = 0;
    pub const CUDA: i8 = 1;
    pub const HALF: i8 = 5;
    pub const BFLOAT16: i8 = 15;
}

/// Sets the dtype that autocast uses on CUDA.
pub fn set_cuda_autocast_dtype(kind: Kind) {
    let code = if kind == Kind::BFloat16 {
        ffi::BFLOAT16
    } else {
        ffi::HALF
    };
    unsafe { ffi::set_autocast_dtype(ffi::CUDA, code) }
}

/// The CPU autocast dtype (only used to test the binding).
pub fn cpu_autocast_dtype_code() -> i8 {
    unsafe { ffi::get_autocast_dtype(ffi::CPU) }
}

/// Whether this CPU has bf16 matrix instructions (Linux: `avx512_bf16` or `amx_bf16` in
/// /proc/cpuinfo), the condition for `train.precision = "bf16"` on the CPU.
pub fn cpu_bf16_units() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("flags"))
            .take(1)
            .any(|l| {
                l.split_whitespace()
                    .any(|f| f == "avx512_bf16" || f == "amx_bf16")
            })
    })
}

/// `torch.autocast("cpu", dtype=torch.bfloat16)`: the same nesting and cast-cache handling as
/// tch's CUDA `autocast`, for the CPU device type.
fn cpu_autocast<T>(f: impl FnOnce() -> T) -> T {
    unsafe {
        let prev = ffi::is_autocast_enabled(ffi::CPU);
        ffi::set_autocast_dtype(ffi::CPU, ffi::BFLOAT16);
        ffi::set_autocast_enabled(ffi::CPU, true);
        ffi::increment_nesting();
        let out = f();
        if ffi::decrement_nesting() == 0 {
            ffi::clear_cache();
        }
        ffi::set_autocast_enabled(ffi::CPU, prev);
        out
    }
}

/// Runs `f` under autocast in `mode` (no-op for fp32; bf16 only on the CPU).
pub fn autocast<T>(mode: Mode, device: Device, f: impl FnOnce() -> T) -> T {
    match (mode, device) {
        (Mode::Fp32, _) => f(),
        (Mode::Bf16, Device::Cpu) => cpu_autocast(f),
        (_, Device::Cpu) => f(),
        (m, _) => {
            set_cuda_autocast_dtype(if m == Mode::Bf16 {
                Kind::BFloat16
            } else {
                Kind::Half
            });
            tch::autocast(true, f)
        }
    }
}

/// `torch.cuda.amp.GradScaler` with its defaults: start at 2¹⁶, halve on overflow, double after
/// 2000 clean steps. Kept on the host (one sync per step to read the overflow flag).
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    pub scale: f64,
    pub growth_tracker: u64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            growth_tracker: 0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// Multiplies gradients by 1/scale in place; returns whether any is non-finite.
    pub fn unscale(&self, grads: &[Tensor]) -> bool {
        // GradScaler: inv_scale = scale.double().reciprocal().float()
        let inv = (1.0 / self.scale) as f32 as f64;
        tch::no_grad(|| {
            let mut bad: Option<Tensor> = None;
            for g in grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(inv);
                let nf = g.isfinite().logical_not().any();
                bad = Some(match bad {
                    Some(b) => b.logical_or(&nf),
                    None => nf,
                });
            }
            bad.map(|b| b.int64_value(&[]) != 0).unwrap_or(false)
        })
    }

    /// `GradScaler.update`: back off on overflow, grow after `growth_interval` clean steps.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
        }
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![
            (
                "amp.scale".into(),
                Tensor::from_slice(&[self.scale]).reshape([]),
            ),
            (
                "amp.growth_tracker".into(),
                Tensor::from_slice(&[self.growth_tracker as i64]).reshape([]),
            ),
        ]
    }

    pub fn load(&mut self, scale: &Tensor, tracker: &Tensor) {
        self.scale = scale.double_value(&[]);
        self.growth_tracker = tracker.int64_value(&[]) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaler_backs_off_and_grows() {
        let mut s = LossScaler {
            growth_interval: 3,
            ..Default::default()
        };
        s.update(true);
        assert_eq!(s.scale, 32768.0);
        for _ in 0..2 {
            s.update(false);
        }
        assert_eq!((s.scale, s.growth_tracker), (32768.0, 2));
        s.update(false);
        assert_eq!((s.scale, s.growth_tracker), (65536.0, 0));
        s.update(false);
        s.update(true);
        assert_eq!((s.scale, s.growth_tracker), (32768.0, 0));
    }

    #[test]
    fn unscale_divides_and_detects_overflow() {
        let s = LossScaler {
            scale: 4.0,
            ..Default::default()
        };
        let g = Tensor::from_slice(&[4.0f32, 8.0]);
        assert!(!s.unscale(&[g.shallow_clone()]));
        assert_eq!(Vec::<f32>::try_from(&g).unwrap(), vec![1.0, 2.0]);
        let bad = Tensor::from_slice(&[f32::INFINITY, 1.0]);
        assert!(s.unscale(&[g, bad]));
    }

    #[test]
    fn precision_resolution() {
        assert_eq!(resolve(Precision::Auto, Device::Cpu), Mode::Fp32);
        assert_eq!(resolve(Precision::Fp16, Device::Cpu), Mode::Fp32);
        assert_eq!(resolve(Precision::Bf16, Device::Cpu), Mode::Bf16);
        assert_eq!(resolve(Precision::Auto, Device::Cuda(0)), Mode::Bf16);
        assert_eq!(resolve(Precision::Fp16, Device::Cuda(0)), Mode::Fp16);
    }

    #[test]
    fn cpu_autocast_runs_matmuls_in_bf16_and_restores_fp32() {
        let a = Tensor::ones([4, 4], (tch::Kind::Float, Device::Cpu));
        let inside = autocast(Mode::Bf16, Device::Cpu, || a.mm(&a));
        assert_eq!(inside.kind(), tch::Kind::BFloat16);
        assert_eq!(a.mm(&a).kind(), tch::Kind::Float, "autocast is off again");
        assert_eq!(
            autocast(Mode::Fp32, Device::Cpu, || a.mm(&a)).kind(),
            tch::Kind::Float
        );
    }

    #[test]
    fn autocast_dtype_binding_links_and_reads() {
        // CPU autocast defaults to bfloat16 in libtorch.
        assert_eq!(cpu_autocast_dtype_code(), 15);
    }
}
