//! Checks that need the world, not just the file: every source the run will read opens, the
//! device exists, and the precision can run on it. `validate` runs them, and `run` runs them
//! before step 1, so a run never trains for hours and then fails on its evaluation paths.

use tch::Device;

use crate::config::{ConfigError, PipelineConfig, Problems};
use crate::source::OpenedSource;
use crate::train::config::{DeviceChoice, Precision, TrainConfig};

/// The libtorch device for `train.device` and `train.precision`, or the problems with them:
/// `cuda` without a GPU, and reduced precision the CPU cannot run: fp16 (no fp16 matrix units
/// there), and bf16 on a CPU without AVX512-BF16 or AMX (`amp::cpu_bf16_units`).
pub fn device(train: &TrainConfig) -> Result<Device, Problems> {
    let mut problems = Problems::new();
    let device = match train.device {
        DeviceChoice::Cpu => Device::Cpu,
        DeviceChoice::Auto => Device::cuda_if_available(),
        DeviceChoice::Cuda => {
            if !tch::Cuda::is_available() {
                problems.push(
                    "train.device",
                    "\"cuda\", but libtorch finds no CUDA GPU on this machine (check `nvidia-smi`; \
                     use \"auto\" to fall back to the CPU, or \"cpu\")",
                );
            }
            Device::Cuda(0)
        }
    };
    if device == Device::Cpu {
        match train.precision {
            Precision::Fp16 => problems.push(
                "train.precision",
                "\"fp16\" needs a CUDA device, and this run is on the CPU, which has no fp16 \
                 matrix units: set train.precision = \"fp32\" (or \"auto\": bf16 on CUDA, fp32 on \
                 the CPU)",
            ),
            Precision::Bf16 if !crate::train::amp::cpu_bf16_units() => problems.push(
                "train.precision",
                "\"bf16\" on the CPU needs bf16 matrix instructions (AVX512-BF16 or AMX), which \
                 this CPU lacks: set train.precision = \"fp32\" (or \"auto\": bf16 on CUDA, fp32 \
                 on the CPU)",
            ),
            Precision::Bf16 | Precision::Auto | Precision::Fp32 => {}
        }
    }
    if problems.is_empty() {
        Ok(device)
    } else {
        Err(problems)
    }
}

/// Opens every source the command will read: `[source]` (unless the caller already has it
/// open) and, when the evaluation is on, `[eval.knn.train]` and `[eval.knn.test]`; checks the
/// device; and checks that the source holds at least one batch.
pub fn check(
    cfg: &PipelineConfig,
    opened: Option<&OpenedSource>,
    check_device: bool,
) -> Result<(), ConfigError> {
    let mut problems = Problems::new();
    let mut main = None;
    if opened.is_none() {
        match cfg.source.open() {
            Ok(s) => main = Some(s),
            Err(e) => problems.push(format!("source.{}", cfg.source.path_key()), e.to_string()),
        }
    }
    if let Some(source) = opened.or(main.as_ref()) {
        if let Err(e) = crate::run::plan_for(cfg, source) {
            problems.push("train.batch_size", e.to_string());
        }
    }
    if let Some(knn) = cfg.eval.knn.as_ref().filter(|k| k.enabled) {
        for (key, src) in [("eval.knn.train", &knn.train), ("eval.knn.test", &knn.test)] {
            if let Err(e) = src.open() {
                problems.push(
                    format!("{key}.{}", src.path_key()),
                    format!(
                        "{e} (the k-NN evaluation after training reads it; switch the evaluation \
                         off with `run --no-eval` or eval.knn.enabled = false)"
                    ),
                );
            }
        }
    }
    if check_device {
        if let Err(p) = device(&cfg.train) {
            problems.extend(p);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems.to_string()))
    }
}
