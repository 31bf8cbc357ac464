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

/// `auto` is bf16 autocast on CUDA and fp32 elsewhere; reduced precision is CUDA-only (CPU
/// autocast is slow and changes results, so the CPU always trains in fp32).
pub fn resolve(choice: Precision, device: Device) -> Mode {
    match (choice, device) {
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

/// Runs `f` under CUDA autocast in `mode` (no-op for fp32 or off CUDA).
pub fn autocast<T>(mode: Mode, device: Device, f: impl FnOnce() -> T) -> T {
    match (mode, device) {
        (Mode::Fp32, _) | (_, Device::Cpu) => f(),
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
        assert_eq!(resolve(Precision::Auto, Device::Cuda(0)), Mode::Bf16);
        assert_eq!(resolve(Precision::Fp16, Device::Cuda(0)), Mode::Fp16);
    }

    #[test]
    fn autocast_dtype_binding_links_and_reads() {
        // CPU autocast defaults to bfloat16 in libtorch.
        assert_eq!(cpu_autocast_dtype_code(), 15);
    }
}
