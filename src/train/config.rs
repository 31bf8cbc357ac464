//! `[train]`: the DINO optimisation recipe (paper defaults) and the run plan.

use serde::{Deserialize, Serialize};

use crate::config::Problems;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 autocast on CUDA where supported, fp32 on the CPU.
    Auto,
    Fp32,
    Bf16,
    /// fp16 autocast with dynamic loss scaling (CUDA only).
    Fp16,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adamw,
    Sgd,
    Lars,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TeacherUpdate {
    /// EMA of the student after every step (the paper).
    Ema,
    /// Teacher held fixed through an epoch, then moved to the EMA at its end.
    Epoch,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// `auto` (CUDA when libtorch sees a GPU, else the CPU), `cpu` or `cuda` (an error before anything starts when there is no GPU).
    pub device: DeviceChoice,
    /// `auto` (bf16 autocast on CUDA, fp32 on the CPU), `fp32`, `bf16` or `fp16` (CUDA only: refused on the CPU).
    pub precision: Precision,
    /// Samples per step.
    pub batch_size: usize,
    /// Epochs the schedules span.
    pub epochs: u64,
    /// Steps per epoch for sources of unknown length (video streams); ignored otherwise.
    pub steps_per_epoch: Option<u64>,
    /// Master seed: data order, crops, initialisation and stochastic depth derive from it.
    pub seed: u64,
    /// `adamw` (the paper), `sgd` or `lars`.
    pub optimizer: OptimizerKind,
    /// Learning rate for a batch of 256; the peak is `base_lr * batch_size / 256`.
    pub base_lr: f64,
    /// Learning rate at the end of the cosine schedule.
    pub min_lr: f64,
    /// Epochs of linear learning-rate warm-up from 0 to the peak.
    pub warmup_epochs: f64,
    /// Weight decay at the start of its cosine schedule.
    pub weight_decay: f64,
    /// Weight decay at the end of its cosine schedule.
    pub weight_decay_end: f64,
    /// Per-parameter-tensor gradient norm clip (0 disables).
    pub clip_grad: f64,
    /// Epochs during which the head's last layer gets no update.
    pub freeze_last_layer_epochs: f64,
    /// EMA momentum of the teacher at the start; it rises to 1 on a cosine.
    pub momentum_teacher: f64,
    /// `ema` (after every step, the paper) or `epoch` (held fixed, moved at epoch end).
    pub teacher_update: TeacherUpdate,
    /// Temperature of the student's softmax.
    pub student_temp: f64,
    /// Teacher temperature at the start of its warm-up.
    pub warmup_teacher_temp: f64,
    /// Teacher temperature after the warm-up.
    pub teacher_temp: f64,
    /// Epochs of linear teacher-temperature warm-up.
    pub warmup_teacher_temp_epochs: f64,
    /// Momentum of the centre's EMA over teacher outputs.
    pub center_momentum: f64,
    /// Switch centering off (for collapse experiments).
    pub centering: bool,
    /// Per-channel mean and std used to normalise u8 pixels on the device.
    pub normalize_mean: [f64; 3],
    /// Per-channel std used with `normalize_mean`.
    pub normalize_std: [f64; 3],
    /// Log and export collapse monitors every N steps.
    pub monitor_every: u64,
    /// Log a line every N steps.
    pub log_every: u64,
    /// libtorch intra-op threads on the CPU; 0 leaves libtorch's default.
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            device: DeviceChoice::Auto,
            precision: Precision::Auto,
            batch_size: 64,
            epochs: 100,
            steps_per_epoch: None,
            seed: 0,
            optimizer: OptimizerKind::Adamw,
            base_lr: 5e-4,
            min_lr: 1e-6,
            warmup_epochs: 10.0,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            clip_grad: 3.0,
            freeze_last_layer_epochs: 1.0,
            momentum_teacher: 0.996,
            teacher_update: TeacherUpdate::Ema,
            student_temp: 0.1,
            warmup_teacher_temp: 0.04,
            teacher_temp: 0.07,
            warmup_teacher_temp_epochs: 30.0,
            center_momentum: 0.9,
            centering: true,
            normalize_mean: [0.485, 0.456, 0.406],
            normalize_std: [0.229, 0.224, 0.225],
            monitor_every: 10,
            log_every: 10,
            threads: 0,
        }
    }
}

impl TrainConfig {
    /// Peak learning rate after the linear scaling rule.
    pub fn peak_lr(&self) -> f64 {
        self.base_lr * self.batch_size as f64 / 256.0
    }

    pub fn validate(&self, problems: &mut Problems) {
        problems.check(self.batch_size > 0, "train.batch_size", || {
            format!("must be > 0, got {}", self.batch_size)
        });
        problems.check(self.epochs > 0, "train.epochs", || "must be > 0".into());
        if let Some(s) = self.steps_per_epoch {
            problems.check(s > 0, "train.steps_per_epoch", || "must be > 0".into());
        }
        problems.positive("train.base_lr", self.base_lr);
        problems.in_range("train.min_lr", self.min_lr, 0.0, f64::MAX);
        problems.in_range("train.warmup_epochs", self.warmup_epochs, 0.0, f64::MAX);
        problems.in_range("train.weight_decay", self.weight_decay, 0.0, 10.0);
        problems.in_range("train.weight_decay_end", self.weight_decay_end, 0.0, 10.0);
        problems.in_range("train.clip_grad", self.clip_grad, 0.0, f64::MAX);
        problems.in_range(
            "train.freeze_last_layer_epochs",
            self.freeze_last_layer_epochs,
            0.0,
            f64::MAX,
        );
        problems.in_range("train.momentum_teacher", self.momentum_teacher, 0.0, 1.0);
        problems.positive("train.student_temp", self.student_temp);
        problems.positive("train.teacher_temp", self.teacher_temp);
        problems.positive("train.warmup_teacher_temp", self.warmup_teacher_temp);
        problems.in_range(
            "train.warmup_teacher_temp_epochs",
            self.warmup_teacher_temp_epochs,
            0.0,
            f64::MAX,
        );
        problems.in_range("train.center_momentum", self.center_momentum, 0.0, 1.0);
        for (i, s) in self.normalize_std.iter().enumerate() {
            problems.positive(&format!("train.normalize_std[{i}]"), *s);
        }
        problems.check(self.monitor_every > 0, "train.monitor_every", || {
            "must be > 0".into()
        });
        problems.check(self.log_every > 0, "train.log_every", || {
            "must be > 0".into()
        });
    }
}

/// The run in steps: schedules are precomputed over `steps_per_epoch * epochs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub steps_per_epoch: u64,
    pub epochs: u64,
}

impl Plan {
    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch * self.epochs
    }
}
